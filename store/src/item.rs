use serde_json::{Map, Value};

use crate::error::{StoreError, StoreResult};

/// A primary key: partition key + sort key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Key {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
}

/// Attribute names with a meaning to the backends.
pub mod attr {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const GSI1PK: &str = "gsi1pk";
    pub const GSI1SK: &str = "gsi1sk";
    pub const TTL: &str = "ttl";
    pub const VER: &str = "ver";
}

/// One stored item: a flat JSON object holding the key attributes, optional index keys,
/// optional `ttl`, the `ver` counter and the record's own fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Item(pub Map<String, Value>);

impl Item {
    pub fn key(&self) -> StoreResult<Key> {
        Ok(Key::new(self.str_attr(attr::PK)?, self.str_attr(attr::SK)?))
    }

    /// The item's gsi1 key, when it is in the index.
    pub fn gsi1(&self) -> Option<Key> {
        let pk = self.0.get(attr::GSI1PK)?.as_str()?;
        let sk = self.0.get(attr::GSI1SK)?.as_str()?;
        Some(Key::new(pk, sk))
    }

    pub fn ttl(&self) -> Option<i64> {
        self.0.get(attr::TTL).and_then(as_i64)
    }

    pub fn version(&self) -> u64 {
        self.0.get(attr::VER).and_then(as_i64).unwrap_or(0) as u64
    }

    pub fn is_expired(&self, now_secs: i64) -> bool {
        self.ttl().is_some_and(|t| t <= now_secs)
    }

    fn str_attr(&self, name: &str) -> StoreResult<&str> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Corrupt(format!("{:?}", self.0.get(attr::PK)), format!("missing {name}")))
    }
}

/// Numbers come back from DynamoDB as whatever serde_dynamo picks; accept integral floats too.
pub fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}
