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
}
