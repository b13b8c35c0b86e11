//! Presigned multipart uploads: files too large for a form go straight to the bucket.
//!
//! 1. The client declares each file's size and sha256; the answer gives a URL per part.
//! 2. The client PUTs the parts there (S3's own presigned URLs; on the embedded store, `maas`'s
//!    `/blobs/uploads/...` route, signed the same way as downloads) and keeps each ETag.
//! 3. A complete call names the parts; the server joins them and checks each file's size and
//!    the weights' header at once; a `model_validation` task in a sidecar then reads every byte
//!    to check the sha256s before the version turns `ready` (or `failed`, with the reason).
//!
//! An abandoned upload expires: its URLs stop working, the version record carries a TTL, the
//! bucket's lifecycle rule drops incomplete uploads, and the embedded store sweeps old parts.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use maas_store::blobs::Part;
use maas_store::records::registry::{ModelVersion, VersionFile};
use maas_store::{Blobs, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::header::{self, Format};
use crate::state::AppState;
use crate::v1::envelope::{ApiError, Code};

/// The task that checks an uploaded version's digests.
pub const VALIDATION: &str = "model_validation";
/// How long part URLs work, and how long an upload may take.
pub const UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// The largest model file.
pub const MAX_MODEL_FILE: u64 = 50_000_000_000;
/// The largest companion file (config, tokenizer).
pub const MAX_SIDE_FILE: u64 = 64 << 20;
/// Parts are at least this large, so that a 50 GB file needs at most 3,000 URLs.
const MIN_PART_SIZE: u64 = 16 << 20;
/// The most of a file read to find its header.
const HEADER_READ: u64 = 32 << 20;

/// One file a client is about to upload.
#[derive(Deserialize, ToSchema, Clone, Debug)]
pub struct DeclaredFile {
    /// `model_file`, `config_file` or `tokenizer_file`.
    pub field: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256 of the whole file.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    /// The weights' format, `gguf` or `safetensors` (for `model_file`): it names the file the
    /// engine loads, and the header must agree.
    pub format: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PartUrl {
    pub part_number: u32,
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct FileUpload {
    pub field: String,
    pub part_size: u64,
    /// PUT each part's bytes to its URL and keep the `ETag` header of the answer.
    pub parts: Vec<PartUrl>,
}

#[derive(Deserialize, ToSchema)]
pub struct CompletedPart {
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(deserialize_with = "whole_number")]
    pub part_number: u32,
    pub etag: String,
}

/// A part number as JSON writes it: `3` or `3.0` (JSON has one number type).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = f64::deserialize(d)?;
    if n.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&n) {
        return Err(serde::de::Error::custom(format!("{n} is not a part number")));
    }
    Ok(n as u32)
}

#[derive(Deserialize, ToSchema)]
pub struct CompletedFile {
    pub field: String,
    #[schema(max_items = 10000)]
    pub parts: Vec<CompletedPart>,
}

#[derive(Deserialize, ToSchema)]
pub struct Completion {
    #[schema(max_items = 3)]
    pub files: Vec<CompletedFile>,
}

/// The name a declared file takes in the version's folder: the one the engine looks for.
fn file_name(f: &DeclaredFile) -> Option<&'static str> {
    match (f.field.as_str(), f.format.as_deref()) {
        ("model_file", Some("gguf")) => Some(Format::Gguf.file_name()),
        ("model_file", Some("safetensors")) => Some(Format::Safetensors.file_name()),
        ("config_file", _) => Some("config.json"),
        ("tokenizer_file", _) => Some("tokenizer.json"),
        _ => None,
    }
}

fn part_size(size: u64) -> u64 {
    let per_part = size.div_ceil(10_000);
    per_part.max(MIN_PART_SIZE).next_multiple_of(1 << 20)
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(Code::Validation003, field, message)
}

