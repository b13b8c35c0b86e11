use async_trait::async_trait;
use bytes::Bytes;

use crate::error::StoreResult;

/// S3-style object storage. Every `put` is atomic: a reader sees the old object or the new
/// one, never a torn one.
#[async_trait]
pub trait Blobs: Send + Sync + 'static {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()>;
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>>;
    /// Deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    async fn copy(&self, from: &str, to: &str) -> StoreResult<()>;
    /// Keys under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>>;
    /// A URL that reads `key` without credentials until `ttl` passes, where the backend can
    /// make one (S3). The embedded store cannot: whoever serves it signs its own URLs.
    async fn presign_get(&self, _key: &str, _ttl: std::time::Duration) -> StoreResult<Option<String>> {
        Ok(None)
    }

    /// An object's size, or `None` when it is missing.
    async fn size(&self, key: &str) -> StoreResult<Option<u64>>;
    /// Up to `len` bytes of an object from `start`, or `None` when it is missing.
    async fn get_range(&self, key: &str, start: u64, len: u64) -> StoreResult<Option<Bytes>>;

    /// Starts a multipart upload to `key` and returns its id. Parts are numbered from 1; each
    /// but the last must hold at least [`MIN_PART`] bytes, as S3 requires.
    async fn create_upload(&self, key: &str) -> StoreResult<String>;
    /// A URL that PUTs part `part` of an upload until `ttl` passes, where the backend can make
    /// one (S3); the embedded store cannot, and its server signs its own.
    async fn presign_part(
        &self,
        _key: &str,
        _upload: &str,
        _part: u32,
        _ttl: std::time::Duration,
    ) -> StoreResult<Option<String>> {
        Ok(None)
    }
    /// Stores one part and returns its ETag.
    async fn put_part(&self, key: &str, upload: &str, part: u32, data: Bytes) -> StoreResult<String>;
    /// Joins the named parts, in order, into the object. `Upload` when the upload is gone, or a
    /// part is missing, out of order, not the one uploaded, or under [`MIN_PART`] but last.
    async fn complete_upload(&self, key: &str, upload: &str, parts: &[Part]) -> StoreResult<()>;
    /// Drops an upload and its parts; an upload already gone is not an error.
    async fn abort_upload(&self, key: &str, upload: &str) -> StoreResult<()>;
}

/// The smallest part S3 accepts, but for the last.
pub const MIN_PART: u64 = 5 << 20;

/// One part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Part {
    pub number: u32,
    pub etag: String,
    #[serde(default)]
    pub size: u64,
}
