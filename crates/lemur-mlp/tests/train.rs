//! The backward pass against finite differences, and the training loop.

// The finite-difference loop perturbs parameters by index while reading the
// gradients by the same index.
#![allow(clippy::needless_range_loop)]

use lemur_mlp::{Activation, ForwardCache, Network, Targets, TrainConfig, evaluate, train};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn loss(network: &Network<f64>, x: &[f64], y: &[f64], rows: usize) -> f64 {
    let mut cache = ForwardCache::default();
    network.forward(x, rows, 1, &mut cache);
    network.loss(&cache, y)
}

#[test]
fn every_gradient_matches_central_finite_differences() {
    let mut rng = Rng(5);
    for activation in [
        Activation::Gelu,
        Activation::Relu,
        Activation::Silu,
        Activation::Mish,
    ] {
        for dims in [vec![5, 7], vec![5, 7, 6]] {
            let (rows, outputs) = (9, 4);
            let mut network = Network::<f64>::new(&dims, outputs, activation, 3);
            // Non-trivial LayerNorm parameters so their gradients matter.
            for tensor in network.params_mut() {
                tensor.iter_mut().for_each(|v| *v += 0.3 * rng.next());
            }
            let x: Vec<f64> = (0..rows * dims[0]).map(|_| 2.0 * rng.next()).collect();
            let y: Vec<f64> = (0..rows * outputs).map(|_| rng.next()).collect();
            let mut cache = ForwardCache::default();
            network.forward(&x, rows, 1, &mut cache);
            let mut grads = Vec::new();
            network.backward(&x, &y, &cache, 1, &mut grads);
            let step = 1e-6;
            for tensor in 0..network.params().len() {
                for i in 0..network.params()[tensor].len() {
                    let original = network.params()[tensor][i];
                    network.params_mut()[tensor][i] = original + step;
                    let up = loss(&network, &x, &y, rows);
                    network.params_mut()[tensor][i] = original - step;
                    let down = loss(&network, &x, &y, rows);
                    network.params_mut()[tensor][i] = original;
                    let numeric = (up - down) / (2.0 * step);
                    let analytic = grads[tensor][i];
                    let tolerance = 1e-4 * (numeric.abs() + analytic.abs()) + 1e-9;
                    assert!(
                        (numeric - analytic).abs() <= tolerance,
                        "{activation:?} dims {dims:?}: tensor {tensor} index {i}: analytic {analytic} numeric {numeric}"
                    );
                }
            }
        }
    }
}

#[test]
fn loss_decreases_and_the_best_epoch_is_kept() {
    let mut rng = Rng(8);
    let (d, outputs, rows) = (6, 5, 256);
    // A learnable target: a fixed random function of the input.
    let x: Vec<f32> = (0..rows * d).map(|_| rng.next() as f32).collect();
    let y: Vec<f32> = x
        .chunks_exact(d)
        .flat_map(|row| {
            (0..outputs).map(move |o| {
                row.iter()
                    .enumerate()
                    .map(|(i, v)| v * ((i + o) % 3) as f32)
                    .sum::<f32>()
                    .max(0.0)
            })
        })
        .collect();
    let (vx, vy) = (&x[..64 * d], &y[..64 * outputs]);
    let (tx, ty) = (&x[64 * d..], &y[64 * outputs..]);
    let config = TrainConfig {
        epochs: 30,
        batch_size: 32,
        learning_rate: 0.03,
        ..TrainConfig::default()
    };
    let mut network = Network::<f32>::new(&[d, 16], outputs, Activation::Gelu, 1);
    let before = evaluate(&network, vx, Targets::ByRow(vy), 64, 1);
    let mut calls = 0;
    let report = train(
        &mut network,
        tx,
        Targets::ByRow(ty),
        Some((vx, Targets::ByRow(vy))),
        &config,
        &mut |done, total| {
            calls += 1;
            assert_eq!((done, total), (calls, 30));
        },
    );
    assert_eq!(report.train_losses.len(), 30);
    // The same targets stored by output train identically.
    let by_output: Vec<f32> = (0..outputs)
        .flat_map(|o| (0..ty.len() / outputs).map(move |r| ty[r * outputs + o]))
        .collect();
    let mut twin = Network::<f32>::new(&[d, 16], outputs, Activation::Gelu, 1);
    train(
        &mut twin,
        tx,
        Targets::ByOutput(&by_output),
        Some((vx, Targets::ByRow(vy))),
        &config,
        &mut |_, _| {},
    );
    assert_eq!(twin, network);
    assert!(
        report.train_losses[29] < report.train_losses[0] * 0.5,
        "{:?}",
        report.train_losses
    );
    let best = report.best_epoch.unwrap();
    let argmin = (0..30)
        .min_by(|&a, &b| report.validation_losses[a].total_cmp(&report.validation_losses[b]))
        .unwrap();
    assert_eq!(best, argmin);
    // The network is left exactly at the best epoch's parameters.
    let after = evaluate(&network, vx, Targets::ByRow(vy), config.batch_size, 1);
    assert_eq!(after, report.validation_losses[best]);
    assert!(after < before);
    // Determinism: the same seed gives the same network.
    let mut again = Network::<f32>::new(&[d, 16], outputs, Activation::Gelu, 1);
    train(
        &mut again,
        tx,
        Targets::ByRow(ty),
        Some((vx, Targets::ByRow(vy))),
        &config,
        &mut |_, _| {},
    );
    assert_eq!(again, network);
}

