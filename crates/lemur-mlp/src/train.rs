//! Mini-batch training with Adam, gradient clipping and best-epoch keeping.

use crate::network::{ForwardCache, Network};
use crate::real::Real;

/// Optimiser and schedule settings; the defaults are the original's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per mini-batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Adam `beta1`.
    pub beta1: f64,
    /// Adam `beta2`.
    pub beta2: f64,
    /// Adam `eps`.
    pub eps: f64,
    /// Global gradient-norm clip (`<= 0` disables it).
    pub grad_clip: f64,
    /// Seed of the per-epoch shuffles.
    pub seed: u64,
    /// Threads faer may use inside each matrix product (1: sequential);
    /// above 1 the blocks' row loops also split over the current rayon
    /// pool, so run training inside a pool of this many threads.
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 512,
            learning_rate: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip: 0.5,
            seed: 0,
            threads: 1,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Mean training loss of each epoch (averaged over rows).
    pub train_losses: Vec<f64>,
    /// Validation loss after each epoch, when a validation set was given.
    pub validation_losses: Vec<f64>,
    /// The epoch (0-based) whose parameters were kept.
    pub best_epoch: Option<usize>,
}

/// Training targets for `rows` inputs and `n_outputs` outputs, in either
/// layout: by row (`[rows, n_outputs]`, what a batch needs) or by output
/// (`[n_outputs, rows]`, what computing targets one document at a time
/// produces). Taking both avoids ever holding the matrix twice.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a, T> {
    /// Row-major `[rows, n_outputs]`.
    ByRow(&'a [T]),
    /// Row-major `[n_outputs, rows]`.
    ByOutput(&'a [T]),
}

impl<T: Real> Targets<'_, T> {
    fn len(&self) -> usize {
        match self {
            Targets::ByRow(v) | Targets::ByOutput(v) => v.len(),
        }
    }

    /// Copies the targets of `rows` (in order) into `out` as
    /// `[rows.len(), n_outputs]`.
    fn gather(&self, rows: &[usize], n_rows: usize, n_outputs: usize, out: &mut Vec<T>) {
        out.clear();
        match self {
            Targets::ByRow(values) => {
                for &row in rows {
                    out.extend_from_slice(&values[row * n_outputs..(row + 1) * n_outputs]);
                }
            }
            Targets::ByOutput(values) => {
                out.resize(rows.len() * n_outputs, T::default());
                for (output, column) in values.chunks_exact(n_rows).enumerate() {
                    for (b, &row) in rows.iter().enumerate() {
                        out[b * n_outputs + output] = column[row];
                    }
                }
            }
        }
    }
}

/// Adam state: first and second moments per parameter tensor.
#[derive(Debug, Clone)]
struct Adam<T> {
    first: Vec<Vec<T>>,
    second: Vec<Vec<T>>,
    step: i32,
}

impl<T: Real> Adam<T> {
    fn new(params: &[Vec<T>]) -> Self {
        let zeros = || params.iter().map(|p| vec![T::default(); p.len()]).collect();
        Adam {
            first: zeros(),
            second: zeros(),
            step: 0,
        }
    }

    /// One PyTorch-style Adam update.
    fn update(&mut self, params: &mut [Vec<T>], grads: &[Vec<T>], config: &TrainConfig) {
        self.step += 1;
        let (b1, b2) = (config.beta1, config.beta2);
        let correction1 = 1.0 - b1.powi(self.step);
        let correction2 = 1.0 - b2.powi(self.step);
        let step_size = T::from_f64(config.learning_rate / correction1);
        let inv_sqrt_c2 = T::from_f64(1.0 / correction2.sqrt());
        let (b1, b2, eps) = (T::from_f64(b1), T::from_f64(b2), T::from_f64(config.eps));
        let one = T::from_f64(1.0);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.first)
            .zip(&mut self.second)
        {
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (one - b1) * g[i];
                v[i] = b2 * v[i] + (one - b2) * g[i] * g[i];
                p[i] -= step_size * m[i] / (v[i].sqrt() * inv_sqrt_c2 + eps);
            }
        }
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm`
/// (PyTorch's `clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm<T: Real>(grads: &mut [Vec<T>], max_norm: f64) -> f64 {
    let norm = grads
        .iter()
        .flatten()
        .map(|g| g.to_f64().powi(2))
        .sum::<f64>()
        .sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = T::from_f64(max_norm / (norm + 1e-6));
        grads.iter_mut().flatten().for_each(|g| *g *= scale);
    }
    norm
}

