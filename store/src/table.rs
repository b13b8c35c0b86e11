use async_trait::async_trait;

use crate::error::{StoreError, StoreResult};
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
/// `sk_prefix`, in sort-key order (byte order, as DynamoDB sorts strings).
#[derive(Clone, Debug)]
pub struct Query {
    pub index: Index,
    pub pk: String,
    pub sk_prefix: String,
    pub limit: Option<usize>,
    /// A page cursor: only sort keys strictly after this one (before it when `descending`).
    /// Primary index only: a GSI position would also need the table key of the last item.
    pub after: Option<String>,
    /// Highest sort key first.
    pub descending: bool,
}

impl Query {
    pub fn primary(pk: impl Into<String>, sk_prefix: impl Into<String>) -> Self {
        Query {
            index: Index::Primary,
            pk: pk.into(),
            sk_prefix: sk_prefix.into(),
            limit: None,
            after: None,
            descending: false,
        }
    }

    /// At most `n` items.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Continues a walk from the sort key `sk` (exclusive), in this query's direction.
    pub fn after(mut self, sk: Option<String>) -> Self {
        self.after = sk;
        self
    }

    /// Refuses a cursor that the backends cannot start from: one on a GSI, or one outside the
    /// query's prefix (DynamoDB refuses a start key beyond the key condition).
    pub fn check_cursor(&self) -> StoreResult<()> {
        match &self.after {
            Some(_) if self.index != Index::Primary => {
                Err(StoreError::backend("a cursor walks the primary index only"))
            }
            Some(after) if !after.starts_with(&self.sk_prefix) => {
                Err(StoreError::backend("a cursor outside its query"))
            }
            _ => Ok(()),
        }
    }

    pub fn descending(mut self, yes: bool) -> Self {
        self.descending = yes;
        self
    }

    pub fn gsi1(pk: impl Into<String>, sk_prefix: impl Into<String>) -> Self {
        Query {
            index: Index::Gsi1,
            pk: pk.into(),
            sk_prefix: sk_prefix.into(),
            limit: None,
            after: None,
            descending: false,
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
