//! What the model tests share: where `scripts/fetch-models` put the built-in models.

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