/// A Fisher-Yates shuffle from a SplitMix64 stream.
fn shuffle(order: &mut [usize], state: &mut u64) {
    for i in (1..order.len()).rev() {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        order.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

/// Mean loss of `network` over `inputs` and their `targets`, in batches.
pub fn evaluate<T: Real>(
    network: &Network<T>,
    inputs: &[T],
    targets: Targets<'_, T>,
    batch_size: usize,
    threads: usize,
) -> f64 {
    let (d, t) = (network.input_dim(), network.n_outputs());
    let rows = inputs.len() / d;
    assert_eq!(targets.len(), rows * t, "targets do not match the inputs");
    let mut cache = ForwardCache::default();
    let mut batch_y = Vec::new();
    let mut total = 0.0;
    for start in (0..rows).step_by(batch_size.max(1)) {
        let end = (start + batch_size.max(1)).min(rows);
        let batch: Vec<usize> = (start..end).collect();
        targets.gather(&batch, rows, t, &mut batch_y);
        network.forward(
            &inputs[start * d..end * d],
            end - start,
            threads,
            &mut cache,
        );
        total += network.loss(&cache, &batch_y) * (end - start) as f64;
    }
    total / rows.max(1) as f64
}

/// Trains `network` on `inputs` (`[rows, d]`) against `targets` (either
/// layout) and leaves it at its best epoch: the lowest
/// validation loss when `validation` is given, else the lowest mean
/// training loss. `progress(epoch_done, epochs)` is called after each
/// epoch.
///
/// # Panics
///
/// If the shapes do not match the network.
#[track_caller]
pub fn train<T: Real>(
    network: &mut Network<T>,
    inputs: &[T],
    targets: Targets<'_, T>,
    validation: Option<(&[T], Targets<'_, T>)>,
    config: &TrainConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> TrainReport {
    let (d, t) = (network.input_dim(), network.n_outputs());
    assert!(inputs.len().is_multiple_of(d), "inputs is not [rows, d]");
    let rows = inputs.len() / d;
    assert_eq!(targets.len(), rows * t, "targets do not match the inputs");
    let batch_size = config.batch_size.max(1);
    let mut adam = Adam::new(network.params());
    let mut order: Vec<usize> = (0..rows).collect();
    let mut state = config.seed ^ 0xD1B5_4A32_D192_ED03;
    let (mut cache, mut grads) = (ForwardCache::default(), Vec::new());
    let (mut batch_x, mut batch_y) = (Vec::new(), Vec::new());
    let mut report = TrainReport {
        train_losses: Vec::new(),
        validation_losses: Vec::new(),
        best_epoch: None,
    };
    let mut best: Option<(f64, Vec<Vec<T>>)> = None;
    for epoch in 0..config.epochs {
        shuffle(&mut order, &mut state);
        let mut total = 0.0;
        for batch in order.chunks(batch_size) {
            batch_x.clear();
            batch_y.clear();
            for &row in batch {
                batch_x.extend_from_slice(&inputs[row * d..(row + 1) * d]);
            }
            targets.gather(batch, rows, t, &mut batch_y);
            network.forward(&batch_x, batch.len(), config.threads, &mut cache);
            total += network.loss(&cache, &batch_y) * batch.len() as f64;
            network.backward(&batch_x, &batch_y, &cache, config.threads, &mut grads);
            clip_grad_norm(&mut grads, config.grad_clip);
            adam.update(network.params_mut(), &grads, config);
        }
        let train_loss = total / rows.max(1) as f64;
        report.train_losses.push(train_loss);
        let score = match validation {
            Some((vx, vy)) => {
                let loss = evaluate(network, vx, vy, batch_size, config.threads);
                report.validation_losses.push(loss);
                loss
            }
            None => train_loss,
        };
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, network.params().to_vec()));
            report.best_epoch = Some(epoch);
        }
        progress(epoch + 1, config.epochs);
    }
    if let Some((_, params)) = best {
        network.params_mut().clone_from_slice(&params);
    }
    report
}
