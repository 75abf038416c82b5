//! The fast forward pass against the f64 definition.

use lemur_mlp::{Activation, Block, FeatureMap, MlpError, Param, naive};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn normal(&mut self) -> f32 {
        (0..12)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 6.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

fn random_block(rng: &mut Rng, index: usize, in_dim: usize, out_dim: usize) -> Block {
    let scale = 1.0 / (in_dim as f32).sqrt();
    Block::new(
        index,
        rng.vec(in_dim * out_dim, scale),
        in_dim,
        out_dim,
        rng.vec(out_dim, 0.1),
        rng.vec(out_dim, 0.2).iter().map(|v| 1.0 + v).collect(),
        rng.vec(out_dim, 0.1),
    )
    .unwrap()
}

/// Row offsets of ragged queries with these token counts.
fn offsets_of(counts: &[usize]) -> Vec<usize> {
    let mut offsets = vec![0];
    for c in counts {
        offsets.push(offsets.last().unwrap() + c);
    }
    offsets
}

/// Largest error of any element, relative to the largest magnitude in its
/// row (elementwise relative error is meaningless for values near zero).
fn max_rel_err(got: &[f32], want: &[f64], width: usize) -> f64 {
    got.chunks_exact(width)
        .zip(want.chunks_exact(width))
        .map(|(g, w)| {
            let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
            g.iter()
                .zip(w)
                .map(|(&a, &b)| (a as f64 - b).abs() / scale)
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

fn check_forward(map: &FeatureMap, rng: &mut Rng, rows: usize) {
    let d = map.input_dim();
    let h = map.output_dim();
    let tokens = rng.vec(rows * d, 1.0);
    let mut got = vec![0.0; rows * h];
    map.forward(&tokens, &mut got);
    let want: Vec<f64> = tokens
        .chunks_exact(d)
        .flat_map(|x| naive::psi(map, x))
        .collect();
    let err = max_rel_err(&got, &want, h);
    assert!(
        err <= 1e-5,
        "forward error {err} for {map:?}",
        map = map.activation()
    );
}

#[test]
fn erf_is_accurate_over_the_real_line() {
    let mut worst = 0.0f64;
    for i in -60_000..=60_000 {
        let x = i as f32 / 10_000.0;
        let err = (lemur_mlp::erf(x) as f64 - libm::erf(x as f64)).abs();
        worst = worst.max(err);
    }
    assert!(worst < 5e-7, "erf max abs error {worst}");
    // GELU is the erf form, not the tanh approximation: they differ by
    // about 1e-4 near x = 2, far above the tolerance here.
    let x = 2.0f32;
    let exact = 0.5 * 2.0 * (1.0 + libm::erf(2.0 / std::f64::consts::SQRT_2));
    assert!((lemur_mlp::gelu(x) as f64 - exact).abs() < 1e-6);
}

#[test]
fn one_and_two_blocks_every_activation_match_f64() {
    let mut rng = Rng(1);
    for activation in [
        Activation::Gelu,
        Activation::Relu,
        Activation::Silu,
        Activation::Mish,
    ] {
        for (dims, rows) in [
            (vec![16, 64], 7),
            (vec![128, 96, 300], 300),
            (vec![3, 5, 4], 1),
        ] {
            let blocks: Vec<Block> = dims
                .windows(2)
                .enumerate()
                .map(|(i, w)| random_block(&mut rng, i, w[0], w[1]))
                .collect();
            let map = FeatureMap::mlp(blocks, activation).unwrap();
            check_forward(&map, &mut rng, rows);
        }
    }
}

#[test]
fn random_features_match_f64() {
    let mut rng = Rng(2);
    for (d, h, rows) in [(8, 32, 5), (128, 512, 260)] {
        let map = FeatureMap::random(rng.vec(d * h, 1.0), d, h).unwrap();
        check_forward(&map, &mut rng, rows);
    }
}

#[test]
fn query_features_match_f64_and_do_not_depend_on_threads() {
    let mut rng = Rng(3);
    let blocks = vec![
        random_block(&mut rng, 0, 24, 40),
        random_block(&mut rng, 1, 40, 33),
    ];
    let map = FeatureMap::mlp(blocks, Activation::Gelu).unwrap();
    // Query lengths straddle the 256-token grouping, including a long one.
    let counts = [1usize, 32, 300, 17, 255, 256, 2, 600];
    let offsets = offsets_of(&counts);
    let tokens = rng.vec(offsets[counts.len()] * 24, 1.0);
    let mut sequential = vec![0.0; counts.len() * 33];
    map.query_features(&tokens, &offsets, &mut sequential, false);
    let mut parallel = vec![0.0; counts.len() * 33];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| map.query_features(&tokens, &offsets, &mut parallel, true));
    assert_eq!(sequential, parallel);
    let want: Vec<f64> = offsets
        .windows(2)
        .flat_map(|w| naive::query_feature(&map, &tokens[w[0] * 24..w[1] * 24]))
        .collect();
    assert!(max_rel_err(&sequential, &want, 33) <= 1e-5);
}

#[test]
fn a_query_alone_spread_over_threads_gets_the_same_features() {
    // Blocks wide enough that one query's products are split by columns
    // over the pool, with a ragged last part; the random-feature map too.
    let mut rng = Rng(11);
    let blocks = vec![
        random_block(&mut rng, 0, 24, 200),
        random_block(&mut rng, 1, 200, 130),
    ];
    let maps = [
        FeatureMap::mlp(blocks, Activation::Silu).unwrap(),
        FeatureMap::random(rng.vec(24 * 300, 0.2), 24, 300).unwrap(),
    ];
    let counts = [1usize, 5, 32, 300];
    let offsets = offsets_of(&counts);
    let tokens = rng.vec(offsets[counts.len()] * 24, 1.0);
    for map in &maps {
        let h = map.output_dim();
        let mut batch = vec![0.0; counts.len() * h];
        map.query_features(&tokens, &offsets, &mut batch, false);
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (q, w) in offsets.windows(2).enumerate() {
                let mut alone = vec![0.0; h];
                let query = &tokens[w[0] * 24..w[1] * 24];
                pool.install(|| map.query_features(query, &[0, w[1] - w[0]], &mut alone, true));
                assert_eq!(
                    alone,
                    batch[q * h..(q + 1) * h],
                    "query {q}, {threads} threads"
                );
            }
        }
        let want: Vec<f64> = offsets
            .windows(2)
            .flat_map(|w| naive::query_feature(map, &tokens[w[0] * 24..w[1] * 24]))
            .collect();
        assert!(max_rel_err(&batch, &want, h) <= 1e-5);
    }
}

#[test]
fn constructors_reject_bad_parameters() {
    let ok = |i, n, m| {
        Block::new(
            i,
            vec![0.5; n * m],
            n,
            m,
            vec![0.0; m],
            vec![1.0; m],
            vec![0.0; m],
        )
    };
    assert!(matches!(
        FeatureMap::mlp(vec![], Activation::Gelu),
        Err(MlpError::NoBlocks)
    ));
    assert_eq!(
        FeatureMap::mlp(
            vec![ok(0, 4, 8).unwrap(), ok(1, 6, 8).unwrap()],
            Activation::Gelu
        )
        .unwrap_err(),
        MlpError::Chain {
            block: 1,
            expected_in: 8,
            found_in: 6
        }
    );
    let err = Block::new(
        0,
        vec![0.5; 31],
        4,
        8,
        vec![0.0; 8],
        vec![1.0; 8],
        vec![0.0; 8],
    )
    .unwrap_err();
    assert_eq!(
        err,
        MlpError::Length {
            block: 0,
            param: Param::Weight,
            expected: 32,
            found: 31
        }
    );
    let err = Block::new(
        2,
        vec![0.5; 32],
        4,
        8,
        vec![0.0; 8],
        vec![1.0; 7],
        vec![0.0; 8],
    )
    .unwrap_err();
    assert!(matches!(
        err,
        MlpError::Length {
            block: 2,
            param: Param::LnGain,
            ..
        }
    ));
    let mut bias = vec![0.0; 8];
    bias[3] = f32::NAN;
    let err = Block::new(0, vec![0.5; 32], 4, 8, bias, vec![1.0; 8], vec![0.0; 8]).unwrap_err();
    assert!(matches!(
        err,
        MlpError::NonFinite {
            param: Param::Bias,
            index: 3,
            ..
        }
    ));
    let mut projection = vec![0.0; 6];
    projection[5] = f32::INFINITY;
    assert!(matches!(
        FeatureMap::random(projection, 2, 3),
        Err(MlpError::NonFinite { index: 5, .. })
    ));
    assert!(matches!(
        FeatureMap::random(vec![], 0, 3),
        Err(MlpError::ZeroWidth { .. })
    ));
}
