//! Typed records on top of [`Table`](crate::Table): how each one is keyed and written.

pub mod datasets;
pub mod identity;
pub mod inference;
pub mod projects;
pub mod registry;
pub mod sgt;
pub mod storage;
pub mod tasks;
pub mod training;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{StoreError, StoreResult};
use crate::item::{attr, Item, Key};

/// A typed record: its fields plus where it lives in the table.
pub trait Record: Serialize + DeserializeOwned {
    fn key(&self) -> Key;
    /// The record's gsi1 key, if it belongs in that index.
    fn gsi1(&self) -> Option<Key> {
        None
    }
    /// Optimistic-concurrency counter; stored as `ver`.
    fn ver(&self) -> u64;
}

pub fn to_item<R: Record>(r: &R) -> StoreResult<Item> {
    let Value::Object(mut map) = serde_json::to_value(r).map_err(StoreError::backend)? else {
        return Err(StoreError::backend("record is not an object"));
    };
    let key = r.key();
    map.insert(attr::PK.into(), key.pk.into());
    map.insert(attr::SK.into(), key.sk.into());
    if let Some(g) = r.gsi1() {
        map.insert(attr::GSI1PK.into(), g.pk.into());
        map.insert(attr::GSI1SK.into(), g.sk.into());
    }
    map.insert(attr::VER.into(), r.ver().into());
    Ok(Item(map))
}

pub fn from_item<R: Record>(item: Item) -> StoreResult<R> {
    let pk = item.0.get(attr::PK).cloned().unwrap_or_default();
    serde_json::from_value(Value::Object(item.0)).map_err(|e| StoreError::Corrupt(pk.to_string(), e.to_string()))
}
