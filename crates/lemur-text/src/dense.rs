//! The Dense modules of a sentence-transformers / PyLate model directory:
//! the projection a ColBERT model applies to every token state.

use std::path::Path;

use lemur_mlp::gemm::matmul_a_bt;
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::TextError;
use crate::weights::TensorSource;

/// The activations a Dense module's `activation_function` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenseActivation {
    Identity,
    Tanh,
    Relu,
    Gelu,
    Sigmoid,
}

impl DenseActivation {
    /// The activation a PyTorch class path names (PyLate instantiates it
    /// with no arguments, so `GELU` is the exact one).
    fn from_class(path: &str) -> Option<DenseActivation> {
        Some(match path {
            "torch.nn.modules.linear.Identity" => DenseActivation::Identity,
            "torch.nn.modules.activation.Tanh" => DenseActivation::Tanh,
            "torch.nn.modules.activation.ReLU" => DenseActivation::Relu,
            "torch.nn.modules.activation.GELU" => DenseActivation::Gelu,
            "torch.nn.modules.activation.Sigmoid" => DenseActivation::Sigmoid,
            _ => return None,
        })
    }

    fn apply(self, x: f32) -> f32 {
        match self {
            DenseActivation::Identity => x,
            DenseActivation::Tanh => x.tanh(),
            DenseActivation::Relu => x.max(0.0),
            DenseActivation::Gelu => lemur_mlp::gelu(x),
            DenseActivation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }
}

/// One Dense module: `y = act(x W^T + b)`, plus `x` (or `x R^T` when the
/// widths differ) with `use_residual`.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    residual: Option<Residual>,
    activation: DenseActivation,
    pub(crate) in_dim: usize,
    pub(crate) out_dim: usize,
}

#[derive(Debug, Clone)]
enum Residual {
    Identity,
    Projected(Vec<f32>),
}

#[derive(Deserialize)]
struct RawDense {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default = "tanh")]
    activation_function: String,
    #[serde(default)]
    use_residual: bool,
}

fn yes() -> bool {
    true
}

/// sentence-transformers' default activation of a Dense module.
fn tanh() -> String {
    "torch.nn.modules.activation.Tanh".into()
}

impl Dense {
    /// Loads the module in `dir` (`config.json`, `model.safetensors`),
    /// whose input must be `in_dim` wide (the width before it).
    pub(crate) fn from_dir(dir: &Path, in_dim: usize) -> Result<Dense, TextError> {
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| TextError::io(&config_path, e))?;
        let raw: RawDense = serde_json::from_str(&text)
            .map_err(|e| TextError::config(&config_path, e.to_string()))?;
        let invalid = |message: String| TextError::config(&config_path, message);
        if raw.in_features != in_dim {
            return Err(invalid(format!(
                "in_features {} does not match the {in_dim}-wide input before it",
                raw.in_features
            )));
        }
        if raw.out_features == 0 {
            return Err(invalid("out_features is 0".into()));
        }
        let activation = DenseActivation::from_class(&raw.activation_function).ok_or_else(|| {
            invalid(format!(
                "activation_function {:?} is not supported (Identity, Tanh, ReLU, GELU, Sigmoid)",
                raw.activation_function
            ))
        })?;
        let weights_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|e| TextError::io(&weights_path, e))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| TextError::Safetensors {
            path: weights_path.clone(),
            message: e.to_string(),
        })?;
        let source = TensorSource {
            tensors,
            prefix: "",
        };
        let in_file = |e: TextError| TextError::config(&weights_path, e.to_string());
        let (n, o) = (raw.in_features, raw.out_features);
        let weight = source.get("linear.weight", &[o, n]).map_err(in_file)?;
        let bias = match raw.bias {
            true => Some(source.get("linear.bias", &[o]).map_err(in_file)?),
            false => None,
        };
        let residual = match raw.use_residual {
            false => None,
            true if n == o => Some(Residual::Identity),
            true => Some(Residual::Projected(
                source.get("residual.weight", &[o, n]).map_err(in_file)?,
            )),
        };
        Ok(Dense {
            weight,
            bias,
            residual,
            activation,
            in_dim: n,
            out_dim: o,
        })
    }

    /// The projection of a Stanford ColBERT checkpoint: `linear.weight`
    /// (`[dim, hidden]`, no bias, no activation) in the backbone's
    /// weights file.
    pub(crate) fn from_stanford(weights_path: &Path, hidden: usize) -> Result<Dense, TextError> {
        let bytes = std::fs::read(weights_path).map_err(|e| TextError::io(weights_path, e))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| TextError::Safetensors {
            path: weights_path.to_path_buf(),
            message: e.to_string(),
        })?;
        let shape = tensors
            .tensor("linear.weight")
            .map(|view| view.shape().to_vec())
            .map_err(|_| TextError::config(weights_path, "no tensor linear.weight"))?;
        let [out_dim, in_dim] = shape[..] else {
            return Err(TextError::config(
                weights_path,
                format!("linear.weight has shape {shape:?}, not [dim, hidden]"),
            ));
        };
        if in_dim != hidden || out_dim == 0 {
            return Err(TextError::config(
                weights_path,
                format!("linear.weight is [{out_dim}, {in_dim}], not [dim, {hidden}]"),
            ));
        }
        let source = TensorSource {
            tensors,
            prefix: "",
        };
        let weight = source
            .get("linear.weight", &[out_dim, in_dim])
            .map_err(|e| TextError::config(weights_path, e.to_string()))?;
        Ok(Dense {
            weight,
            bias: None,
            residual: None,
            activation: DenseActivation::Identity,
            in_dim,
            out_dim,
        })
    }

    /// `[rows, out_dim]` outputs of `[rows, in_dim]` inputs.
    pub(crate) fn forward(&self, input: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * self.out_dim];
        matmul_a_bt(
            &mut out,
            input,
            &self.weight,
            rows,
            self.in_dim,
            self.out_dim,
        );
        for row in out.chunks_exact_mut(self.out_dim) {
            if let Some(bias) = &self.bias {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
            row.iter_mut().for_each(|v| *v = self.activation.apply(*v));
        }
        match &self.residual {
            None => {}
            Some(Residual::Identity) => out.iter_mut().zip(input).for_each(|(v, x)| *v += x),
            Some(Residual::Projected(weight)) => {
                let mut projected = vec![0.0; rows * self.out_dim];
                matmul_a_bt(
                    &mut projected,
                    input,
                    weight,
                    rows,
                    self.in_dim,
                    self.out_dim,
                );
                out.iter_mut().zip(&projected).for_each(|(v, r)| *v += r);
            }
        }
        out
    }
}
