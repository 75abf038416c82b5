//! The trainable network: feature-map blocks plus a bias-free output layer,
//! with a hand-written backward pass on faer products.

// The row loops index several parallel buffers at once, as the formulas do.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::activation::Activation;
use crate::block::Block;
use crate::map::FeatureMap;
use crate::real::{Op, Real};
use crate::{LAYER_NORM_EPS, MlpError};

/// `x -> psi(x) V^T`: the feature-map blocks (`Linear -> LayerNorm ->
/// activation`) followed by a bias-free linear output layer `V`
/// `[n_outputs, h]`, the model LEMUR trains before throwing `V` away.
///
/// Parameters are kept as a flat list of row-major tensors, in order: for
/// block `l`, its weight `[h_{l+1}, h_l]`, bias, LayerNorm gain and bias;
/// then `V`. Gradients use the same layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Network<T> {
    dims: Vec<usize>,
    n_outputs: usize,
    activation: Activation,
    params: Vec<Vec<T>>,
}

/// What the backward pass needs from the forward pass.
#[derive(Debug, Clone, Default)]
pub struct ForwardCache<T> {
    /// Per block: normalised pre-activations `xhat` `[B, h]`.
    xhat: Vec<Vec<T>>,
    /// Per block: `1 / sqrt(var + eps)` per row `[B]`.
    inv_std: Vec<Vec<T>>,
    /// Per block: LayerNorm outputs `[B, h]` (activation inputs).
    normed: Vec<Vec<T>>,
    /// Per block: activations `[B, h]`; the last is `psi(x)`.
    activations: Vec<Vec<T>>,
    /// Network outputs `[B, n_outputs]`.
    output: Vec<T>,
}

/// Fewest rows per rayon task of the element-wise row loops (a row is a
/// few thousand values: smaller tasks cost more to hand out than to run).
const ROWS_PER_TASK: usize = 16;

/// One row of a block's forward pass: the pre-activations (with the bias
/// still to add), `xhat`, the LayerNorm outputs, the activations and the
/// row's `1 / std`.
type RowsOut<'a, T> = (
    ((&'a mut [T], &'a mut [T]), (&'a mut [T], &'a mut [T])),
    &'a mut T,
);