/// Checks the declared files: the weights once, companions at most once each, sizes within
/// limits, digests as hex.
pub fn check_declared(files: &[DeclaredFile]) -> Result<(), ApiError> {
    if !files.iter().any(|f| f.field == "model_file") {
        return Err(ApiError::field(Code::Validation001, "files", "declare the model_file").unprocessable());
    }
    for (i, f) in files.iter().enumerate() {
        let Some(_) = file_name(f) else {
            let message = match f.field.as_str() {
                "model_file" => "model_file needs a format: gguf or safetensors",
                _ => "field must be model_file, config_file or tokenizer_file",
            };
            return Err(invalid("files", message));
        };
        if files[..i].iter().any(|g| g.field == f.field) {
            return Err(invalid("files.field", format!("{} is declared twice", f.field)));
        }
        let max = if f.field == "model_file" {
            MAX_MODEL_FILE
        } else {
            MAX_SIDE_FILE
        };
        if f.size == 0 || f.size > max {
            return Err(invalid("files.size", format!("{} must be 1 to {max} bytes", f.field)));
        }
        check_sha256("files.sha256", &f.sha256)?;
    }
    Ok(())
}

/// A multipart upload just started: its id, its part size and a URL for each part.
pub struct Started {
    pub upload: String,
    pub part_size: u64,
    pub parts: Vec<PartUrl>,
}

/// Starts a multipart upload of `size` bytes into `blob` and signs a URL for each part: S3's
/// own presigned URLs, or on the embedded store `maas`'s `/blobs/uploads/...` route.
pub async fn start_blob(state: &AppState, blob: &str, size: u64) -> Result<Started, ApiError> {
    let blobs = &*state.registry.blobs;
    let upload = blobs.create_upload(blob).await?;
    let part_size = part_size(size);
    let mut parts = Vec::new();
    for n in 1..=size.div_ceil(part_size) as u32 {
        let url = match blobs.presign_part(blob, &upload, n, UPLOAD_TTL).await {
            Ok(Some(url)) => url,
            Ok(None) => state.registry.signer.part_url(blob, &upload, n, UPLOAD_TTL),
            Err(e) => {
                blobs.abort_upload(blob, &upload).await.ok();
                return Err(e.into());
            }
        };
        parts.push(PartUrl { part_number: n, url });
    }
    Ok(Started {
        upload,
        part_size,
        parts,
    })
}

/// A declared digest: 64 lower-case hex digits.
pub fn check_sha256(field: &str, sha256: &str) -> Result<(), ApiError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid(field, "sha256 must be 64 lower-case hex digits"));
    }
    Ok(())
}

/// Starts one multipart upload per file and answers the version (status `uploading`) with the
/// part URLs. A failure part-way aborts what was started.
pub async fn start(
    state: &AppState,
    model_id: &str,
    version: &str,
    description: String,
    declared: &[DeclaredFile],
) -> Result<(ModelVersion, Vec<FileUpload>), ApiError> {
    let folder = super::version_folder(model_id, version);
    let mut files = Vec::new();
    let mut uploads = Vec::new();
    for d in declared {
        let name = file_name(d).expect("checked");
        let blob = format!("{folder}{name}");
        let started = match start_blob(state, &blob, d.size).await {
            Ok(s) => s,
            Err(e) => {
                abort(&*state.registry.blobs, &files).await;
                return Err(e);
            }
        };
        files.push(VersionFile {
            name: name.into(),
            blob,
            size: d.size,
            sha256: d.sha256.clone(),
            upload: Some(started.upload),
            part_size: started.part_size,
        });
        uploads.push(FileUpload {
            field: d.field.clone(),
            part_size: started.part_size,
            parts: started.parts,
        });
    }
    let now = maas_store::now_secs();
    let expires = now + UPLOAD_TTL.as_secs() as i64;
    let v = ModelVersion {
        model_id: model_id.into(),
        version: version.into(),
        description,
        status: "uploading".into(),
        error: None,
        files,
        metadata: serde_json::json!({}),
        created_at: maas_store::now_millis(),
        expires_at: Some(expires),
        // A day past the URLs, so that a late complete call is still told what happened.
        ttl: Some(expires + 24 * 3600),
        task_id: None,
        ver: 0,
    };
    Ok((v, uploads))
}

