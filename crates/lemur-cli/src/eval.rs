//! `lemur eval`: recall against brute force, and qrels metrics.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use lemur::{Hit, Precision, SearchParams};
use serde_json::json;

use crate::commands::{Output, load_queries, open_segmented, open_with_queries, with_precision};

/// Fraction of the exact top `k` that the hits found.
pub(crate) fn recall(hits: &[Vec<Hit>], exact: &[Vec<Hit>], k: usize) -> f64 {
    let found: usize = hits
        .iter()
        .zip(exact)
        .map(|(h, e)| {
            h.iter()
                .take(k)
                .filter(|hit| e.iter().take(k).any(|x| x.doc == hit.doc))
                .count()
        })
        .sum();
    let wanted: usize = exact.iter().map(|e| e.len().min(k)).sum();
    if wanted == 0 {
        1.0
    } else {
        found as f64 / wanted as f64
    }
}

/// Relevance judgements: query -> (doc -> grade).
type Qrels = HashMap<usize, HashMap<u32, f64>>;

fn read_qrels(path: &Path) -> Result<Qrels> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut qrels = Qrels::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0].starts_with('#') {
            continue;
        }
        let parse = || -> Option<(usize, u32, f64)> {
            match fields.as_slice() {
                [q, d, r] => Some((q.parse().ok()?, d.parse().ok()?, r.parse().ok()?)),
                _ => None,
            }
        };
        let Some((query, doc, grade)) = parse() else {
            bail!(
                "{}:{}: expected `query_index doc_index relevance`",
                path.display(),
                number + 1
            );
        };
        qrels.entry(query).or_default().insert(doc, grade);
    }
    Ok(qrels)
}

/// nDCG@10 and recall@k over the judged queries.
fn qrels_metrics(hits: &[Vec<Hit>], qrels: &Qrels, k: usize) -> (f64, f64, usize) {
    let (mut ndcg, mut recall, mut judged) = (0.0, 0.0, 0);
    for (query, judgements) in qrels {
        let Some(hits) = hits.get(*query) else {
            continue;
        };
        judged += 1;
        let gain = |g: f64| 2f64.powf(g) - 1.0;
        let dcg: f64 = hits
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, h)| gain(*judgements.get(&h.doc).unwrap_or(&0.0)) / (i as f64 + 2.0).log2())
            .sum();
        let mut ideal: Vec<f64> = judgements.values().copied().collect();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, g)| gain(*g) / (i as f64 + 2.0).log2())
            .sum();
        ndcg += if idcg > 0.0 { dcg / idcg } else { 0.0 };
        let relevant = judgements.values().filter(|g| **g > 0.0).count();
        let found = hits
            .iter()
            .take(k)
            .filter(|h| judgements.get(&h.doc).is_some_and(|g| *g > 0.0))
            .count();
        recall += if relevant > 0 {
            found as f64 / relevant as f64
        } else {
            0.0
        };
    }
    let n = judged.max(1) as f64;
    (ndcg / n, recall / n, judged)
}

pub(crate) fn eval(
    dir: &Path,
    queries: &Path,
    counts: &Path,
    params: SearchParams,
    precision: Precision,
    qrels: Option<&Path>,
    out: &Output,
) -> Result<()> {
    let qrels = qrels.map(read_qrels).transpose()?;
    let (hits, exact) = if precision == Precision::F32 {
        // Every layout, segmented or not; hits carry document ids.
        let index = open_segmented(dir, out.quiet)?;
        let queries_set = load_queries(queries, counts, index.dim(), out.quiet)?;
        let hits = index.search_batch(&queries_set, params)?;
        (hits, index.exhaustive_search(&queries_set, params.k)?)
    } else {
        let (index, queries_set) = open_with_queries(dir, queries, counts, out.quiet)?;
        let index = with_precision(index, precision, out.quiet);
        let hits = index.search_batch(&queries_set, params)?;
        (hits, index.exhaustive_search(&queries_set, params.k))
    };
    let recall_exact = recall(&hits, &exact, params.k);
    let judged = qrels.as_ref().map(|q| qrels_metrics(&hits, q, params.k));
    if out.json {
        let mut value = json!({ "queries": hits.len(), "k": params.k, "candidates": params.n_candidates, "recall_vs_exact": recall_exact });
        if let Some((ndcg, recall, n)) = judged {
            value["ndcg_at_10"] = json!(ndcg);
            value["recall_qrels"] = json!(recall);
            value["judged_queries"] = json!(n);
        }
        out.print_json(value);
        return Ok(());
    }
    println!("| metric | value |");
    println!("|---|---|");
    println!("| queries | {} |", hits.len());
    println!(
        "| recall@{} vs exact MaxSim (k' = {}) | {recall_exact:.4} |",
        params.k, params.n_candidates
    );
    if let Some((ndcg, recall, n)) = judged {
        println!("| nDCG@10 (qrels, {n} judged queries) | {ndcg:.4} |");
        println!("| recall@{} (qrels) | {recall:.4} |", params.k);
    }
    Ok(())
}
