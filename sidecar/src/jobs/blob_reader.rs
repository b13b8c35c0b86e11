//! A blob read as a blocking `std::io::Read`, for parsers that stream: a task on the runtime
//! fetches ranges ahead (at most two in flight), and the reader takes them as it goes. Memory
//! stays at a few ranges whatever the blob's size.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use maas_store::Blobs;
use tokio::sync::mpsc;

/// Bytes fetched at a time.
const RANGE: u64 = 8 << 20;

pub struct BlobReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    canceled: Arc<AtomicBool>,
}

impl BlobReader {
    /// Starts reading `size` bytes of `key`. Reads fail once `canceled` turns true. Must be
    /// called on the runtime; the reader is used on a blocking thread.
    pub fn open(blobs: Arc<dyn Blobs>, key: String, size: u64, canceled: Arc<AtomicBool>) -> BlobReader {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut at = 0;
            while at < size {
                let chunk = match blobs.get_range(&key, at, RANGE).await {
                    Ok(Some(c)) if !c.is_empty() => c,
                    Ok(_) => {
                        let _ = tx.send(Err(format!("{key} ends at {at} bytes"))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string())).await;
                        return;
                    }
                };
                at += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        BlobReader {
            rx,
            current: Bytes::new(),
            canceled,
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.canceled.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("canceled"));
        }
        if self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
