//! The model registry's machinery behind the `/api/v1/models` handlers: reading model headers,
//! multipart forms, storing a version's files, and signed download URLs.

pub mod builtins;
pub mod form;
pub mod header;
pub mod serving;
pub mod signed;
pub mod uploads;

use std::sync::Arc;

use bytes::Bytes;
use maas_store::records::registry::{ModelVersion, RegistryRepo, VersionFile};
use maas_store::records::storage::StorageRepo;
use maas_store::{Blobs, Stores};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::v1::envelope::{ApiError, Code};
use header::{Format, Header};

pub struct RegistryState {
    pub repo: RegistryRepo,
    pub blobs: Arc<dyn Blobs>,
    pub signer: signed::Signer,
    pub storage: StorageRepo,
    /// Bytes each user may keep.
    pub storage_limit: u64,
}

impl RegistryState {
    pub fn new(stores: &Stores, system_key: &str, storage_limit: u64) -> Self {
        RegistryState {
            repo: RegistryRepo::new(stores),
            blobs: stores.blobs.clone(),
            signer: signed::Signer::new(system_key),
            storage: StorageRepo::new(stores),
            storage_limit,
        }
    }

    /// Refuses, before any byte moves, what would take `user` past their storage quota.
    pub async fn check_quota(&self, user: &str, adding: u64) -> Result<(), ApiError> {
        let used = self.storage.used(user).await?;
        if used.saturating_add(adding) > self.storage_limit {
            let mut e = ApiError::new(
                Code::Resource004,
                format!(
                    "storage quota exceeded: {used} of {} bytes used, and this needs {adding} more",
                    self.storage_limit
                ),
            );
            e.status = Some(axum::http::StatusCode::FORBIDDEN);
            return Err(e);
        }
        Ok(())
    }

    /// Counts bytes that became `user`'s (negative: given back). A failure is logged: the files
    /// are written, and a quota off by one upload is better than a lost one.
    pub async fn count_storage(&self, user: &str, bytes: i64) {
        if let Err(e) = self.storage.add(user, bytes).await {
            tracing::error!(user = %user, bytes, error = %e, "cannot count storage");
        }
    }
}

/// Where in the bucket the registry keeps versions' files.
pub const MODELS_PREFIX: &str = "models/";

/// Where a version's files lie: one folder per model and version, which is also the layout a
/// sidecar serving models from the bucket reads (`models/{id}@{version}/model.gguf`), so the
/// engine serves a version as model `{id}@{version}`.
pub fn version_folder(model_id: &str, version: &str) -> String {
    format!("{MODELS_PREFIX}{}/", engine_id(model_id, version))
}

/// The id the engine serves a registry version under.
pub fn engine_id(model_id: &str, version: &str) -> String {
    format!("{model_id}@{version}")
}

/// The files of one upload, as the form named them.
pub struct Upload {
    pub weights: form::File,
    pub config: Option<form::File>,
    pub tokenizer: Option<form::File>,
}

/// What an upload is, once its files have been checked.
pub struct Checked {
    pub header: Header,
    /// `(name in the version folder, bytes)`.
    files: Vec<(&'static str, Bytes)>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(Code::Validation004, field, message).unprocessable()
}

/// Checks an upload's files: the weights must be a GGUF or safetensors file whose header
/// declares exactly the bytes sent; a safetensors model needs its `config.json`.
pub fn check(upload: Upload) -> Result<Checked, ApiError> {
    let w = &upload.weights.bytes;
    let header = header::read(w, w.len() as u64).map_err(|e| invalid("model_file", e.to_string()))?;
    if let Some(declared) = header.declared_size.filter(|&d| d != w.len() as u64) {
        return Err(invalid(
            "model_file",
            format!("the header declares {declared} bytes but the file has {}", w.len()),
        ));
    }
    let mut files = vec![(header.format.file_name(), upload.weights.bytes.clone())];
    let mut header = header;
    if let Some(config) = &upload.config {
        let json: Value = serde_json::from_slice(&config.bytes)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| invalid("config_file", "config_file must be a JSON object"))?;
        header = header::with_config(header, &json);
        files.push(("config.json", config.bytes.clone()));
    } else if header.format == Format::Safetensors {
        return Err(invalid(
            "config_file",
            "a safetensors model needs its config.json as config_file",
        ));
    }
    if let Some(t) = &upload.tokenizer {
        serde_json::from_slice::<Value>(&t.bytes)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| invalid("tokenizer_file", "tokenizer_file must be a tokenizer.json"))?;
        files.push(("tokenizer.json", t.bytes.clone()));
    }
    Ok(Checked { header, files })
}

impl Checked {
    pub fn weight_bytes(&self) -> u64 {
        self.files[0].1.len() as u64
    }

    /// Every file's bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Writes the files into the version's folder and returns the ready version. A failure
    /// part-way deletes what was written.
    pub async fn store(
        &self,
        blobs: &dyn Blobs,
        model_id: &str,
        version: &str,
        description: String,
        metadata: Value,
    ) -> Result<ModelVersion, ApiError> {
        let folder = version_folder(model_id, version);
        let mut files = Vec::new();
        for (name, bytes) in &self.files {
            let blob = format!("{folder}{name}");
            if let Err(e) = blobs.put(&blob, bytes.clone()).await {
                remove(blobs, &files).await;
                return Err(e.into());
            }
            files.push(VersionFile {
                name: name.to_string(),
                blob,
                size: bytes.len() as u64,
                sha256: hex(&Sha256::digest(bytes)),
                upload: None,
                part_size: 0,
            });
        }
        Ok(ModelVersion {
            model_id: model_id.into(),
            version: version.into(),
            description,
            status: "ready".into(),
            error: None,
            files,
            metadata,
            created_at: maas_store::now_millis(),
            expires_at: None,
            ttl: None,
            task_id: None,
            ver: 0,
        })
    }
}

/// Deletes files from the bucket, logging (not failing on) what cannot be deleted: the
/// records that named them are gone already.
pub async fn remove(blobs: &dyn Blobs, files: &[VersionFile]) {
    for f in files {
        if let Err(e) = blobs.delete(&f.blob).await {
            tracing::warn!(blob = %f.blob, error = %e, "cannot delete a model file");
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
