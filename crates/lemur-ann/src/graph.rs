//! A hierarchical navigable small-world graph (Malkov and Yashunin) for
//! maximum inner product search.
//!
//! Level 0 holds every node with up to `2 M` links in one flat
//! `[n, 2 M]` array (what a search spends its time in, and what a saved
//! graph stores as is); the sparse upper levels (a node reaches level `l`
//! with probability `M^-l`) keep `M` links per node in maps. Similarity is
//! the inner product; neighbours are chosen with the paper's heuristic
//! (a candidate is kept only if it is more similar to the new node than
//! to every neighbour kept before it), which keeps links spread over
//! directions instead of bunched in one.
//!
//! Building is deterministic and parallel: nodes go in batches, each
//! batch's nodes search the graph as it stood before the batch (in
//! parallel, read only), then their links are written in id order and
//! the reverse links of every touched node are re-selected in parallel
//! from sets fixed before that step. So the graph is a function of the
//! rows, the seed and how the rows were split into [`Graph::add`] calls
//! (each call's batches start over), not of the thread count. A batch is at most an
//! eighth of the nodes already in, so a node misses at most a small share
//! of its potential neighbours (the ones inserted beside it).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use lemur_maxsim::prefetch;
use lemur_mlp::simd::dispatch;
use rayon::prelude::*;

use crate::error::AnnError;

/// The empty link slot.
const NONE: u32 = u32::MAX;
/// Highest level a node may reach (the chance of passing it is `M^-16`).
const MAX_LEVEL: usize = 16;
/// Most nodes inserted in one parallel batch.
const MAX_BATCH: usize = 4096;

/// SplitMix64's output function: 64 well-mixed bits of `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How a [`Graph`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphConfig {
    /// Links per node on the upper levels (`M`); level 0 keeps `2 M`.
    pub max_degree: usize,
    /// Candidates a new node gathers per level before its links are chosen.
    pub ef_construction: usize,
    /// Seed of the nodes' levels.
    pub seed: u64,
}

impl Default for GraphConfig {
    /// `M = 16`, `ef_construction = 200`: hnswlib's usual setting, which
    /// on the scale benchmark's 100k-row `W` (256 projected dimensions)
    /// returns 98% of the exact top 200 in the best 800 it lists.
    fn default() -> Self {
        GraphConfig {
            max_degree: 16,
            ef_construction: 200,
            seed: 0,
        }
    }
}

/// A scored node; ordered by score, then by the lower id first, so every
/// heap and sort is deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored {
    score: f32,
    id: u32,
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    /// Greater is better: higher score, then lower id.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.id.cmp(&self.id))
    }
}

/// What a search scores nodes against: f32 values and a lift (0 for a
/// query; a node's own lift when the search starts from a node).
#[derive(Debug, Clone)]
struct Probe {
    values: Vec<f32>,
    lift: f32,
}

