//! Bytes each user keeps in the bucket, against their storage quota. Counted when files become
//! theirs (a ready model version, a dataset) and given back when they are deleted; an upload is
//! checked against the quota before it starts, so an abandoned one never counts.

use std::sync::Arc;

use crate::error::StoreResult;
use crate::item::{as_i64, Key};
use crate::keys::part;
use crate::{Stores, Table};

#[derive(Clone)]
pub struct StorageRepo {
    table: Arc<dyn Table>,
}

fn key(user: &str) -> Key {
    Key::new(format!("STORAGE#{}", part(user)), "BYTES")
}

impl StorageRepo {
    pub fn new(stores: &Stores) -> Self {
        StorageRepo {
            table: stores.table.clone(),
        }
    }

    pub async fn used(&self, user: &str) -> StoreResult<u64> {
        let item = self.table.get(&key(user)).await?;
        Ok(item.and_then(|i| i.0.get("n").and_then(as_i64)).unwrap_or(0).max(0) as u64)
    }

    /// Adds (or, negative, gives back) bytes; returns the new total.
    pub async fn add(&self, user: &str, bytes: i64) -> StoreResult<i64> {
        self.table.add(&key(user), "n", bytes, None).await
    }
}
