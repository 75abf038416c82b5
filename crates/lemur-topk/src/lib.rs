//! Select the `k` best of `n` scored ids.
//!
//! LEMUR ranks twice per query: once to pick the `k'` candidates from the
//! approximate scores of every document, once to keep the `k` best after the
//! exact rerank. Both are "top-k of many", so this crate does exactly that and
//! nothing else:
//!
//! - [`TopK`] is a streaming collector in the style of tantivy's: it keeps a
//!   buffer of at most `2k` entries; when the buffer fills it moves the `k`
//!   best to the front in linear time (`select_nth_unstable_by`), drops the
//!   rest and remembers the `k`-th best as a threshold that rejects most later
//!   entries with one comparison. Expected time is `O(n + k log k)`, with no
//!   full sort.
//! - [`top_k`] and [`top_k_rows`] are the one-shot and batched (`[B, m]`
//!   score matrix) forms.
//!
//! # Order
//!
//! Results are ordered by score, highest first; equal scores go to the lower
//! id first (so results never depend on the order entries arrive in). `-0.0`
//! and `+0.0` are equal. **NaN** scores are ordered after every number,
//! including negative infinity, and among themselves by id: they never
//! displace a real score, and the result is still deterministic. (The facade
//! rejects non-finite inputs, so a NaN here means an overflow upstream.)
//!
//! `k = 0` returns nothing; `k > n` returns all `n` entries, sorted.
//!
//! # Example
//!
//! ```
//! use lemur_topk::{top_k, Hit};
//!
//! let scores = [0.5, 2.0, -1.0, 2.0, f32::NAN, 1.5];
//! let best = top_k(&scores, 3);
//! assert_eq!(
//!     best,
//!     vec![
//!         Hit { id: 1, score: 2.0 },
//!         Hit { id: 3, score: 2.0 },
//!         Hit { id: 5, score: 1.5 },
//!     ]
//! );
//! ```

use std::cmp::Ordering;

/// One scored entry: an id (a document index) and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The entry's id, usually a document index.
    pub id: u32,
    /// The entry's score; higher is better.
    pub score: f32,
}

/// The ranking order: `Less` means `a` ranks before (is better than) `b`.
///
/// Score descending, NaN last, ties to the lower id. This is a total order,
/// so sorting with it is deterministic.
#[inline]
pub fn rank_order(a: &Hit, b: &Hit) -> Ordering {
    match (a.score.is_nan(), b.score.is_nan()) {
        (false, false) => b
            .score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then(a.id.cmp(&b.id)),
        (true, true) => a.id.cmp(&b.id),
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
    }
}

/// Whether `candidate` ranks strictly before `threshold`.
///
/// The hot path of [`TopK::push`]: NaN candidates are never better than a
/// threshold (a NaN threshold only arises when fewer than `k` numbers exist,
/// and then NaN candidates with a lower id are).
#[inline(always)]
fn beats(candidate: &Hit, threshold: &Hit) -> bool {
    if candidate.score > threshold.score {
        return true;
    }
    if candidate.score == threshold.score {
        return candidate.id < threshold.id;
    }
    // Only reachable with a NaN on one side (or candidate < threshold).
    rank_order(candidate, threshold) == Ordering::Less
}

/// A streaming top-`k` collector.
///
/// Push entries in any order, then take the `k` best with
/// [`TopK::into_sorted_vec`] or [`TopK::drain_sorted`]. The collector can be
/// reused with [`TopK::reset`] without reallocating, which is how the query
/// path keeps one per worker thread.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    buffer: Vec<Hit>,
    /// The `k`-th best entry seen so far, once at least `k` have been seen
    /// and the buffer has been truncated at least once.
    threshold: Option<Hit>,
}