/// Aborts the uploads of files that were being uploaded.
pub async fn abort(blobs: &dyn Blobs, files: &[VersionFile]) {
    for f in files {
        if let Some(upload) = &f.upload {
            if let Err(e) = blobs.abort_upload(&f.blob, upload).await {
                tracing::warn!(blob = %f.blob, error = %e, "cannot abort an upload");
            }
        }
    }
}

/// Why a completed upload is not a model: the version turns `failed` with this reason.
pub struct Rejected(pub String);

/// Joins each file's parts. An error here is the client's to fix (a part missing): the upload
/// stays open for another try.
pub async fn join(blobs: &dyn Blobs, v: &ModelVersion, done: &Completion) -> Result<(), ApiError> {
    for f in &v.files {
        let Some(upload) = &f.upload else { continue };
        let field = field_of(&f.name);
        let Some(named) = done.files.iter().find(|c| c.field == field) else {
            return Err(
                ApiError::field(Code::Validation001, "files", format!("name the parts of {field}")).unprocessable(),
            );
        };
        join_blob(blobs, &f.blob, upload, &named.parts, ("files.parts", field)).await?;
    }
    Ok(())
}

/// Joins the parts of one file's upload. An error here is the client's to fix (a part missing
/// or misnamed), reported under `at.0` about file `at.1`.
pub async fn join_blob(
    blobs: &dyn Blobs,
    blob: &str,
    upload: &str,
    named: &[CompletedPart],
    at: (&str, &str),
) -> Result<(), ApiError> {
    let parts: Vec<Part> = named
        .iter()
        .map(|p| Part {
            number: p.part_number,
            etag: p.etag.clone(),
            size: 0,
        })
        .collect();
    blobs.complete_upload(blob, upload, &parts).await.map_err(|e| match e {
        StoreError::Upload(m) => ApiError::field(Code::Validation003, at.0, format!("{}: {m}", at.1)),
        e => e.into(),
    })
}

/// The form field a stored file came from.
fn field_of(name: &str) -> &'static str {
    match name {
        "config.json" => "config_file",
        "tokenizer.json" => "tokenizer_file",
        _ => "model_file",
    }
}

/// Checks the joined files' sizes against what was declared, and reads the weights' header
/// (the digests are left to the `model_validation` task). Returns the files as they now are
/// and the header.
pub async fn verify(
    blobs: &dyn Blobs,
    v: &ModelVersion,
) -> Result<Result<(Vec<VersionFile>, header::Header), Rejected>, ApiError> {
    let mut files = Vec::new();
    let mut found = None;
    for f in &v.files {
        let field = field_of(&f.name);
        let size = blobs.size(&f.blob).await?.unwrap_or(0);
        if size != f.size {
            return Ok(Err(Rejected(format!(
                "{field} has {size} bytes, not the {} declared",
                f.size
            ))));
        }
        let file = VersionFile {
            upload: None,
            part_size: 0,
            ..f.clone()
        };
        if field == "model_file" {
            let head = blobs.get_range(&f.blob, 0, HEADER_READ).await?.unwrap_or_default();
            let h = match header::read(&head, size) {
                Ok(h) => h,
                Err(e) => return Ok(Err(Rejected(format!("model_file: {e}")))),
            };
            if let Some(declared) = h.declared_size.filter(|&d| d != size) {
                return Ok(Err(Rejected(format!(
                    "model_file: the header declares {declared} bytes, the file has {size}"
                ))));
            }
            if h.format.file_name() != f.name {
                return Ok(Err(Rejected(format!(
                    "model_file is {}, not the format declared",
                    h.format.as_str()
                ))));
            }
            found = Some(h);
        }
        files.push(file);
    }
    let Some(mut h) = found else {
        return Ok(Err(Rejected("no model_file".into())));
    };
    if let Some(config) = files.iter().find(|f| f.name == "config.json") {
        let bytes = blobs.get(&config.blob).await?.unwrap_or_default();
        match serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .filter(|v| v.is_object())
        {
            Some(json) => h = header::with_config(h, &json),
            None => return Ok(Err(Rejected("config_file is not a JSON object".into()))),
        }
    } else if h.format == Format::Safetensors {
        return Ok(Err(Rejected(
            "a safetensors model needs its config.json as config_file".into(),
        )));
    }
    Ok(Ok((files, h)))
}

