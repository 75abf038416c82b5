use super::*;
use proptest::prelude::*;

/// The oracle: sort everything by the ranking order and truncate.
fn sort_and_truncate(scores: &[f32], k: usize) -> Vec<Hit> {
    let mut all: Vec<Hit> = scores
        .iter()
        .enumerate()
        .map(|(id, &score)| Hit {
            id: id as u32,
            score,
        })
        .collect();
    all.sort_by(rank_order);
    all.truncate(k);
    all
}

fn same(a: &[Hit], b: &[Hit]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id == y.id && x.score.to_bits() == y.score.to_bits())
}

/// Scores drawn from a handful of values so ties and duplicates are common,
/// with the occasional NaN and infinity.
fn tie_heavy_score() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => (-4i32..4).prop_map(|v| v as f32 / 2.0),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(-0.0f32),
        4 => any::<f32>().prop_filter("finite", |v| v.is_finite()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn matches_sort_and_truncate(scores in prop::collection::vec(tie_heavy_score(), 0..200)) {
        for k in 0..=scores.len() + 2 {
            let got = top_k(&scores, k);
            let want = sort_and_truncate(&scores, k);
            prop_assert!(same(&got, &want), "k={} got={:?} want={:?}", k, got, want);
        }
    }

    #[test]
    fn rows_match_one_at_a_time(
        n_cols in 1usize..40,
        rows in 0usize..6,
        k in 0usize..45,
        seed in any::<u64>(),
    ) {
        let mut state = seed;
        let scores: Vec<f32> = (0..rows * n_cols)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) % 7) as f32
            })
            .collect();
        let batched = top_k_rows(&scores, n_cols, k);
        prop_assert_eq!(batched.len(), rows);
        for (row, got) in scores.chunks_exact(n_cols).zip(&batched) {
            prop_assert!(same(got, &sort_and_truncate(row, k)));
        }
    }

    #[test]
    fn the_threshold_never_beats_the_final_kth_best(
        scores in prop::collection::vec(-1000i32..1000, 0..300),
        split in 0usize..300,
        k in 1usize..40,
    ) {
        let scores: Vec<f32> = scores.into_iter().map(|v| v as f32).collect();
        let split = split.min(scores.len());
        let mut part = TopK::new(k);
        part.extend_from_scores(0, &scores[..split]);
        let threshold = part.threshold();
        if split >= 2 * k {
            prop_assert!(threshold.is_some());
        }
        let kth = sort_and_truncate(&scores, k).last().map(|hit| hit.score);
        if let (Some(threshold), Some(kth)) = (threshold, kth) {
            prop_assert!(threshold <= kth, "{} > {}", threshold, kth);
        }
    }

    #[test]
    fn merge_equals_single_collector(
        scores in prop::collection::vec(tie_heavy_score(), 0..120),
        split in 0usize..120,
        k in 0usize..30,
    ) {
        let split = split.min(scores.len());
        let mut left = TopK::new(k);
        left.extend_from_scores(0, &scores[..split]);
        let mut right = TopK::new(k);
        right.extend_from_scores(split as u32, &scores[split..]);
        left.merge(&right);
        prop_assert!(same(&left.into_sorted_vec(), &sort_and_truncate(&scores, k)));
    }
}

#[test]
fn nan_goes_last_and_never_displaces_a_number() {
    let scores = [f32::NAN, f32::NEG_INFINITY, f32::NAN, 0.0];
    let got = top_k(&scores, 3);
    let ids: Vec<u32> = got.iter().map(|h| h.id).collect();
    assert_eq!(ids, vec![3, 1, 0]);
}

#[test]
fn zero_k_and_empty_input() {
    assert!(top_k(&[1.0, 2.0], 0).is_empty());
    assert!(top_k(&[], 5).is_empty());
    assert!(top_k_rows(&[], 0, 3).is_empty());
}

#[test]
fn reset_reuses_the_collector() {
    let mut collector = TopK::new(2);
    collector.extend_from_scores(0, &[1.0, 3.0, 2.0]);
    assert_eq!(
        collector
            .drain_sorted()
            .iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    collector.reset(1);
    collector.extend_from_scores(10, &[5.0, 6.0]);
    assert_eq!(
        collector.into_sorted_vec(),
        vec![Hit { id: 11, score: 6.0 }]
    );
}
