//! (query, document) pairs sorted by document, for work that reads each
//! document once per batch: the exact rerank (`rerank.rs`) and the f32
//! rescoring of bf16 shortlists (`filter.rs`).

use lemur_topk::{Hit, TopK};

/// Fewest pairs per task: small enough to spread a single query's
/// 200 candidates over the threads, large enough to amortise a task.
const MIN_PAIRS_PER_TASK: usize = 16;
/// Most pairs per task: bounds the imbalance at the end of a batch.
const MAX_PAIRS_PER_TASK: usize = 1024;
/// Tasks per thread when a batch is large: enough for rayon to balance.
const TASKS_PER_THREAD: usize = 16;

/// Pairs sorted by document: `slots[i]` is the pair's position in the
/// query-major candidate lists, `queries[i]` its query, `docs[i]` its
/// document.
pub(crate) struct PairsByDocument {
    pub(crate) slots: Vec<u32>,
    pub(crate) queries: Vec<u32>,
    pub(crate) docs: Vec<u32>,
}

impl PairsByDocument {
    /// Counting sort of every (query, candidate) pair by document (stable,
    /// so a document's queries stay in query order).
    pub(crate) fn new<C: AsRef<[u32]>>(candidates: &[C], n_docs: usize) -> Self {
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

    /// Pairs per parallel task for this many pairs on the current pool.
    pub(crate) fn task_size(&self) -> usize {
        let threads = rayon::current_num_threads().max(1);
        let n_pairs = self.slots.len();
        if n_pairs <= threads * MIN_PAIRS_PER_TASK {
            // A few pairs (a single query's survivors of a filter): one
            // task per thread, each pair being thousands of FMAs.
            return n_pairs.div_ceil(threads).max(1);
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