#[derive(Deserialize)]
pub struct PartSignature {
    key: String,
    expires: i64,
    signature: String,
}

/// `PUT /blobs/uploads/{upload}/{part}?key&expires&signature`: the embedded store's stand-in
/// for S3's presigned part URLs. Answers the part's `ETag`, as S3 does.
pub async fn put_part(
    State(state): State<AppState>,
    Path((upload, part)): Path<(String, u32)>,
    q: Result<Query<PartSignature>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let Ok(Query(q)) = q else {
        return StatusCode::FORBIDDEN.into_response();
    };
    if !state
        .registry
        .signer
        .check_part(&q.key, &upload, part, q.expires, &q.signature)
    {
        return StatusCode::FORBIDDEN.into_response();
    }
    let limit = http_body_util::Limited::new(body, MAX_PART as usize);
    let bytes: Bytes = match limit.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "a part holds at most 5 GiB").into_response(),
    };
    match state.registry.blobs.put_part(&q.key, &upload, part, bytes).await {
        Ok(etag) => (StatusCode::OK, [(axum::http::header::ETAG, etag)]).into_response(),
        Err(StoreError::Upload(m)) => (StatusCode::NOT_FOUND, m).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot store a part");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// S3's largest part.
const MAX_PART: u64 = 5 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_within_s3s_limits_for_every_size() {
        for size in [
            1,
            MIN_PART_SIZE,
            MIN_PART_SIZE + 1,
            90_000_000,
            10_000_000_000,
            MAX_MODEL_FILE,
        ] {
            let p = part_size(size);
            let n = size.div_ceil(p);
            assert!((1..=10_000).contains(&n), "{size}: {n} parts");
            assert!(
                (maas_store::blobs::MIN_PART..=MAX_PART).contains(&p),
                "{size}: parts of {p}"
            );
        }
        assert!(MAX_MODEL_FILE.div_ceil(part_size(MAX_MODEL_FILE)) <= 3000);
    }

    #[test]
    fn declarations_need_weights_known_fields_sane_sizes_and_hex_digests() {
        let f = |field: &str, size, sha: &str| DeclaredFile {
            field: field.into(),
            size,
            sha256: sha.into(),
            format: (field == "model_file").then(|| "gguf".into()),
        };
        let sha = "a".repeat(64);
        assert!(check_declared(&[f("model_file", 10, &sha)]).is_ok());
        assert!(check_declared(&[f("config_file", 10, &sha)]).is_err(), "no weights");
        assert!(check_declared(&[f("model_file", 10, &sha), f("model_file", 10, &sha)]).is_err());
        assert!(check_declared(&[f("model_file", MAX_MODEL_FILE + 1, &sha)]).is_err());
        assert!(check_declared(&[f("model_file", 0, &sha)]).is_err());
        assert!(check_declared(&[f("model_file", 10, "ABC")]).is_err());
        assert!(check_declared(&[f("model_file", 10, &sha), f("readme", 1, &sha)]).is_err());
        let no_format = DeclaredFile {
            format: None,
            ..f("model_file", 10, &sha)
        };
        assert!(check_declared(&[no_format]).is_err());
    }
}