#[test]
fn best_epoch_without_validation_is_the_lowest_training_loss() {
    let mut rng = Rng(9);
    let (d, outputs, rows) = (4, 3, 64);
    let x: Vec<f32> = (0..rows * d).map(|_| rng.next() as f32).collect();
    let y: Vec<f32> = (0..rows * outputs).map(|_| rng.next() as f32).collect();
    // A learning rate high enough to make the loss bounce.
    let config = TrainConfig {
        epochs: 12,
        batch_size: 8,
        learning_rate: 0.3,
        ..TrainConfig::default()
    };
    let mut network = Network::<f32>::new(&[d, 8], outputs, Activation::Relu, 2);
    let report = train(
        &mut network,
        &x,
        Targets::ByRow(&y),
        None,
        &config,
        &mut |_, _| {},
    );
    let argmin = (0..12)
        .min_by(|&a, &b| report.train_losses[a].total_cmp(&report.train_losses[b]))
        .unwrap();
    assert_eq!(report.best_epoch, Some(argmin));
}

#[test]
fn the_trained_feature_map_computes_the_networks_features() {
    let network = Network::<f32>::new(&[6, 10, 12], 3, Activation::Silu, 4);
    let map = network.to_feature_map().unwrap();
    let x: Vec<f32> = (0..5 * 6).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut cache = ForwardCache::default();
    network.forward(&x, 5, 1, &mut cache);
    let mut psi = vec![0.0; 5 * 12];
    map.forward(&x, &mut psi);
    // psi V^T must equal the network's output.
    let v = &network.params()[8];
    let mut output = vec![0.0f32; 5 * 3];
    for r in 0..5 {
        for o in 0..3 {
            output[r * 3 + o] = (0..12).map(|j| psi[r * 12 + j] * v[o * 12 + j]).sum();
        }
    }
    let reference = evaluate(&network, &x, Targets::ByRow(&output), 5, 1);
    assert!(
        reference < 1e-10,
        "psi V^T differs from the network output: mse {reference}"
    );
}

#[test]
fn threads_change_nothing_and_f32_follows_f64() {
    let mut rng = Rng(13);
    let (dims, outputs, rows) = (vec![12, 40, 32], 7, 96);
    let mut exact = Network::<f64>::new(&dims, outputs, Activation::Gelu, 4);
    for tensor in exact.params_mut() {
        tensor.iter_mut().for_each(|v| *v += 0.2 * rng.next());
    }
    let x: Vec<f64> = (0..rows * dims[0]).map(|_| 2.0 * rng.next()).collect();
    let y: Vec<f64> = (0..rows * outputs).map(|_| rng.next()).collect();
    let mut fast = Network::<f32>::new(&dims, outputs, Activation::Gelu, 4);
    for (to, from) in fast.params_mut().iter_mut().zip(exact.params()) {
        to.iter_mut().zip(from).for_each(|(t, &f)| *t = f as f32);
    }
    let (x32, y32): (Vec<f32>, Vec<f32>) = (
        x.iter().map(|&v| v as f32).collect(),
        y.iter().map(|&v| v as f32).collect(),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let gradients = |threads: usize| {
        pool.install(|| {
            let mut cache = ForwardCache::default();
            fast.forward(&x32, rows, threads, &mut cache);
            let mut grads = Vec::new();
            fast.backward(&x32, &y32, &cache, threads, &mut grads);
            (fast.loss(&cache, &y32), grads)
        })
    };
    // The row loops split rows between threads; each row is computed the
    // same way, so the result is bit-identical.
    let (loss_1, grads_1) = gradients(1);
    let (loss_2, grads_2) = gradients(2);
    assert_eq!(loss_1.to_bits(), loss_2.to_bits());
    assert_eq!(grads_1, grads_2);
    // f32 (fast exp and erf) against f64 (libm) on the same parameters.
    let mut cache = ForwardCache::default();
    exact.forward(&x, rows, 1, &mut cache);
    let mut want = Vec::new();
    exact.backward(&x, &y, &cache, 1, &mut want);
    assert!((loss_1 - exact.loss(&cache, &y)).abs() <= 1e-5 * loss_1.abs());
    for (got, want) in grads_1.iter().zip(&want) {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (&g, &w) in got.iter().zip(want) {
            assert!(
                (f64::from(g) - w).abs() <= 1e-4 * scale + 1e-7,
                "{g} vs {w}"
            );
        }
    }
}
