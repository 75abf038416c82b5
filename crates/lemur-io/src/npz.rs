//! The LEMUR-NumPy `.npz` export: a feature map plus the document weights.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use lemur_mlp::{Activation, Block, FeatureMap, MlpError};
use ndarray::{Array1, Array2, ArrayD, arr0};
use ndarray_npy::{NpzReader, NpzWriter};

use crate::array::{Source, scalar, shape_error};
use crate::error::{LoadError, LoadErrorKind};
use crate::write::write_atomically;

/// The target normalisation a model was trained with: `(y - mean) / std`.
/// Needed to fit weight rows for documents added later.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetNorm {
    /// Mean of the training targets.
    pub mean: f32,
    /// Population standard deviation of the training targets.
    pub std: f32,
}

/// A model exported from the original LEMUR: the feature map `psi` and one
/// weight row per corpus document.
#[derive(Debug, Clone)]
pub struct ExportedModel {
    /// The feature map.
    pub feature_map: FeatureMap,
    /// Document weights `W`, row-major `[n_docs, feature_map.output_dim()]`.
    pub doc_weights: Vec<f32>,
    /// Rows of `W`.
    pub n_docs: usize,
    /// `output_mean` / `output_std`, when the export has them.
    pub target_norm: Option<TargetNorm>,
}

/// Options for [`load_npz`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NpzOptions {
    /// The activation of the exported blocks. The LEMUR-NumPy layout does
    /// not record it; the original's default is exact GELU.
    pub activation: Activation,
}

/// Loads a LEMUR-NumPy `.npz` export (compressed or not).
///
/// Keys: `layer_{i}_weight [h_i, in_i]`, `layer_{i}_bias [h_i]`,
/// `layer_{i}_ln_weight [h_i]`, `layer_{i}_ln_bias [h_i]` for blocks
/// `i = 0..L` (L is found from the keys present), `W [m, h]`,
/// `final_hidden_dim` (an integer scalar equal to `h`), and optionally the
/// scalars `output_mean` and `output_std`. Every array must be float32 and
/// finite; every failure names the key.
pub fn load_npz(path: impl AsRef<Path>, options: NpzOptions) -> Result<ExportedModel, LoadError> {
    let path = path.as_ref();
    read_model(path, options).map_err(|kind| LoadError::new(path, kind))
}

fn read_model(path: &Path, options: NpzOptions) -> Result<ExportedModel, LoadErrorKind> {
    let file = File::open(path)?;
    let mut reader =
        NpzReader::new(BufReader::new(file)).map_err(|err| LoadErrorKind::Corrupt {
            key: "(archive)".to_owned(),
            reason: err.to_string(),
        })?;
    let names = reader.names().map_err(|err| LoadErrorKind::Corrupt {
        key: "(archive)".to_owned(),
        reason: err.to_string(),
    })?;
    let has = |key: &str| {
        names
            .iter()
            .any(|n| n == key || n.strip_suffix(".npy") == Some(key))
    };
    let n_blocks = (0..)
        .take_while(|i| has(&format!("layer_{i}_weight")))
        .count();
    let mut source = Source::Npz(&mut reader);
    if n_blocks == 0 {
        return Err(LoadErrorKind::MissingArray {
            key: "layer_0_weight".to_owned(),
        });
    }

    let mut blocks = Vec::with_capacity(n_blocks);
    let mut previous_out: Option<usize> = None;
    for i in 0..n_blocks {
        let weight_key = format!("layer_{i}_weight");
        let weight = source.read_f32(&weight_key, "[h, in]", 2)?;
        let (out_dim, in_dim) = (weight.shape()[0], weight.shape()[1]);
        if out_dim == 0 || in_dim == 0 {
            return Err(shape_error(
                &weight_key,
                "[h >= 1, in >= 1]",
                weight.shape(),
            ));
        }
        if let Some(expected_in) = previous_out
            && expected_in != in_dim
        {
            return Err(LoadErrorKind::LayerChain {
                key: weight_key,
                expected_in,
                found_in: in_dim,
            });
        }
        let vector = |source: &mut Source<'_>, suffix: &str| -> Result<Vec<f32>, LoadErrorKind> {
            let key = format!("layer_{i}_{suffix}");
            let array = source.read_f32(&key, &format!("[{out_dim}]"), 1)?;
            if array.len() != out_dim {
                return Err(shape_error(&key, &format!("[{out_dim}]"), array.shape()));
            }
            Ok(array.into_raw_vec_and_offset().0)
        };
        let bias = vector(&mut source, "bias")?;
        let ln_gain = vector(&mut source, "ln_weight")?;
        let ln_bias = vector(&mut source, "ln_bias")?;
        let weight = standard_vec(weight);
        blocks.push(
            Block::new(i, weight, in_dim, out_dim, bias, ln_gain, ln_bias)
                .map_err(|e| name_mlp_error(e, i))?,
        );
        previous_out = Some(out_dim);
    }
    let feature_map = FeatureMap::mlp(blocks, options.activation)?;
    let h = feature_map.output_dim();

    let final_hidden = source.read_int("final_hidden_dim")?;
    let declared = scalar(
        "final_hidden_dim",
        final_hidden.shape(),
        final_hidden.iter().copied(),
    )?;
    if declared != h as i128 {
        return Err(LoadErrorKind::OutOfRange {
            key: "final_hidden_dim".to_owned(),
            index: 0,
            value: declared,
            valid: "the last layer's width",
        });
    }

    let w = source.read_f32("W", &format!("[m, {h}]"), 2)?;
    if w.shape()[1] != h || w.shape()[0] == 0 {
        return Err(shape_error("W", &format!("[m >= 1, {h}]"), w.shape()));
    }
    let n_docs = w.shape()[0];
    let doc_weights = standard_vec(w);

    let target_norm = if has("output_mean") || has("output_std") {
        let mean = source.read_scalar_f64("output_mean")? as f32;
        let std = source.read_scalar_f64("output_std")? as f32;
        if std.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(LoadErrorKind::OutOfRange {
                key: "output_std".to_owned(),
                index: 0,
                value: std as i128,
                valid: "positive numbers",
            });
        }
        Some(TargetNorm { mean, std })
    } else {
        None
    };
    Ok(ExportedModel {
        feature_map,
        doc_weights,
        n_docs,
        target_norm,
    })
}

