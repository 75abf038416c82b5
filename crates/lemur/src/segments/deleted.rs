//! A segment's tombstones: the positions it has deleted.

/// Deleted positions of one segment, sorted, with a bit per position for
/// constant-time checks on the search path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Deleted {
    positions: Vec<u32>,
    bits: Vec<u64>,
}

impl Deleted {
    /// The deletions `positions` (strictly increasing, each below
    /// `n_docs`) of a segment of `n_docs` documents.
    pub(crate) fn new(positions: Vec<u32>, n_docs: usize) -> Result<Deleted, String> {
        if !positions.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err("positions are not strictly increasing".into());
        }
        if positions
            .last()
            .is_some_and(|&last| last as usize >= n_docs)
        {
            return Err(format!("a position is not below {n_docs}"));
        }
        let mut bits = vec![0u64; n_docs.div_ceil(64)];
        for &position in &positions {
            bits[position as usize / 64] |= 1 << (position % 64);
        }
        Ok(Deleted { positions, bits })
    }

    /// The deleted positions, increasing.
    pub(crate) fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// Deleted positions.
    pub(crate) fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether `position` is deleted.
    pub(crate) fn contains(&self, position: u32) -> bool {
        self.bits
            .get(position as usize / 64)
            .is_some_and(|word| word & (1 << (position % 64)) != 0)
    }

    /// Sets the scores of deleted positions in a `[n_queries, n_docs]`
    /// tile of documents `first..first + n_docs` to minus infinity, so no
    /// top-k collector keeps them while live documents remain.
    pub(crate) fn mask(&self, first: usize, n_docs: usize, tile: &mut [f32]) {
        let start = self.positions.partition_point(|&p| (p as usize) < first);
        let end = self
            .positions
            .partition_point(|&p| (p as usize) < first + n_docs);
        if start == end {
            return;
        }
        for row in tile.chunks_exact_mut(n_docs) {
            for &position in &self.positions[start..end] {
                row[position as usize - first] = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_exactly_the_deleted_positions_of_a_block() {
        let deleted = Deleted::new(vec![1, 64, 70, 200], 201).unwrap();
        assert!(deleted.contains(64) && deleted.contains(200) && !deleted.contains(65));
        assert!(!deleted.contains(5000));
        let mut tile = vec![1.0; 2 * 10];
        deleted.mask(62, 10, &mut tile);
        for row in tile.chunks_exact(10) {
            let masked: Vec<usize> = (0..10).filter(|&i| row[i] == f32::NEG_INFINITY).collect();
            assert_eq!(masked, [2, 8]);
        }
    }

    #[test]
    fn refuses_unsorted_and_out_of_range_positions() {
        assert!(Deleted::new(vec![3, 3], 10).is_err());
        assert!(Deleted::new(vec![4, 2], 10).is_err());
        assert!(Deleted::new(vec![10], 10).is_err());
    }
}
