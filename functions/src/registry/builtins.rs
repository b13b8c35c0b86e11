//! The built-in models in the registry: each folder of the models directory that the engine
//! serves becomes a public model owned by the platform, with its metadata read from its files.

use std::path::Path;

use maas_store::records::registry::{Model, PLATFORM_OWNER};
use maas_store::StoreError;
use serde_json::{json, Value};

use super::header::{self, Header};
use super::RegistryState;

/// A GGUF header with its vocabulary fits in this many bytes for any model we ship.
const HEADER_READ: u64 = 32 << 20;

/// Registers (or refreshes) every model under `dir`. A folder whose files cannot be read is
/// skipped with a warning: the engine reports its own failures.
pub async fn register(registry: &RegistryState, dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let folder = entry.path();
        let Some(id) = folder.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if !folder.is_dir() || id.starts_with('.') {
            continue;
        }
        match describe(&folder) {
            Ok((model_type, h, size)) => upsert(registry, &id, model_type, &h, size).await?,
            Err(e) => tracing::warn!(model = %id, error = %e, "built-in model not registered"),
        }
    }
    Ok(())
}

/// The model's type, header and weight size, from its folder.
fn describe(folder: &Path) -> anyhow::Result<(&'static str, Header, u64)> {
    let weights = ["model.gguf", "model.safetensors"]
        .iter()
        .map(|n| folder.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("no model.gguf or model.safetensors"))?;
    let size = std::fs::metadata(&weights)?.len();
    let mut head = Vec::new();
    use std::io::Read;
    std::fs::File::open(&weights)?
        .take(HEADER_READ)
        .read_to_end(&mut head)?;
    let mut h = header::read(&head, size)?;
    if let Ok(text) = std::fs::read(folder.join("config.json")) {
        if let Ok(config) = serde_json::from_slice::<Value>(&text) {
            h = header::with_config(h, &config);
        }
    }
    let embedder = folder.join("modules.json").is_file() || h.architecture.as_deref() == Some("bert");
    Ok((if embedder { "embedding" } else { "llm" }, h, size))
}

async fn upsert(registry: &RegistryState, id: &str, model_type: &str, h: &Header, size: u64) -> anyhow::Result<()> {
    let mut metadata = header::metadata(h, model_type, size);
    metadata["size_bytes"] = json!(size);
    let now = maas_store::now_millis();
    let model = Model {
        model_id: id.into(),
        owner: PLATFORM_OWNER.into(),
        name: id.into(),
        description: format!(
            "Built-in {} model, served by maas.",
            if model_type == "llm" { "chat" } else { "embedding" }
        ),
        model_type: model_type.into(),
        category: if model_type == "llm" {
            "text-generation"
        } else {
            "feature-extraction"
        }
        .into(),
        visibility: "public".into(),
        license: Some("Apache-2.0".into()),
        tags: vec!["built-in".into(), h.format.as_str().into()],
        latest_version: None,
        download_count: 0,
        like_count: 0,
        metadata: metadata.clone(),
        project_id: None,
        cloned_from: None,
        base_model: None,
        created_at: now,
        updated_at: now,
        ver: 0,
    };
    match registry.repo.create(&model, &[]).await {
        Err(StoreError::ConditionFailed) => {
            registry
                .repo
                .update(id, |old| {
                    (old.metadata != metadata).then(|| {
                        let mut m = old.clone();
                        m.metadata = metadata.clone();
                        (m, vec![])
                    })
                })
                .await?;
            Ok(())
        }
        other => Ok(other?),
    }
}
