//! Models kept in the bucket, for a sidecar fleet that serves whatever is asked for: under
//! `<prefix><id>/` lie the files a models folder would hold (`model.gguf`, a Hugging Face
//! folder, or a sentence-transformers folder). A model is copied to local disk the first time
//! it is asked for, then loaded like any other.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use maas_store::Blobs;

pub struct RemoteModels {
    blobs: Arc<dyn Blobs>,
    /// Where models live in the bucket, such as `models/`.
    prefix: String,
    /// Local copies, one folder per model.
    cache_dir: PathBuf,
    /// Loaded weights the sidecar keeps, in bytes; past it, idle models are unloaded.
    pub budget: u64,
    /// The model ids in the bucket, as last listed.
    index: RwLock<BTreeSet<String>>,
}

impl RemoteModels {
    pub fn new(blobs: Arc<dyn Blobs>, prefix: &str, cache_dir: PathBuf, budget: u64) -> RemoteModels {
        RemoteModels {
            blobs,
            prefix: prefix.to_string(),
            cache_dir,
            budget,
            index: RwLock::new(BTreeSet::new()),
        }
    }

    /// Lists the bucket again: models added since are found, removed ones forgotten.
    pub async fn refresh(&self) -> Result<()> {
        let keys = self.blobs.list(&self.prefix).await?;
        let ids = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&self.prefix)?.split_once('/'))
            .map(|(id, _)| id.to_string())
            .filter(|id| !id.is_empty() && !id.starts_with('.'))
            .collect();
        *self.index.write().expect("index lock") = ids;
        Ok(())
    }

    /// Whether the bucket holds model `id` now, asked of the bucket itself (a model uploaded
    /// since the last listing is found at once).
    pub async fn discover(&self, id: &str) -> Result<bool> {
        if self.has(id) {
            return Ok(true);
        }
        if id.is_empty() || id.starts_with('.') || id.contains('/') {
            return Ok(false);
        }
        let found = !self.blobs.list(&format!("{}{id}/", self.prefix)).await?.is_empty();
        if found {
            self.index.write().expect("index lock").insert(id.to_string());
        }
        Ok(found)
    }

    pub fn has(&self, id: &str) -> bool {
        self.index.read().expect("index lock").contains(id)
    }

    /// Copies model `id`'s files to local disk (once: files under an id never change) and
    /// returns its local folder.
    pub async fn fetch(&self, id: &str) -> Result<PathBuf> {
        let folder = format!("{}{id}/", self.prefix);
        let local = self.cache_dir.join(id);
        for key in self.blobs.list(&folder).await? {
            let rest = key.strip_prefix(&folder).context("a key outside the model's folder")?;
            let path = local.join(safe_relative(rest)?);
            if path.is_file() {
                continue;
            }
            let bytes = self.blobs.get(&key).await?.with_context(|| format!("{key} vanished"))?;
            let dir = path.parent().context("a file has a folder")?;
            tokio::fs::create_dir_all(dir).await?;
            // Written aside and renamed, so a copy cut short is never taken for the file.
            let partial = dir.join(format!(".{}.partial", uuid::Uuid::new_v4().simple()));
            tokio::fs::write(&partial, &bytes).await?;
            tokio::fs::rename(&partial, &path).await?;
        }
        Ok(local)
    }
}

/// `rest` as a path inside the model's folder: no `..`, no absolute paths.
fn safe_relative(rest: &str) -> Result<&Path> {
    let path = Path::new(rest);
    anyhow::ensure!(
        !rest.is_empty() && path.components().all(|c| matches!(c, std::path::Component::Normal(_))),
        "unsafe key {rest:?}"
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_models_folder() {
        assert!(safe_relative("model.gguf").is_ok());
        assert!(safe_relative("adapters/a/adapter_config.json").is_ok());
        assert!(safe_relative("../etc/passwd").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
        assert!(safe_relative("").is_err());
    }
}