/// `<values, codes>` with 16 partial sums, the codes widened to f32 as
/// they are read (vectorised under `dispatch`).
#[inline(always)]
fn dot_codes(values: &[f32], codes: &[i8]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (a, b) = (values.chunks_exact(16), codes.chunks_exact(16));
    let tail: f32 = a
        .remainder()
        .iter()
        .zip(b.remainder())
        .map(|(x, &c)| x * f32::from(c))
        .sum();
    for (x, c) in a.zip(b) {
        for ((lane, x), &c) in lanes.iter_mut().zip(x).zip(c) {
            *lane += x * f32::from(c);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Marks of visited nodes for one search, cleared in O(1) by a new stamp,
/// and the buffer of a node's links not visited before.
#[derive(Debug, Default)]
struct Visited {
    stamp: u32,
    marks: Vec<u32>,
    fresh: Vec<u32>,
}

impl Visited {
    fn start(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.stamp = 1;
        }
    }

    /// Marks `id`; whether it was new.
    #[inline(always)]
    fn insert(&mut self, id: u32) -> bool {
        let slot = &mut self.marks[id as usize];
        let new = *slot != self.stamp;
        *slot = self.stamp;
        new
    }
}

/// A graph over `dim`-wide rows for maximum inner product search.
///
/// Invariants (checked by [`Graph::from_parts`]): every link names a node
/// of the graph other than its own; a node has links on level `l` only if
/// its level is at least `l`; the entry node has the highest level.
#[derive(Debug)]
pub struct Graph {
    dim: usize,
    config: GraphConfig,
    /// The norm every stored row is lifted to (0 before the first add).
    norm_cap: f32,
    /// Rows as int8 codes, `[n, dim]` (see [`Graph::add`]).
    codes: Vec<i8>,
    /// Each row's code scale.
    scales: Vec<f32>,
    /// Each row's lift to `norm_cap`.
    lifts: Vec<f32>,
    levels: Vec<u8>,
    /// `[n, 2 M]` level-0 links, [`NONE`] after the last.
    base: Vec<u32>,
    /// Levels 1.. : node -> its `M`-or-fewer links.
    upper: Vec<HashMap<u32, Vec<u32>>>,
    entry: Option<u32>,
    scratch: Mutex<Vec<Visited>>,
}

impl Clone for Graph {
    fn clone(&self) -> Self {
        Graph {
            dim: self.dim,
            config: self.config,
            norm_cap: self.norm_cap,
            codes: self.codes.clone(),
            scales: self.scales.clone(),
            lifts: self.lifts.clone(),
            levels: self.levels.clone(),
            base: self.base.clone(),
            upper: self.upper.clone(),
            entry: self.entry,
            scratch: Mutex::new(Vec::new()),
        }
    }
}

impl PartialEq for Graph {
    fn eq(&self, other: &Self) -> bool {
        self.dim == other.dim
            && self.config == other.config
            && self.norm_cap.to_bits() == other.norm_cap.to_bits()
            && self.codes == other.codes
            && self.scales == other.scales
            && self.lifts == other.lifts
            && self.levels == other.levels
            && self.base == other.base
            && self.upper == other.upper
            && self.entry == other.entry
    }
}

/// The links of one new node, found while the graph is read only.
struct Planned {
    id: u32,
    /// Chosen links per level, level 0 first.
    links: Vec<Vec<u32>>,
}

impl Graph {
    /// An empty graph over rows of width `dim`.
    pub fn new(dim: usize, config: GraphConfig) -> Result<Graph, AnnError> {
        if dim == 0 {
            return Err(AnnError::Config("rows must be at least 1 wide".into()));
        }
        if config.max_degree < 2 || config.max_degree > 1024 {
            return Err(AnnError::Config(format!(
                "max_degree must be 2 to 1024, not {}",
                config.max_degree
            )));
        }
        if config.ef_construction == 0 {
            return Err(AnnError::Config(
                "ef_construction must be at least 1".into(),
            ));
        }
        Ok(Graph {
            dim,
            config,
            norm_cap: 0.0,
            codes: Vec::new(),
            scales: Vec::new(),
            lifts: Vec::new(),
            levels: Vec::new(),
            base: Vec::new(),
            upper: Vec::new(),
            entry: None,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The build configuration.
    pub fn config(&self) -> GraphConfig {
        self.config
    }

    /// Bytes the graph holds: rows, links and levels.
    pub fn bytes(&self) -> usize {
        let upper: usize = self
            .upper
            .iter()
            .map(|level| level.values().map(|l| 8 + 4 * l.len()).sum::<usize>())
            .sum();
        self.codes.len()
            + 4 * (self.scales.len() + self.lifts.len() + self.base.len())
            + self.levels.len()
            + upper
    }

    fn base_degree(&self) -> usize {
        2 * self.config.max_degree
    }

    fn degree(&self, level: usize) -> usize {
        if level == 0 {
            self.base_degree()
        } else {
            self.config.max_degree
        }
    }

    /// Node `id`'s level: `floor(-ln(u) / ln M)` for a uniform `u` drawn
    /// from `(seed, id)`.
    fn level_of(&self, id: u32) -> usize {
        let u = ((splitmix(self.config.seed ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            >> 11) as f64
            + 0.5)
            / (1u64 << 53) as f64;
        let level = -u.ln() / (self.config.max_degree as f64).ln();
        (level as usize).min(MAX_LEVEL)
    }

    #[inline(always)]
    fn codes_of(&self, id: u32) -> &[i8] {
        &self.codes[id as usize * self.dim..][..self.dim]
    }

    /// Node `id`'s stored row decoded, with its lift: what a search from
    /// that node (while building) scores others against.
    #[inline(always)]
    fn probe_of(&self, id: u32) -> Probe {
        let scale = self.scales[id as usize];
        Probe {
            values: self
                .codes_of(id)
                .iter()
                .map(|&c| f32::from(c) * scale)
                .collect(),
            lift: self.lifts[id as usize],
        }
    }

    /// The lifted inner product of `probe` with node `id`.
    #[inline(always)]
    fn score(&self, probe: &Probe, id: u32) -> f32 {
        let i = id as usize;
        self.scales[i] * dot_codes(&probe.values, self.codes_of(id)) + probe.lift * self.lifts[i]
    }

    #[inline(always)]
    fn links(&self, level: usize, id: u32) -> &[u32] {
        if level == 0 {
            let all = &self.base[id as usize * self.base_degree()..][..self.base_degree()];
            let end = all.iter().position(|&l| l == NONE).unwrap_or(all.len());
            &all[..end]
        } else {
            self.upper[level - 1].get(&id).map_or(&[], Vec::as_slice)
        }
    }

    fn set_links(&mut self, level: usize, id: u32, links: &[u32]) {
        if level == 0 {
            let degree = self.base_degree();
            let slots = &mut self.base[id as usize * degree..][..degree];
            slots.fill(NONE);
            slots[..links.len()].copy_from_slice(links);
        } else {
            self.upper[level - 1].insert(id, links.to_vec());
        }
    }

    fn top_level(&self) -> usize {
        self.entry
            .map_or(0, |e| usize::from(self.levels[e as usize]))
    }

    #[inline(always)]
    fn with_visited<R>(&self, f: impl FnOnce(&mut Visited) -> R) -> R {
        let mut visited = self
            .scratch
            .lock()
            .map(|mut pool| pool.pop())
            .unwrap_or_default()
            .unwrap_or_default();
        visited.start(self.len());
        let result = f(&mut visited);
        if let Ok(mut pool) = self.scratch.lock() {
            pool.push(visited);
        }
        result
    }

    /// Greedy descent from the entry node to level `down_to`: at each level
    /// above it, move to the best-scoring neighbour until none is better.
    #[inline(always)]
    fn descend(&self, query: &Probe, down_to: usize) -> Option<Scored> {
        let entry = self.entry?;
        let mut best = Scored {
            score: self.score(query, entry),
            id: entry,
        };
        for level in (down_to + 1..=self.top_level()).rev() {
            loop {
                let mut moved = false;
                for &next in self.links(level, best.id) {
                    let candidate = Scored {
                        score: self.score(query, next),
                        id: next,
                    };
                    if candidate > best {
                        best = candidate;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        Some(best)
    }

    /// The beam search of one level from `entries`: the `ef` best nodes
    /// reached, best first.
    #[inline(always)]
    fn search_level(
        &self,
        query: &Probe,
        entries: &[Scored],
        ef: usize,
        level: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let mut frontier: BinaryHeap<Scored> = BinaryHeap::new();
        // The kept set as a min-heap (`Reverse`), worst on top.
        let mut kept: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::new();
        for &e in entries {
            if visited.insert(e.id) {
                frontier.push(e);
                kept.push(std::cmp::Reverse(e));
            }
        }
        while kept.len() > ef {
            kept.pop();
        }
        while let Some(current) = frontier.pop() {
            let worst = kept.peek().map(|r| r.0);
            if kept.len() >= ef && worst.is_some_and(|w| current < w) {
                break;
            }
            // The rows of a node's new links are scattered over the whole
            // graph: asking for all of them before scoring the first
            // overlaps their cache misses instead of taking them in turn.
            let mut fresh = std::mem::take(&mut visited.fresh);
            fresh.clear();
            for &next in self.links(level, current.id) {
                if visited.insert(next) {
                    prefetch(self.codes_of(next));
                    fresh.push(next);
                }
            }
            for &next in &fresh {
                let candidate = Scored {
                    score: self.score(query, next),
                    id: next,
                };
                let full = kept.len() >= ef;
                if !full || kept.peek().is_some_and(|w| candidate > w.0) {
                    frontier.push(candidate);
                    kept.push(std::cmp::Reverse(candidate));
                    if kept.len() > ef {
                        kept.pop();
                    }
                }
            }
            visited.fresh = fresh;
        }
        let mut out: Vec<Scored> = kept.into_iter().map(|r| r.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// The heuristic choice of up to `m` links for `base` from `candidates`
    /// (best first by similarity to `base`): a candidate is kept when it
    /// is more similar to `base` than to every link kept so far.
    #[inline(always)]
    fn choose_links(&self, candidates: &[Scored], m: usize) -> Vec<u32> {
        let mut chosen: Vec<u32> = Vec::with_capacity(m);
        for c in candidates {
            if chosen.len() >= m {
                break;
            }
            let row = self.probe_of(c.id);
            if chosen.iter().all(|&s| self.score(&row, s) < c.score) {
                chosen.push(c.id);
            }
        }
        chosen
    }

    /// Plans node `id`'s links against the graph as it stands.
    #[inline(always)]
    fn plan(&self, id: u32, visited: &mut Visited) -> Planned {
        let query = &self.probe_of(id);
        let level = usize::from(self.levels[id as usize]);
        let top = self.top_level();
        let mut links = vec![Vec::new(); level + 1];
        let Some(start) = self.descend(query, level.min(top)) else {
            return Planned { id, links };
        };
        let mut entries = vec![start];
        for l in (0..=level.min(top)).rev() {
            visited.start(self.len());
            let found = self.search_level(query, &entries, self.config.ef_construction, l, visited);
            links[l] = self.choose_links(&found, self.degree(l));
            entries = found;
        }
        Planned { id, links }
    }

    /// Adds `rows` (`[n, dim]`) as nodes `len()..len() + n`, on the current
    /// rayon pool. Returns the first new id.
    ///
    /// Each row is stored as int8 codes with one scale (`max |x| / 127`,
    /// a quarter of f32's bytes: a search's time goes to fetching the rows
    /// of the nodes it visits), decoded `x`, and lifted to
    /// `[x, sqrt(R^2 - |x|^2)]`, `R` a norm cap fixed at the first add (a
    /// quarter above its largest row norm; rows past it later are lifted
    /// by 0), and a query `q` is searched as `[q, 0]`. The inner product
    /// with a query is unchanged, and the lifted rows all have norm `R`,
    /// so between rows the inner product ranks like a distance: the link
    /// heuristic spreads links as it does in a metric space, where with
    /// raw inner products the rows of small norm were nobody's neighbour
    /// and could not be reached (Bachrach et al., 2014).
    pub fn add(&mut self, rows: &[f32]) -> Result<u32, AnnError> {
        let n = crate::check_rows(rows, self.dim)?;
        let first = self.len();
        if first + n >= NONE as usize {
            return Err(AnnError::Full);
        }
        if n == 0 {
            return Ok(first as u32);
        }
        let start = self.codes.len();
        let mut squared_norms = Vec::with_capacity(n);
        for row in rows.chunks_exact(self.dim) {
            let scale = row.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut squared = 0.0f64;
            for &v in row {
                let code = (v * inverse).round().clamp(-127.0, 127.0) as i8;
                let decoded = f64::from(code) * f64::from(scale);
                squared += decoded * decoded;
                self.codes.push(code);
            }
            self.scales.push(scale);
            squared_norms.push(squared);
        }
        debug_assert_eq!(self.codes.len() - start, n * self.dim);
        if self.norm_cap == 0.0 {
            let largest = squared_norms.iter().fold(0.0f64, |m, &v| m.max(v)).sqrt();
            // All-zero rows leave no scale to take: any cap lifts them alike.
            let cap = if largest > 0.0 { 1.25 * largest } else { 1.0 };
            // The lifts' products must stay finite in f32.
            if !((cap * cap) as f32).is_finite() {
                self.codes.truncate(start);
                self.scales.truncate(first);
                return Err(AnnError::Config(format!(
                    "row norms up to {largest:e} are too large to lift in f32"
                )));
            }
            self.norm_cap = cap as f32;
        }
        let cap_squared = f64::from(self.norm_cap).powi(2);
        self.lifts.extend(
            squared_norms
                .iter()
                .map(|s| (cap_squared - s).max(0.0).sqrt() as f32),
        );
        self.base.resize((first + n) * self.base_degree(), NONE);
        let mut next = first;
        while next < first + n {
            let batch = (next / 8).clamp(1, MAX_BATCH).min(first + n - next);
            self.insert_batch(next as u32..(next + batch) as u32);
            next += batch;
        }
        Ok(first as u32)
    }

    fn insert_batch(&mut self, ids: std::ops::Range<u32>) {
        for id in ids.clone() {
            let level = self.level_of(id) as u8;
            self.levels.push(level);
            while self.upper.len() < usize::from(level) {
                self.upper.push(HashMap::new());
            }
        }
        let this = &*self;
        // `dispatch` inside each task: the worker threads run the closure,
        // and only code inlined into the dispatch is compiled for the
        // CPU's SIMD level.
        let planned: Vec<Planned> = ids
            .clone()
            .into_par_iter()
            .map(|id| {
                dispatch(
                    #[inline(always)]
                    || this.with_visited(|visited| this.plan(id, visited)),
                )
            })
            .collect();
        // Forward links in id order; reverse links collected per target.
        let mut reverse: Vec<HashMap<u32, Vec<u32>>> = vec![HashMap::new(); MAX_LEVEL + 1];
        for plan in &planned {
            for (level, links) in plan.links.iter().enumerate() {
                self.set_links(level, plan.id, links);
                for &target in links {
                    reverse[level].entry(target).or_default().push(plan.id);
                }
            }
        }
        for (level, sources) in reverse.into_iter().enumerate() {
            let mut targets: Vec<(u32, Vec<u32>)> = sources.into_iter().collect();
            targets.sort_unstable_by_key(|t| t.0);
            let this = &*self;
            let updated: Vec<(u32, Vec<u32>)> = targets
                .into_par_iter()
                .map(|(target, sources)| {
                    let links = dispatch(
                        #[inline(always)]
                        || this.relink(level, target, &sources),
                    );
                    (target, links)
                })
                .collect();
            for (target, links) in updated {
                self.set_links(level, target, &links);
            }
        }
        for id in ids {
            if self.entry.is_none() || usize::from(self.levels[id as usize]) > self.top_level() {
                self.entry = Some(id);
            }
        }
    }

    /// `target`'s links on `level` with `sources` added: all of them while
    /// they fit, else the heuristic's choice among them.
    #[inline(always)]
    fn relink(&self, level: usize, target: u32, sources: &[u32]) -> Vec<u32> {
        let mut all: Vec<u32> = self.links(level, target).to_vec();
        all.extend(sources.iter().filter(|&&s| s != target));
        all.sort_unstable();
        all.dedup();
        if all.len() <= self.degree(level) {
            return all;
        }
        let row = self.probe_of(target);
        let mut scored: Vec<Scored> = all
            .into_iter()
            .map(|id| Scored {
                score: self.score(&row, id),
                id,
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        self.choose_links(&scored, self.degree(level))
    }

    /// The `k` nodes with the highest inner product with `query` that a
    /// beam of width `ef` (at least `k`) finds, best first, with their
    /// scores. Sequential: a batch of queries runs one per task.
    ///
    /// # Panics
    ///
    /// If `query` is not `dim()` wide.
    #[track_caller]
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(u32, f32)> {
        assert_eq!(query.len(), self.dim, "query width");
        let query = &Probe {
            values: query.to_vec(),
            lift: 0.0,
        };
        dispatch(
            #[inline(always)]
            || {
                let Some(start) = self.descend(query, 0) else {
                    return Vec::new();
                };
                let found = self.with_visited(|visited| {
                    self.search_level(query, &[start], ef.max(k), 0, visited)
                });
                found.into_iter().take(k).map(|s| (s.id, s.score)).collect()
            },
        )
    }
}

/// A graph as flat arrays, for saving and for [`Graph::from_parts`].
#[derive(Debug, Clone, PartialEq)]
pub struct GraphParts {
    /// Row width.
    pub dim: usize,
    /// The build configuration.
    pub config: GraphConfig,
    /// The norm rows are lifted to.
    pub norm_cap: f32,
    /// Rows as int8 codes, `[n, dim]`.
    pub codes: Vec<i8>,
    /// Each row's code scale, `[n]`.
    pub scales: Vec<f32>,
    /// Each row's lift to `norm_cap`, `[n]`.
    pub lifts: Vec<f32>,
    /// Each node's level, `[n]`.
    pub levels: Vec<u8>,
    /// Level-0 links, `[n, 2 M]`, `u32::MAX` after a node's last link.
    pub base: Vec<u32>,
    /// Upper-level links: for each node with a level of at least 1, in id
    /// order, its links on levels 1 to its level, each padded to `M`
    /// with `u32::MAX`.
    pub upper: Vec<u32>,
}

impl Graph {
    /// The graph as flat arrays.
    pub fn to_parts(&self) -> GraphParts {
        let m = self.config.max_degree;
        let mut upper = Vec::new();
        for (id, &level) in self.levels.iter().enumerate() {
            for l in 1..=usize::from(level) {
                let links = self.links(l, id as u32);
                upper.extend_from_slice(links);
                upper.extend(std::iter::repeat_n(NONE, m - links.len()));
            }
        }
        GraphParts {
            dim: self.dim,
            config: self.config,
            norm_cap: self.norm_cap,
            codes: self.codes.clone(),
            scales: self.scales.clone(),
            lifts: self.lifts.clone(),
            levels: self.levels.clone(),
            base: self.base.clone(),
            upper,
        }
    }

    /// Reassembles a graph from [`Graph::to_parts`], checking every
    /// invariant.
    pub fn from_parts(parts: GraphParts) -> Result<Graph, AnnError> {
        let mut graph = Graph::new(parts.dim, parts.config)?;
        if parts.dim == 0 || !parts.codes.len().is_multiple_of(parts.dim) {
            return Err(AnnError::Shape {
                len: parts.codes.len(),
                dim: parts.dim,
            });
        }
        let n = parts.codes.len() / parts.dim;
        if n >= NONE as usize {
            return Err(AnnError::Full);
        }
        if parts.scales.len() != n || parts.lifts.len() != n {
            return Err(AnnError::Parts("one scale and one lift per row".into()));
        }
        if let Some(row) = (0..n).find(|&i| {
            let (scale, lift) = (parts.scales[i], parts.lifts[i]);
            !(scale.is_finite() && scale >= 0.0 && lift.is_finite() && lift >= 0.0)
        }) {
            return Err(AnnError::NonFinite { row });
        }
        if !(parts.norm_cap.is_finite() && parts.norm_cap >= 0.0)
            || (n > 0) != (parts.norm_cap > 0.0)
        {
            return Err(AnnError::Parts(
                "the norm cap must be positive once rows exist".into(),
            ));
        }
        let bad = |what: &str| Err(AnnError::Parts(what.to_owned()));
        if parts.levels.len() != n || parts.base.len() != n * graph.base_degree() {
            return bad("levels and level-0 links must cover every node");
        }
        if parts.levels.iter().any(|&l| usize::from(l) > MAX_LEVEL) {
            return bad("a level is above the highest");
        }
        let m = parts.config.max_degree;
        let upper_slots: usize = parts.levels.iter().map(|&l| usize::from(l) * m).sum();
        if parts.upper.len() != upper_slots {
            return bad("upper-level links do not match the levels");
        }
        let valid = |links: &[u32], id: usize, level: usize| {
            let end = links.iter().position(|&l| l == NONE).unwrap_or(links.len());
            links[..end].iter().all(|&l| {
                (l as usize) < n
                    && l as usize != id
                    && usize::from(parts.levels[l as usize]) >= level
            }) && links[end..].iter().all(|&l| l == NONE)
        };
        for (id, links) in parts.base.chunks_exact(graph.base_degree()).enumerate() {
            if !valid(links, id, 0) {
                return bad("a level-0 link is out of range, a self link or not packed");
            }
        }
        graph.codes = parts.codes;
        graph.scales = parts.scales;
        graph.lifts = parts.lifts;
        graph.norm_cap = parts.norm_cap;
        graph.base = parts.base;
        let top = parts.levels.iter().copied().max().map_or(0, usize::from);
        graph.upper = vec![HashMap::new(); top];
        let mut slots = parts.upper.chunks_exact(m);
        for (id, &level) in parts.levels.iter().enumerate() {
            for l in 1..=usize::from(level) {
                let links = slots.next().unwrap_or(&[]);
                if !valid(links, id, l) {
                    return bad("an upper-level link is out of range or below its level");
                }
                let end = links.iter().position(|&x| x == NONE).unwrap_or(links.len());
                graph.upper[l - 1].insert(id as u32, links[..end].to_vec());
            }
        }
        // The entry is the first node of the highest level, as the build
        // leaves it.
        graph.entry = parts
            .levels
            .iter()
            .position(|&l| usize::from(l) == top)
            .map(|id| id as u32);
        graph.levels = parts.levels;
        Ok(graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows around a few directions with noise: a query's best rows are
    /// spread over several of them, as `W`'s are.
    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut next = move || {
            state = splitmix(state);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let centres: Vec<f32> = (0..8 * dim).map(|_| next()).collect();
        (0..n)
            .flat_map(|i| {
                let (a, b) = (i % 8, (i / 8) % 8);
                (0..dim)
                    .map(|k| centres[a * dim + k] + 0.5 * centres[b * dim + k] + 0.3 * next())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn exact_top(rows: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<u32> {
        let mut scored: Vec<Scored> = rows
            .chunks_exact(dim)
            .enumerate()
            .map(|(id, r)| Scored {
                score: r.iter().zip(query).map(|(a, b)| a * b).sum(),
                id: id as u32,
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored.into_iter().take(k).map(|s| s.id).collect()
    }

    #[test]
    fn search_finds_nearly_all_of_the_exact_top_k() {
        let (n, dim) = (3000, 24);
        let data = rows(n, dim, 1);
        let mut graph = Graph::new(dim, GraphConfig::default()).unwrap();
        graph.add(&data).unwrap();
        let queries = rows(20, dim, 2);
        let (mut found, mut total) = (0, 0);
        for query in queries.chunks_exact(dim) {
            let truth = exact_top(&data, dim, query, 20);
            let hits = graph.search(query, 20, 100);
            assert_eq!(hits.len(), 20);
            assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            // Scores are against the int8 rows: within their rounding of
            // the f32 inner product.
            for (id, score) in &hits {
                let row = &data[*id as usize * dim..][..dim];
                let exact: f32 = row.iter().zip(query).map(|(a, b)| a * b).sum();
                let bound: f32 = query.iter().map(|q| q.abs()).sum::<f32>()
                    * row.iter().fold(0.0f32, |m, v| m.max(v.abs()))
                    / 254.0;
                assert!(
                    (score - exact).abs() <= bound * 1.001 + 1e-5,
                    "{score} vs {exact}"
                );
            }
            found += hits.iter().filter(|(id, _)| truth.contains(id)).count();
            total += truth.len();
        }
        let recall = found as f64 / total as f64;
        assert!(recall >= 0.95, "recall {recall}");
    }

    #[test]
    fn the_graph_does_not_depend_on_the_thread_count() {
        let (n, dim) = (1500, 12);
        let data = rows(n, dim, 3);
        let build = |threads: usize, split: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut graph = Graph::new(dim, GraphConfig::default()).unwrap();
                graph.add(&data[..split * dim]).unwrap();
                graph.add(&data[split * dim..]).unwrap();
                graph
            })
        };
        let one = build(1, 700);
        assert_eq!(one, build(2, 700));
        assert_eq!(one, build(3, 700));
        // Adding in other pieces changes the batches, so only the search
        // quality is comparable: the links stay valid.
        let other = build(2, 1);
        assert!(Graph::from_parts(other.to_parts()).is_ok());
    }

    #[test]
    fn parts_round_trip_and_bad_parts_are_refused() {
        let dim = 6;
        let data = rows(400, dim, 5);
        let mut graph = Graph::new(
            dim,
            GraphConfig {
                max_degree: 4,
                ..GraphConfig::default()
            },
        )
        .unwrap();
        graph.add(&data).unwrap();
        let parts = graph.to_parts();
        let back = Graph::from_parts(parts.clone()).unwrap();
        assert_eq!(back, graph);
        let query = &data[..dim];
        assert_eq!(back.search(query, 5, 20), graph.search(query, 5, 20));

        let mut broken = parts.clone();
        broken.base[3] = 400;
        assert!(matches!(Graph::from_parts(broken), Err(AnnError::Parts(_))));
        let mut broken = parts.clone();
        broken.base[0] = 0;
        assert!(matches!(Graph::from_parts(broken), Err(AnnError::Parts(_))));
        let mut broken = parts.clone();
        broken.levels.pop();
        assert!(matches!(Graph::from_parts(broken), Err(AnnError::Parts(_))));
        let mut broken = parts.clone();
        broken.upper.push(NONE);
        assert!(matches!(Graph::from_parts(broken), Err(AnnError::Parts(_))));
        let mut broken = parts;
        broken.scales[0] = f32::NAN;
        assert!(matches!(
            Graph::from_parts(broken),
            Err(AnnError::NonFinite { row: 0 })
        ));
    }

    #[test]
    fn empty_and_tiny_graphs_answer_with_what_they_have() {
        let mut graph = Graph::new(3, GraphConfig::default()).unwrap();
        assert!(graph.search(&[1.0, 0.0, 0.0], 5, 10).is_empty());
        graph.add(&[1.0, 0.0, 0.0, 0.0, 2.0, 0.0]).unwrap();
        let hits = graph.search(&[0.0, 1.0, 0.0], 5, 10);
        assert_eq!(hits, vec![(1, 2.0), (0, 0.0)]);
        // Nothing added changes nothing; rows too large to lift are refused
        // without a trace.
        assert_eq!(graph.add(&[]).unwrap(), 2);
        let mut huge = Graph::new(2, GraphConfig::default()).unwrap();
        assert!(matches!(huge.add(&[3e38, 3e38]), Err(AnnError::Config(_))));
        assert!(huge.is_empty());
        assert!(huge.add(&[0.0, 0.0, 1.0, 0.0]).is_ok());
        assert!(matches!(
            graph.add(&[1.0, 2.0]),
            Err(AnnError::Shape { .. })
        ));
        assert!(matches!(
            graph.add(&[1.0, f32::INFINITY, 0.0]),
            Err(AnnError::NonFinite { row: 0 })
        ));
        assert!(Graph::new(0, GraphConfig::default()).is_err());
        assert!(
            Graph::new(
                3,
                GraphConfig {
                    max_degree: 1,
                    ..GraphConfig::default()
                }
            )
            .is_err()
        );
    }
}
