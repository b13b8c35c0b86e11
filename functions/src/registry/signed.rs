//! Expiring download URLs. On AWS they are S3's presigned URLs, so the bytes never pass through
//! a Lambda. The embedded store has no URL of its own, so `maas` signs one for its `/blobs/`
//! route with an HMAC of the key and expiry: clients follow one redirect on both backends.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// How long a download URL works.
pub const DOWNLOAD_TTL: Duration = Duration::from_secs(15 * 60);

/// Signs and checks `maas`'s own blob URLs.
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    /// A signing key derived from the deployment's system key, so every instance agrees.
    pub fn new(system_key: &str) -> Signer {
        let key = Sha256::new_with_prefix(b"maas blob urls\0")
            .chain_update(system_key)
            .finalize();
        Signer { key: key.into() }
    }

    fn mac(&self, key: &str, expires: i64) -> Hmac<Sha256> {
        self.mac_of(&["GET", key], expires)
    }

    /// An HMAC over the parts of what a URL may do, and its expiry; each part is
    /// length-prefixed, so no two different lists sign alike.
    fn mac_of(&self, parts: &[&str], expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        for p in parts {
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p.as_bytes());
        }
        mac.update(&expires.to_le_bytes());
        mac
    }

    /// A path on this server that PUTs part `part` of an upload to `key` until `ttl` passes.
    pub fn part_url(&self, key: &str, upload: &str, part: u32, ttl: Duration) -> String {
        let expires = maas_store::now_secs() + ttl.as_secs() as i64;
        let sig = hex(&self
            .mac_of(&["PUT", key, upload, &part.to_string()], expires)
            .finalize()
            .into_bytes());
        format!(
            "/blobs/uploads/{}/{part}?key={}&expires={expires}&signature={sig}",
            escape_path(upload),
            escape_path(key).replace('/', "%2F")
        )
    }

    /// Whether a part URL's signature is this server's and still in time.
    pub fn check_part(&self, key: &str, upload: &str, part: u32, expires: i64, signature: &str) -> bool {
        let Some(sig) = unhex(signature) else { return false };
        let mac = self.mac_of(&["PUT", key, upload, &part.to_string()], expires);
        expires > maas_store::now_secs() && mac.verify_slice(&sig).is_ok()
    }

    /// A path on this server that reads `key` until `ttl` passes.
    pub fn url(&self, key: &str, ttl: Duration) -> String {
        let expires = maas_store::now_secs() + ttl.as_secs() as i64;
        let sig = hex(&self.mac(key, expires).finalize().into_bytes());
        format!("/blobs/{}?expires={expires}&signature={sig}", escape_path(key))
    }

    /// Whether the signature is this server's, for this key, and still in time (compared in
    /// constant time).
    fn check(&self, key: &str, expires: i64, signature: &str) -> bool {
        let Some(sig) = unhex(signature) else { return false };
        expires > maas_store::now_secs() && self.mac(key, expires).verify_slice(&sig).is_ok()
    }
}

/// A URL that reads `key` for [`DOWNLOAD_TTL`]: the bucket's own when it has one.
pub async fn download_url(state: &AppState, key: &str) -> Result<String, maas_store::StoreError> {
    match state.registry.blobs.presign_get(key, DOWNLOAD_TTL).await? {
        Some(url) => Ok(url),
        None => Ok(state.registry.signer.url(key, DOWNLOAD_TTL)),
    }
}

#[derive(Deserialize)]
pub struct Signature {
    expires: i64,
    signature: String,
}

/// `GET /blobs/{key}?expires&signature`: the embedded store's stand-in for a presigned URL.
/// Anything wrong answers 403, as S3 does, without saying what.
pub async fn serve(
    State(state): State<AppState>,
    Path(key): Path<String>,
    q: Result<Query<Signature>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return StatusCode::FORBIDDEN.into_response();
    };
    if !state.registry.signer.check(&key, q.expires, &q.signature) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match state.registry.blobs.get(&key).await {
        Ok(Some(bytes)) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a signed blob");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Percent-encodes all but unreserved characters and `/`.
fn escape_path(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_url_opens_only_its_own_key_and_only_in_time() {
        let s = Signer::new("system");
        let now = maas_store::now_secs();
        let sig = hex(&s.mac("models/a", now + 60).finalize().into_bytes());
        assert!(s.check("models/a", now + 60, &sig));
        assert!(!s.check("models/b", now + 60, &sig), "another key");
        assert!(!s.check("models/a", now + 61, &sig), "another expiry");
        assert!(
            !Signer::new("other").check("models/a", now + 60, &sig),
            "another server"
        );
        let old = hex(&s.mac("models/a", now - 1).finalize().into_bytes());
        assert!(!s.check("models/a", now - 1, &old), "expired");
        assert!(!s.check("models/a", now + 60, "zz"), "not hex");
        let url = s.url("models/x y/model.gguf", DOWNLOAD_TTL);
        assert!(url.starts_with("/blobs/models/x%20y/model.gguf?expires="), "{url}");
    }
}
