//! (query, document) pairs sorted by document, for work that reads each
//! document once per batch: the exact rerank (`rerank.rs`) and the f32
//! rescoring of the `W` filters' shortlists (`shortlist.rs`).

use std::ops::Range;

use lemur_topk::{Hit, TopK};
use rayon::prelude::*;

/// Fewest pairs per task once there are more than this many per thread:
/// small enough to spread a single query's 200 candidates over the
/// threads, large enough to amortise a task. Fewer pairs than that are
/// shared out by their cost ([`PairCost`]).
const MIN_PAIRS_PER_TASK: usize = 16;
/// Most pairs per task: bounds the imbalance at the end of a batch.
const MAX_PAIRS_PER_TASK: usize = 1024;
/// Tasks per thread when a batch is large: enough for rayon to balance.
const TASKS_PER_THREAD: usize = 16;
/// Documents per pair below which the pairs are sorted themselves rather
/// than counted into a table over every document.
const SPARSE_DOCS_PER_PAIR: usize = 16;

/// How much work scoring one pair is.
#[derive(Clone, Copy)]
pub(crate) enum PairCost {
    /// MaxSim of a query against a document: hundreds of thousands of FMAs.
    MaxSim,
    /// A dot product of features with a `W` row: a few thousand.
    Row,
}

/// Pairs sorted by document: `slots[i]` is the pair's position in the
/// query-major candidate lists, `queries[i]` its query, `docs[i]` its
/// document.
pub(crate) struct PairsByDocument {
    pub(crate) slots: Vec<u32>,
    pub(crate) queries: Vec<u32>,
    pub(crate) docs: Vec<u32>,
}

impl PairsByDocument {
    /// Every (query, candidate) pair sorted by document, stably, so a
    /// document's queries stay in query order.
    pub(crate) fn new<C: AsRef<[u32]>>(candidates: &[C], n_docs: usize) -> Self {
        let n_pairs: usize = candidates.iter().map(|list| list.as_ref().len()).sum();
        if n_pairs.saturating_mul(SPARSE_DOCS_PER_PAIR) < n_docs {
            Self::by_sorting(candidates, n_pairs)
        } else {
            Self::by_counting(candidates, n_docs)
        }
    }

    /// Sorts the pairs themselves: for a few pairs in a large corpus (a
    /// single query's lists), where counting over every document would
    /// cost more than the pairs (about 6 us per call at 10,000 documents,
    /// growing with the corpus, and several calls per query).
    fn by_sorting<C: AsRef<[u32]>>(candidates: &[C], n_pairs: usize) -> Self {
        let mut keyed: Vec<(u32, u32, u32)> = Vec::with_capacity(n_pairs);
        let mut slot = 0u32;
        for (q, list) in candidates.iter().enumerate() {
            for &doc in list.as_ref() {
                keyed.push((doc, slot, q as u32));
                slot += 1;
            }
        }
        // Slots are unique, so this order is total: by document, then by
        // position in the lists, as the counting sort leaves them.
        keyed.sort_unstable();
        PairsByDocument {
            slots: keyed.iter().map(|&(_, slot, _)| slot).collect(),
            queries: keyed.iter().map(|&(_, _, q)| q).collect(),
            docs: keyed.iter().map(|&(doc, _, _)| doc).collect(),
        }
    }

    /// Counting sort over the documents: linear in pairs plus documents.
    fn by_counting<C: AsRef<[u32]>>(candidates: &[C], n_docs: usize) -> Self {
        let mut starts = vec![0u32; n_docs + 1];
        for &doc in candidates.iter().flat_map(|list| list.as_ref()) {
            starts[doc as usize + 1] += 1;
        }
        for d in 0..n_docs {
            starts[d + 1] += starts[d];
        }
        let n_pairs = starts[n_docs] as usize;
        let mut pairs = PairsByDocument {
            slots: vec![0; n_pairs],
            queries: vec![0; n_pairs],
            docs: vec![0; n_pairs],
        };
        let mut slot = 0u32;
        for (q, list) in candidates.iter().enumerate() {
            for &doc in list.as_ref() {
                let at = &mut starts[doc as usize];
                let i = *at as usize;
                *at += 1;
                pairs.slots[i] = slot;
                pairs.queries[i] = q as u32;
                pairs.docs[i] = doc;
                slot += 1;
            }
        }
        pairs
    }

