//! A blob written as it is produced: bytes gather into parts that go up through the
//! multipart calls, so a file of any size takes one part's memory. A small file is one put.

use std::sync::Arc;

use bytes::Bytes;
use maas_store::blobs::Part;
use maas_store::{Blobs, StoreResult};

/// Bytes per part (S3 wants at least 5 MiB for all but the last).
const PART: usize = 16 << 20;

pub struct BlobWriter {
    blobs: Arc<dyn Blobs>,
    pub key: String,
    upload: Option<String>,
    buf: Vec<u8>,
    parts: Vec<Part>,
    size: u64,
}

impl BlobWriter {
    pub fn new(blobs: Arc<dyn Blobs>, key: String) -> BlobWriter {
        BlobWriter {
            blobs,
            key,
            upload: None,
            buf: Vec::new(),
            parts: Vec::new(),
            size: 0,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> StoreResult<()> {
        self.buf.extend_from_slice(bytes);
        self.size += bytes.len() as u64;
        if self.buf.len() >= PART {
            self.send_part().await?;
        }
        Ok(())
    }

    async fn send_part(&mut self) -> StoreResult<()> {
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let u = self.blobs.create_upload(&self.key).await?;
                self.upload = Some(u.clone());
                u
            }
        };
        let number = self.parts.len() as u32 + 1;
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let size = data.len() as u64;
        let etag = self.blobs.put_part(&self.key, &upload, number, data).await?;
        self.parts.push(Part { number, etag, size });
        Ok(())
    }

    /// Stores what is left and returns the blob's size.
    pub async fn finish(mut self) -> StoreResult<u64> {
        match self.upload.clone() {
            None => {
                self.blobs
                    .put(&self.key, Bytes::from(std::mem::take(&mut self.buf)))
                    .await?
            }
            Some(upload) => {
                if !self.buf.is_empty() {
                    self.send_part().await?;
                }
                self.blobs.complete_upload(&self.key, &upload, &self.parts).await?;
            }
        }
        Ok(self.size)
    }
}
