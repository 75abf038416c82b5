//! The PyLate reference model the ColBERT tests encode with, rebuilt in
//! `models/pylate-minilm` from the committed fixture and the MiniLM
//! weights `fetch-models` unpacks.
//!
//! PyLate saved the backbone as the all-MiniLM-L6-v2 tensors with two
//! embedding rows added (its prefix tokens) and LayerNorm parameters named
//! `gamma`/`beta`. Its 90 MB file is not committed: the fixture holds the
//! file's exact header and the two rows, and this step lays MiniLM's
//! tensors out under that header and checks the result's sha256 against
//! PyLate's file, so the tests read PyLate's bytes exactly.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use crate::models::{MODEL_DIR, STAMP};
use crate::root;

/// Where the assembled model goes (git-ignored).
pub(crate) const PYLATE_DIR: &str = "models/pylate-minilm";
/// The committed part of PyLate's model directory.
const FIXTURE: &str = "crates/lemur-text/tests/data/pylate-minilm";
/// sha256 of the `model.safetensors` pylate 1.6.0 saved.
const BACKBONE_SHA256: &str = "59eff935a0c977a611ad927dc30925bb9fc1ab8b31fdc725032a823ce78c75bc";
/// Files of the model directory copied from the fixture as they are.
const COPIED: [&str; 8] = [
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "1_Dense/config.json",
    "1_Dense/model.safetensors",
];

/// Assembles the model unless a complete copy is there already.
pub(crate) fn assemble() -> Result<()> {
    let target = root().join(PYLATE_DIR);
    let stamp = fs::read_to_string(target.join(STAMP)).unwrap_or_default();
    if stamp.trim() == BACKBONE_SHA256 && target.join("model.safetensors").is_file() {
        eprintln!("{PYLATE_DIR}: present, checksum stamp matches");
        return Ok(());
    }
    let fixture = root().join(FIXTURE);
    let backbone = backbone(&fixture)?;
    let digest: String = Sha256::digest(&backbone)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ensure!(
        digest == BACKBONE_SHA256,
        "the assembled backbone has sha256 {digest}, PyLate's file {BACKBONE_SHA256}"
    );
    let work = root()
        .join("models")
        .join(format!(".pylate-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("1_Dense"))?;
    for file in COPIED {
        fs::copy(fixture.join(file), work.join(file))
            .with_context(|| format!("copying {FIXTURE}/{file}"))?;
    }
    fs::write(work.join("model.safetensors"), &backbone)?;
    fs::write(work.join(STAMP), format!("{BACKBONE_SHA256}\n"))?;
    if target.exists() {
        fs::remove_dir_all(&target)?;
    }
    fs::rename(&work, &target).with_context(|| format!("moving to {}", target.display()))?;
    eprintln!("{PYLATE_DIR}: assembled (sha256 of PyLate's backbone file verified)");
    Ok(())
}

/// PyLate's backbone file: its header, then each tensor at its offsets,
/// taken from MiniLM under its older name.
fn backbone(fixture: &Path) -> Result<Vec<u8>> {
    let header = fs::read(fixture.join("backbone-header.json"))?;
    let layout: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)?;
    let minilm_bytes = fs::read(root().join(MODEL_DIR).join("model.safetensors"))
        .context("the MiniLM model (run `cargo xtask fetch-models`)")?;
    let minilm = tensors(&minilm_bytes)?;
    let added_bytes = fs::read(fixture.join("added_embeddings.safetensors"))?;
    let added = tensors(&added_bytes)?;
    let added_rows = added
        .get("embeddings.word_embeddings.added_rows")
        .context("added_embeddings.safetensors has no added_rows")?;
    let mut data: Vec<u8> = Vec::new();
    for (name, entry) in &layout {
        if name == "__metadata__" {
            continue;
        }
        let (start, end) = offsets(entry).with_context(|| format!("{name}: data_offsets"))?;
        let source = name.replace("LayerNorm.gamma", "LayerNorm.weight");
        let source = source.replace("LayerNorm.beta", "LayerNorm.bias");
        let mut bytes = minilm
            .get(source.as_str())
            .with_context(|| format!("MiniLM has no {source}"))?
            .to_vec();
        if name == "embeddings.word_embeddings.weight" {
            bytes.extend_from_slice(added_rows);
        }
        ensure!(bytes.len() == end - start, "{name}: {} bytes", bytes.len());
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(&bytes);
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&data);
    Ok(file)
}

fn offsets(entry: &serde_json::Value) -> Option<(usize, usize)> {
    let pair = entry.get("data_offsets")?.as_array()?;
    Some((
        usize::try_from(pair.first()?.as_u64()?).ok()?,
        usize::try_from(pair.get(1)?.as_u64()?).ok()?,
    ))
}

/// The tensors of a safetensors file by name, as raw bytes.
fn tensors(bytes: &[u8]) -> Result<HashMap<String, &[u8]>> {
    ensure!(bytes.len() >= 8, "not a safetensors file");
    let length = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    let Some(header) = bytes.get(8..8 + length) else {
        bail!("truncated safetensors header");
    };
    let layout: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)?;
    let data = &bytes[8 + length..];
    let mut tensors = HashMap::new();
    for (name, entry) in layout {
        if name == "__metadata__" {
            continue;
        }
        let (start, end) = offsets(&entry).with_context(|| format!("{name}: data_offsets"))?;
        let slice = data.get(start..end).context("tensor past the end")?;
        tensors.insert(name, slice);
    }
    Ok(tensors)
}