impl TopK {
    /// A collector that keeps the `k` best entries.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            buffer: Vec::with_capacity(k.saturating_mul(2).min(1 << 20)),
            threshold: None,
        }
    }

    /// How many entries this collector keeps.
    pub fn k(&self) -> usize {
        self.k
    }

    /// A lower bound on the score of the `k`-th best entry, from the last
    /// time the buffer was cut back to `k` (`None` before that): no
    /// collector this one is merged into ends with a worse `k`-th best.
    /// Callers that keep entries near the cut (within a margin of it) use
    /// it to drop what can never come within that margin.
    pub fn threshold(&self) -> Option<f32> {
        self.threshold.map(|hit| hit.score)
    }

    /// Forget every entry and keep `k` from now on; the buffer's memory is kept.
    pub fn reset(&mut self, k: usize) {
        self.k = k;
        self.buffer.clear();
        self.threshold = None;
    }

    /// Offer one entry.
    #[inline]
    pub fn push(&mut self, id: u32, score: f32) {
        if self.k == 0 {
            return;
        }
        let hit = Hit { id, score };
        if let Some(threshold) = &self.threshold
            && !beats(&hit, threshold)
        {
            return;
        }
        self.buffer.push(hit);
        if self.buffer.len() >= self.k.saturating_mul(2) {
            self.truncate();
        }
    }

    /// Offer `scores[i]` with id `first_id + i` for every `i`.
    ///
    /// # Panics
    ///
    /// If an id would not fit in `u32`.
    #[track_caller]
    pub fn extend_from_scores(&mut self, first_id: u32, scores: &[f32]) {
        assert!(
            first_id as u64 + scores.len() as u64 <= u32::MAX as u64 + 1,
            "ids overflow u32"
        );
        for (offset, &score) in scores.iter().enumerate() {
            self.push(first_id + offset as u32, score);
        }
    }

    /// Offer every entry another collector holds (for merging per-thread or
    /// per-block collectors).
    pub fn merge(&mut self, other: &TopK) {
        for hit in &other.buffer {
            self.push(hit.id, hit.score);
        }
    }

    /// Keep the `k` best in the buffer, in linear expected time, and raise
    /// the threshold to the `k`-th best.
    fn truncate(&mut self) {
        let k = self.k;
        if k == 0 {
            self.buffer.clear();
            return;
        }
        if self.buffer.len() > k {
            self.buffer.select_nth_unstable_by(k - 1, rank_order);
            self.buffer.truncate(k);
        }
        if self.buffer.len() == k {
            // After selection the k-th best sits at index k - 1, but a
            // buffer shorter than 2k may not have been selected yet: take the
            // maximum under the ranking order (the worst kept entry).
            let worst = self
                .buffer
                .iter()
                .copied()
                .max_by(rank_order)
                .expect("k >= 1 entries");
            self.threshold = Some(worst);
        }
    }

    /// The `k` best entries, best first, leaving the collector empty (and
    /// reusable with the same `k`).
    pub fn drain_sorted(&mut self) -> Vec<Hit> {
        self.truncate();
        self.buffer.sort_unstable_by(rank_order);
        self.threshold = None;
        std::mem::take(&mut self.buffer)
    }

    /// The `k` best entries, best first.
    pub fn into_sorted_vec(mut self) -> Vec<Hit> {
        self.drain_sorted()
    }
}

/// The `k` best of `scores` (ids are positions), best first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<Hit> {
    let mut collector = TopK::new(k.min(scores.len()));
    collector.extend_from_scores(0, scores);
    collector.into_sorted_vec()
}

/// The `k` best of every row of a row-major `[rows, n_cols]` score matrix.
///
/// # Panics
///
/// If `scores.len()` is not a multiple of `n_cols` (with `n_cols = 0`, only
/// an empty matrix is accepted).
#[track_caller]
pub fn top_k_rows(scores: &[f32], n_cols: usize, k: usize) -> Vec<Vec<Hit>> {
    if n_cols == 0 {
        assert!(scores.is_empty(), "n_cols = 0 with a non-empty matrix");
        return Vec::new();
    }
    assert_eq!(scores.len() % n_cols, 0, "scores is not [rows, n_cols]");
    let mut collector = TopK::new(k.min(n_cols));
    scores
        .chunks_exact(n_cols)
        .map(|row| {
            collector.extend_from_scores(0, row);
            collector.drain_sorted()
        })
        .collect()
}

#[cfg(test)]
mod tests;