/// `act(x)` for any float type.
fn act<T: Real>(activation: Activation, x: T) -> T {
    let one = T::from_f64(1.0);
    match activation {
        Activation::Gelu => {
            T::from_f64(0.5) * x * (one + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
        }
        Activation::Relu => {
            if x > T::default() {
                x
            } else {
                T::default()
            }
        }
        Activation::Silu => x / (one + (-x).exp()),
        Activation::Mish => x * softplus(x).tanh(),
    }
}

fn softplus<T: Real>(x: T) -> T {
    if x > T::from_f64(20.0) {
        x
    } else {
        x.exp().ln_1p()
    }
}

fn sigmoid<T: Real>(x: T) -> T {
    T::from_f64(1.0) / (T::from_f64(1.0) + (-x).exp())
}

/// `act'(x)`.
fn act_grad<T: Real>(activation: Activation, x: T) -> T {
    let one = T::from_f64(1.0);
    match activation {
        Activation::Gelu => {
            let cdf =
                T::from_f64(0.5) * (one + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
            let pdf = (T::from_f64(-0.5) * x * x).exp()
                * T::from_f64(1.0 / (2.0 * std::f64::consts::PI).sqrt());
            cdf + x * pdf
        }
        Activation::Relu => {
            if x > T::default() {
                one
            } else {
                T::default()
            }
        }
        Activation::Silu => {
            let s = sigmoid(x);
            s * (one + x * (one - s))
        }
        Activation::Mish => {
            let t = softplus(x).tanh();
            t + x * (one - t * t) * sigmoid(x)
        }
    }
}

/// Uniform in `[-bound, bound)` from a SplitMix64 state.
fn uniform<T: Real>(state: &mut u64, bound: f64) -> T {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    T::from_f64((2.0 * unit - 1.0) * bound)
}

impl<T: Real> Network<T> {
    /// A freshly initialised network with PyTorch's default initialisation
    /// (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weights and biases,
    /// LayerNorm gain 1 and bias 0). `dims` is `[d, h_1, .., h_L]`.
    ///
    /// # Panics
    ///
    /// If `dims` has fewer than two entries or a zero, or `n_outputs == 0`.
    #[track_caller]
    pub fn new(dims: &[usize], n_outputs: usize, activation: Activation, seed: u64) -> Self {
        assert!(dims.len() >= 2 && dims.iter().all(|&w| w >= 1) && n_outputs >= 1);
        let mut state = seed ^ 0x1234_5678_9ABC_DEF0;
        let mut params = Vec::new();
        for pair in dims.windows(2) {
            let (fan_in, width) = (pair[0], pair[1]);
            let bound = 1.0 / (fan_in as f64).sqrt();
            params.push(
                (0..width * fan_in)
                    .map(|_| uniform(&mut state, bound))
                    .collect(),
            );
            params.push((0..width).map(|_| uniform(&mut state, bound)).collect());
            params.push(vec![T::from_f64(1.0); width]);
            params.push(vec![T::default(); width]);
        }
        let h = dims[dims.len() - 1];
        let bound = 1.0 / (h as f64).sqrt();
        params.push(
            (0..n_outputs * h)
                .map(|_| uniform(&mut state, bound))
                .collect(),
        );
        Network {
            dims: dims.to_vec(),
            n_outputs,
            activation,
            params,
        }
    }

    /// Input width `d`.
    pub fn input_dim(&self) -> usize {
        self.dims[0]
    }

    /// Feature width `h`.
    pub fn feature_dim(&self) -> usize {
        self.dims[self.dims.len() - 1]
    }

    /// Outputs per input (training documents).
    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    /// The parameters, in the documented order.
    pub fn params(&self) -> &[Vec<T>] {
        &self.params
    }

    /// The parameters, mutably (for optimisers and tests).
    pub fn params_mut(&mut self) -> &mut [Vec<T>] {
        &mut self.params
    }

    fn n_blocks(&self) -> usize {
        self.dims.len() - 1
    }

    /// Runs `rows` inputs (`[rows, d]`), keeping what backward needs.
    /// `threads` is the parallelism faer may use inside each product.
    ///
    /// # Panics
    ///
    /// If `inputs` is not `[rows, d]`.
    #[track_caller]
    pub fn forward(&self, inputs: &[T], rows: usize, threads: usize, cache: &mut ForwardCache<T>) {
        assert_eq!(
            inputs.len(),
            rows * self.input_dim(),
            "inputs is not [rows, d]"
        );
        let n_blocks = self.n_blocks();
        for buffers in [
            &mut cache.xhat,
            &mut cache.normed,
            &mut cache.activations,
            &mut cache.inv_std,
        ] {
            buffers.resize_with(n_blocks, Vec::new);
        }
        for l in 0..n_blocks {
            let (fan_in, width) = (self.dims[l], self.dims[l + 1]);
            let (weight, bias, gain, beta) = (
                &self.params[4 * l],
                &self.params[4 * l + 1],
                &self.params[4 * l + 2],
                &self.params[4 * l + 3],
            );
            let mut z = vec![T::default(); rows * width];
            {
                let input: &[T] = if l == 0 {
                    inputs
                } else {
                    &cache.activations[l - 1]
                };
                T::gemm(
                    &mut z,
                    input,
                    (rows, fan_in),
                    Op::Plain,
                    weight,
                    (width, fan_in),
                    Op::Transposed,
                    threads,
                );
            }
            let xhat = &mut cache.xhat[l];
            let normed = &mut cache.normed[l];
            let activations = &mut cache.activations[l];
            let inv_std = &mut cache.inv_std[l];
            xhat.resize(rows * width, T::default());
            normed.resize(rows * width, T::default());
            activations.resize(rows * width, T::default());
            inv_std.resize(rows, T::default());
            let n = T::from_f64(width as f64);
            let activation = self.activation;
            let block_row = |(((row, xhat), (normed, activations)), inv_std): RowsOut<'_, T>| {
                row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
                let mut mean = T::default();
                row.iter().for_each(|&v| mean += v);
                mean = mean / n;
                let mut var = T::default();
                row.iter().for_each(|&v| var += (v - mean) * (v - mean));
                var = var / n;
                let inv = T::from_f64(1.0) / (var + T::from_f64(LAYER_NORM_EPS as f64)).sqrt();
                *inv_std = inv;
                for j in 0..width {
                    let xh = (row[j] - mean) * inv;
                    let nv = xh * gain[j] + beta[j];
                    xhat[j] = xh;
                    normed[j] = nv;
                    activations[j] = act(activation, nv);
                }
            };
            if threads <= 1 {
                z.chunks_mut(width)
                    .zip(xhat.chunks_mut(width))
                    .zip(normed.chunks_mut(width).zip(activations.chunks_mut(width)))
                    .zip(inv_std.iter_mut())
                    .for_each(block_row);
            } else {
                z.par_chunks_mut(width)
                    .zip(xhat.par_chunks_mut(width))
                    .zip(
                        normed
                            .par_chunks_mut(width)
                            .zip(activations.par_chunks_mut(width)),
                    )
                    .zip(inv_std.par_iter_mut())
                    .with_min_len(ROWS_PER_TASK)
                    .for_each(block_row);
            }
        }
        let h = self.feature_dim();
        cache.output.resize(rows * self.n_outputs, T::default());
        let features = &cache.activations[n_blocks - 1];
        let output_weight = &self.params[4 * n_blocks];
        T::gemm(
            &mut cache.output,
            features,
            (rows, h),
            Op::Plain,
            output_weight,
            (self.n_outputs, h),
            Op::Transposed,
            threads,
        );
    }

    /// Mean squared error of the cached outputs against `targets`
    /// (`[rows, n_outputs]`), averaged over every element (PyTorch's
    /// `MSELoss`).
    pub fn loss(&self, cache: &ForwardCache<T>, targets: &[T]) -> f64 {
        assert_eq!(
            targets.len(),
            cache.output.len(),
            "targets is not [rows, n_outputs]"
        );
        let sum: f64 = cache
            .output
            .iter()
            .zip(targets)
            .map(|(&o, &t)| (o - t).to_f64().powi(2))
            .sum();
        sum / targets.len().max(1) as f64
    }

    /// Gradients of [`Network::loss`] with respect to every parameter, in
    /// the parameter layout, from a forward pass over `inputs`.
    #[track_caller]
    pub fn backward(
        &self,
        inputs: &[T],
        targets: &[T],
        cache: &ForwardCache<T>,
        threads: usize,
        grads: &mut Vec<Vec<T>>,
    ) {
        let rows = cache.output.len() / self.n_outputs;
        assert_eq!(
            targets.len(),
            cache.output.len(),
            "targets is not [rows, n_outputs]"
        );
        let n_blocks = self.n_blocks();
        grads.resize_with(self.params.len(), Vec::new);
        for (g, p) in grads.iter_mut().zip(&self.params) {
            g.resize(p.len(), T::default());
        }
        let scale = T::from_f64(2.0 / (targets.len().max(1)) as f64);
        let d_output: Vec<T> = cache
            .output
            .iter()
            .zip(targets)
            .map(|(&o, &t)| (o - t) * scale)
            .collect();
        let h = self.feature_dim();
        let features = &cache.activations[n_blocks - 1];
        T::gemm(
            &mut grads[4 * n_blocks],
            &d_output,
            (rows, self.n_outputs),
            Op::Transposed,
            features,
            (rows, h),
            Op::Plain,
            threads,
        );
        let mut d_act = vec![T::default(); rows * h];
        T::gemm(
            &mut d_act,
            &d_output,
            (rows, self.n_outputs),
            Op::Plain,
            &self.params[4 * n_blocks],
            (self.n_outputs, h),
            Op::Plain,
            threads,
        );

        for l in (0..n_blocks).rev() {
            let (fan_in, width) = (self.dims[l], self.dims[l + 1]);
            let gain = &self.params[4 * l + 2];
            let (xhat, normed, inv_std) = (&cache.xhat[l], &cache.normed[l], &cache.inv_std[l]);
            let mut d_z = vec![T::default(); rows * width];
            let mut d_normed = vec![T::default(); rows * width];
            let n = T::from_f64(width as f64);
            let activation = self.activation;
            // Per row: the gradient through the activation and the
            // LayerNorm (rows are independent, so the result does not
            // depend on how they are split between threads).
            let block_row = |(r, (d_z, d_normed)): (usize, (&mut [T], &mut [T]))| {
                let base = r * width;
                let mut mean_dxhat = T::default();
                let mut mean_dxhat_xhat = T::default();
                for j in 0..width {
                    let d_norm = d_act[base + j] * act_grad(activation, normed[base + j]);
                    d_normed[j] = d_norm;
                    let d_xhat = d_norm * gain[j];
                    d_z[j] = d_xhat;
                    mean_dxhat += d_xhat;
                    mean_dxhat_xhat += d_xhat * xhat[base + j];
                }
                mean_dxhat = mean_dxhat / n;
                mean_dxhat_xhat = mean_dxhat_xhat / n;
                for j in 0..width {
                    d_z[j] = inv_std[r] * (d_z[j] - mean_dxhat - xhat[base + j] * mean_dxhat_xhat);
                }
            };
            if threads <= 1 {
                d_z.chunks_mut(width)
                    .zip(d_normed.chunks_mut(width))
                    .enumerate()
                    .for_each(block_row);
            } else {
                d_z.par_chunks_mut(width)
                    .zip(d_normed.par_chunks_mut(width))
                    .enumerate()
                    .with_min_len(ROWS_PER_TASK)
                    .for_each(block_row);
            }
            // The gain's and bias's gradients sum over rows, in row order.
            let mut d_gain = vec![T::default(); width];
            let mut d_beta = vec![T::default(); width];
            for (d_normed, xhat) in d_normed.chunks_exact(width).zip(xhat.chunks_exact(width)) {
                for j in 0..width {
                    d_gain[j] += d_normed[j] * xhat[j];
                    d_beta[j] += d_normed[j];
                }
            }
            let input: &[T] = if l == 0 {
                inputs
            } else {
                &cache.activations[l - 1]
            };
            T::gemm(
                &mut grads[4 * l],
                &d_z,
                (rows, width),
                Op::Transposed,
                input,
                (rows, fan_in),
                Op::Plain,
                threads,
            );
            let d_bias = &mut grads[4 * l + 1];
            d_bias.iter_mut().for_each(|v| *v = T::default());
            for r in 0..rows {
                for j in 0..width {
                    d_bias[j] += d_z[r * width + j];
                }
            }
            grads[4 * l + 2].copy_from_slice(&d_gain);
            grads[4 * l + 3].copy_from_slice(&d_beta);
            if l > 0 {
                d_act = vec![T::default(); rows * fan_in];
                T::gemm(
                    &mut d_act,
                    &d_z,
                    (rows, width),
                    Op::Plain,
                    &self.params[4 * l],
                    (width, fan_in),
                    Op::Plain,
                    threads,
                );
            }
        }
    }
}

impl Network<f32> {
    /// The trained feature map `psi` (the output layer is dropped).
    pub fn to_feature_map(&self) -> Result<FeatureMap, MlpError> {
        let blocks = (0..self.n_blocks())
            .map(|l| {
                Block::new(
                    l,
                    self.params[4 * l].clone(),
                    self.dims[l],
                    self.dims[l + 1],
                    self.params[4 * l + 1].clone(),
                    self.params[4 * l + 2].clone(),
                    self.params[4 * l + 3].clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        FeatureMap::mlp(blocks, self.activation)
    }
}
