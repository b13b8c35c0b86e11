use async_trait::async_trait;

use crate::error::StoreResult;
use crate::item::{Item, Key};

/// A write's precondition, evaluated atomically with the write.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// Write unconditionally.
    Always,
    /// The item must not exist (an expired item counts as absent).
    NotExists,
    /// The item must exist.
    Exists,
    /// The item must exist with exactly this `ver` (optimistic concurrency).
    Version(u64),
}

/// One write in a transaction.
#[derive(Clone, Debug)]
pub enum Write {
    Put {
        item: Item,
        cond: Cond,
    },
    Delete {
        key: Key,
        cond: Cond,
    },
    /// Asserts a condition on an item without writing it.
    Check {
        key: Key,
        cond: Cond,
    },
}

/// Which key a query walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index {
    Primary,
    Gsi1,
}

/// A query: every item whose partition key equals `pk` and whose sort key starts with
/// `sk_prefix`, in sort-key order.
#[derive(Clone, Debug)]
pub struct Query {
    pub index: Index,
    pub pk: String,
    pub sk_prefix: String,
    pub limit: Option<usize>,
}

impl Query {
    pub fn primary(pk: impl Into<String>, sk_prefix: impl Into<String>) -> Self {
        Query {
            index: Index::Primary,
            pk: pk.into(),
            sk_prefix: sk_prefix.into(),
            limit: None,
        }
    }

    pub fn gsi1(pk: impl Into<String>, sk_prefix: impl Into<String>) -> Self {
        Query {
            index: Index::Gsi1,
            pk: pk.into(),
            sk_prefix: sk_prefix.into(),
            limit: None,
        }
    }
}

/// The DynamoDB operations the records need, and nothing more.
#[async_trait]
pub trait Table: Send + Sync + 'static {
    /// The item under `key`, unless it is missing or expired.
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>>;

    /// Items matching the query (expired items are left out).
    async fn query(&self, query: &Query) -> StoreResult<Vec<Item>>;

    /// Applies all writes or none. Fails with `ConditionFailed` if any condition does not hold.
    async fn write(&self, writes: Vec<Write>) -> StoreResult<()>;

    /// Atomically adds `by` to the numeric attribute `counter` of the item under `key`
    /// (creating the item, with `ttl`, when it is missing) and returns the new value. Rate
    /// limits and usage counters live here so they hold across many Lambda instances.
    async fn add(&self, key: &Key, counter: &str, by: i64, ttl: Option<i64>) -> StoreResult<i64>;

    /// Convenience for a single conditional put.
    async fn put(&self, item: Item, cond: Cond) -> StoreResult<()> {
        self.write(vec![Write::Put { item, cond }]).await
    }

    /// Convenience for a single conditional delete.
    async fn delete(&self, key: Key, cond: Cond) -> StoreResult<()> {
        self.write(vec![Write::Delete { key, cond }]).await
    }
}
