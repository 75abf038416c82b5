//! Saving and opening a [`TextIndex`]: the LEMUR index directory, with the
//! document ids and model description in the same manifest (FORMAT.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lemur_text::TextEncoder;
use serde::{Deserialize, Serialize};

use super::{TextIndex, TextIndexConfig, TextIndexError, check_config};
use crate::index::Index;

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    version: u32,
    doc_ids: Vec<String>,
    removed: Vec<u32>,
    built_docs: usize,
    model: ModelInfo,
    config: TextIndexConfig,
}

/// Enough about the encoder to refuse opening with a different one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelInfo {
    dir: Option<PathBuf>,
    hidden_size: usize,
    max_seq_len: usize,
    vocab_size: usize,
    num_layers: usize,
}

impl ModelInfo {
    fn of(encoder: &TextEncoder, dir: Option<PathBuf>) -> Self {
        ModelInfo {
            dir,
            hidden_size: encoder.hidden_size(),
            max_seq_len: encoder.max_seq_len(),
            vocab_size: encoder.config().vocab_size,
            num_layers: encoder.config().num_layers,
        }
    }

    fn same_model(&self, other: &ModelInfo) -> bool {
        (
            self.hidden_size,
            self.max_seq_len,
            self.vocab_size,
            self.num_layers,
        ) == (
            other.hidden_size,
            other.max_seq_len,
            other.vocab_size,
            other.num_layers,
        )
    }
}

impl TextIndex {
    /// Saves the index to `dir` atomically (a new generation of the LEMUR
    /// index directory, ids included in its manifest); see
    /// [`Index::save`] for the crash guarantees.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), TextIndexError> {
        let Some(index) = &self.index else {
            return Err(TextIndexError::NothingToSave);
        };
        let saved = Saved {
            version: VERSION,
            doc_ids: self.doc_ids.clone(),
            removed: (0..self.doc_ids.len() as u32)
                .filter(|&p| self.removed[p as usize])
                .collect(),
            built_docs: self.built_docs,
            model: ModelInfo::of(&self.encoder, self.model_dir.clone()),
            config: self.config.clone(),
        };
        let extra = serde_json::json!({ "text_index": saved });
        index.save_with_extra(dir.as_ref(), Some(extra))?;
        Ok(())
    }

    /// Whether the index directory `dir` holds a text index (and not a
    /// plain LEMUR index). Reads its manifest only.
    pub fn is_saved_in(dir: impl AsRef<Path>) -> Result<bool, TextIndexError> {
        let (_, metadata) = crate::persist::open_store(dir.as_ref())?;
        Ok(metadata
            .extra
            .is_some_and(|extra| extra.get("text_index").is_some()))
    }

    /// The model directory a saved index was built with, if it recorded
    /// one ([`TextIndex::from_model_dir`]).
    pub fn saved_model_dir(dir: impl AsRef<Path>) -> Result<Option<PathBuf>, TextIndexError> {
        let dir = dir.as_ref();
        let (_, saved) = read(dir)?;
        Ok(saved.model.dir)
    }

    /// Opens a saved index with `encoder`, which must be the model it was
    /// built with (widths, window, vocabulary and depth are compared).
    pub fn open(dir: impl AsRef<Path>, encoder: Arc<TextEncoder>) -> Result<Self, TextIndexError> {
        let dir = dir.as_ref();
        let (index, saved) = read(dir)?;
        let format = |reason: String| TextIndexError::Format {
            path: dir.to_path_buf(),
            reason,
        };
        let model = ModelInfo::of(&encoder, saved.model.dir.clone());
        if !model.same_model(&saved.model) {
            return Err(format(format!(
                "built with a model of {:?}, opened with {:?}",
                saved.model, model
            )));
        }
        check_config(&saved.config)?;
        if saved.doc_ids.len() != index.len() {
            return Err(format(format!(
                "{} document ids for {} documents",
                saved.doc_ids.len(),
                index.len()
            )));
        }
        let mut removed = vec![false; index.len()];
        for &p in &saved.removed {
            match removed.get_mut(p as usize) {
                Some(slot) if !*slot => *slot = true,
                _ => return Err(format(format!("removed position {p} is invalid"))),
            }
        }
        let mut positions = HashMap::with_capacity(index.len());
        for (p, id) in saved.doc_ids.iter().enumerate() {
            if removed[p] {
                continue;
            }
            if id.is_empty() || positions.insert(id.clone(), p as u32).is_some() {
                return Err(format(format!("document id {id:?} is empty or repeated")));
            }
        }
        Ok(TextIndex {
            encoder,
            model_dir: saved.model.dir,
            config: saved.config,
            doc_ids: saved.doc_ids,
            positions,
            n_removed: saved.removed.len(),
            removed,
            index: Some(index),
            built_docs: saved.built_docs,
        })
    }
}

fn read(dir: &Path) -> Result<(Index, Saved), TextIndexError> {
    let (index, extra) = Index::load_with_extra(dir)?;
    let format = |reason: String| TextIndexError::Format {
        path: dir.to_path_buf(),
        reason,
    };
    let value = extra
        .and_then(|mut extra| extra.get_mut("text_index").map(serde_json::Value::take))
        .ok_or_else(|| format("not a text index (no document ids)".into()))?;
    let saved: Saved =
        serde_json::from_value(value).map_err(|e| format(format!("text index metadata: {e}")))?;
    if saved.version != VERSION {
        return Err(format(format!(
            "text index version {} (this build reads {VERSION})",
            saved.version
        )));
    }
    Ok((index, saved))
}