    /// Scores every pair on the current pool: `score_run(positions, out)`
    /// fills `out` with the scores of the pairs at `positions`, a run of
    /// consecutive pairs (in document order, so a run may look past its
    /// end and prefetch the pairs after it, which another thread may
    /// score). `cost` says how much work a pair is, which decides how a
    /// few pairs are shared out.
    pub(crate) fn score_runs(
        &self,
        cost: PairCost,
        score_run: impl Fn(Range<usize>, &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let task = self.task_size(cost);
        let mut scores = vec![0.0f32; self.docs.len()];
        scores
            .par_chunks_mut(task)
            .enumerate()
            // A few pairs go one job each, so a thread that joins late
            // (woken from sleep, about 15 us after the first on an AMD
            // EPYC Zen 4) takes what is left rather than a fixed half.
            .with_max_len(if task == 1 { 1 } else { usize::MAX })
            .for_each(|(t, out)| {
                let start = t * task;
                score_run(start..start + out.len(), out);
            });
        scores
    }

    /// Pairs per parallel task for this many pairs of this cost on the
    /// current pool.
    fn task_size(&self, cost: PairCost) -> usize {
        let threads = rayon::current_num_threads().max(1);
        let n_pairs = self.slots.len();
        if n_pairs <= threads * MIN_PAIRS_PER_TASK {
            return match cost {
                // A single query's survivors of a filter: one task per
                // pair, so the threads share them out as they come.
                PairCost::MaxSim => 1,
                // A pair is microseconds: one task per thread.
                PairCost::Row => n_pairs.div_ceil(threads).max(1),
            };
        }
        (n_pairs / (threads * TASKS_PER_THREAD)).clamp(MIN_PAIRS_PER_TASK, MAX_PAIRS_PER_TASK)
    }

    /// `scores` given in pair (document) order, put back in the query-major
    /// order of the candidate lists.
    pub(crate) fn by_slot(&self, scores: &[f32]) -> Vec<f32> {
        let mut by_slot = vec![0.0f32; scores.len()];
        for (&slot, &score) in self.slots.iter().zip(scores) {
            by_slot[slot as usize] = score;
        }
        by_slot
    }

    /// The best `k` of each candidate list (best first, ties to the lower
    /// id), from `scores` given in pair (document) order.
    pub(crate) fn top_per_list<C: AsRef<[u32]>>(
        &self,
        candidates: &[C],
        scores: &[f32],
        k: usize,
    ) -> Vec<Vec<Hit>> {
        let by_slot = self.by_slot(scores);
        let mut offset = 0;
        candidates
            .iter()
            .map(|list| {
                let list = list.as_ref();
                let mut top = TopK::new(k.min(list.len()));
                for (&doc, &score) in list.iter().zip(&by_slot[offset..offset + list.len()]) {
                    top.push(doc, score);
                }
                offset += list.len();
                top.into_sorted_vec()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Candidate lists of up to 40 ids each over a corpus of `n_docs`.
    fn lists() -> impl Strategy<Value = (Vec<Vec<u32>>, usize)> {
        (1usize..300).prop_flat_map(|n_docs| {
            let list = prop::collection::vec(0..n_docs as u32, 0..40);
            (prop::collection::vec(list, 0..6), Just(n_docs))
        })
    }

    proptest! {
        /// The sort for a few pairs leaves them in the counting sort's
        /// order: by document, then by position in the lists.
        #[test]
        fn sorting_orders_the_pairs_as_counting_does((lists, n_docs) in lists()) {
            let n_pairs = lists.iter().map(Vec::len).sum();
            let sorted = PairsByDocument::by_sorting(&lists, n_pairs);
            let counted = PairsByDocument::by_counting(&lists, n_docs);
            prop_assert_eq!(&sorted.docs, &counted.docs);
            prop_assert_eq!(&sorted.queries, &counted.queries);
            prop_assert_eq!(&sorted.slots, &counted.slots);
            let keys: Vec<(u32, u32)> =
                counted.docs.iter().copied().zip(counted.slots.iter().copied()).collect();
            prop_assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        }

        /// Whatever the pool and the task sizes, each pair's run scores it
        /// exactly once, at its own position.
        #[test]
        fn every_pair_is_scored_once_and_put_back_in_its_slot(
            (lists, n_docs) in lists(),
            threads in 1usize..4,
            maxsim in any::<bool>(),
        ) {
            let pairs = PairsByDocument::new(&lists, n_docs);
            let cost = if maxsim { PairCost::MaxSim } else { PairCost::Row };
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let scores = pool.install(|| {
                pairs.score_runs(cost, |run, out| {
                    assert_eq!(run.len(), out.len());
                    for (i, score) in run.zip(out) {
                        // A score that names the pair's slot, or that
                        // collides if a pair were scored twice.
                        *score += pairs.slots[i] as f32 + 1.0;
                    }
                })
            });
            let expected: Vec<f32> = (0..pairs.slots.len()).map(|slot| slot as f32 + 1.0).collect();
            prop_assert_eq!(pairs.by_slot(&scores), expected);
        }
    }
}