/// Names the npz key behind a block-level model error.
fn name_mlp_error(err: MlpError, block: usize) -> LoadErrorKind {
    match err {
        MlpError::Length {
            param,
            expected,
            found,
            ..
        } => LoadErrorKind::Shape {
            key: format!("layer_{block}_{}", param.key_suffix()),
            expected: format!("{expected} values"),
            found: vec![found],
        },
        MlpError::NonFinite {
            param,
            index,
            value,
            ..
        } => LoadErrorKind::NonFinite {
            key: format!("layer_{block}_{}", param.key_suffix()),
            index,
            value: value as f64,
        },
        other => LoadErrorKind::Model(other),
    }
}

/// The array's values in row-major order (numpy may store Fortran order).
pub(crate) fn standard_vec(array: ArrayD<f32>) -> Vec<f32> {
    if array.is_standard_layout() {
        array.into_raw_vec_and_offset().0
    } else {
        array.iter().copied().collect()
    }
}

/// Writes a model in the LEMUR-NumPy layout (uncompressed), atomically:
/// into a temporary file beside `path`, then renamed over it.
///
/// Only learned (block) feature maps have a LEMUR-NumPy layout; a
/// random-feature map is rejected with [`MlpError::NoBlocks`].
pub fn save_npz(path: impl AsRef<Path>, model: &ExportedModel) -> Result<(), LoadError> {
    let path = path.as_ref();
    let blocks = model
        .feature_map
        .blocks()
        .ok_or_else(|| LoadError::new(path, LoadErrorKind::Model(MlpError::NoBlocks)))?;
    let h = model.feature_map.output_dim();
    write_atomically(path, |file| {
        let mut npz = NpzWriter::new(BufWriter::new(file));
        let io = |e: ndarray_npy::WriteNpzError| std::io::Error::other(e.to_string());
        for (i, block) in blocks.iter().enumerate() {
            let weight =
                Array2::from_shape_vec((block.out_dim(), block.in_dim()), block.weight().to_vec())
                    .expect("validated shape");
            npz.add_array(format!("layer_{i}_weight"), &weight)
                .map_err(io)?;
            npz.add_array(
                format!("layer_{i}_bias"),
                &Array1::from(block.bias().to_vec()),
            )
            .map_err(io)?;
            npz.add_array(
                format!("layer_{i}_ln_weight"),
                &Array1::from(block.ln_gain().to_vec()),
            )
            .map_err(io)?;
            npz.add_array(
                format!("layer_{i}_ln_bias"),
                &Array1::from(block.ln_bias().to_vec()),
            )
            .map_err(io)?;
        }
        let w = Array2::from_shape_vec((model.n_docs, h), model.doc_weights.clone())
            .map_err(|e| std::io::Error::other(format!("W: {e}")))?;
        npz.add_array("W", &w).map_err(io)?;
        npz.add_array("final_hidden_dim", &arr0(h as i64))
            .map_err(io)?;
        if let Some(norm) = model.target_norm {
            npz.add_array("output_mean", &arr0(norm.mean)).map_err(io)?;
            npz.add_array("output_std", &arr0(norm.std)).map_err(io)?;
        }
        let mut writer = npz.finish().map_err(io)?;
        writer.flush()?;
        Ok(())
    })
    .map_err(|e| LoadError::new(path, e))?;
    Ok(())
}
