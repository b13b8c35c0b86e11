//! What the model tests share: where `scripts/fetch-models` put the built-in models, and the
//! shape of the committed logits fixtures.

use std::path::PathBuf;

/// `relative` under the models folder (`MAAS_MODELS_DIR`, or the repository's `.maas/models`).
pub fn built_in(relative: &str) -> PathBuf {
    let dir = std::env::var_os("MAAS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.maas/models"));
    let path = dir.join(relative);
    assert!(path.exists(), "{} is missing: run scripts/fetch-models", path.display());
    path
}

/// One prompt of a committed logits fixture (llama.cpp's, transformers', PEFT's): its ids, and
/// the reference's top tokens at some of its positions.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // not every test binary reads logits
pub struct PromptLogits {
    pub ids: Vec<u32>,
    pub positions: Vec<Position>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
pub struct Position {
    pub position: usize,
    pub top_ids: Vec<u32>,
    pub top_logits: Vec<f64>,
    pub logsumexp: f64,
}
