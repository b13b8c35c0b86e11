//! Persistent state shared by the API functions and the sidecar.
//!
//! Two traits carry everything: [`Table`] (a handful of DynamoDB operations: get, conditional
//! put/delete, query by partition + sort-key prefix, query the one GSI, transactional write,
//! TTL) and [`Blobs`] (S3-style objects). Records and their access patterns are written once,
//! in [`records`], on top of those traits; the backends ([`aws`], [`embedded`]) only move bytes.
//!
//! # Key schema (single table)
//!
//! | record            | pk                      | sk                          | gsi1pk       | gsi1sk                      |
//! |-------------------|-------------------------|-----------------------------|--------------|-----------------------------|
//! | SGT secret        | `SECRET#{secret_id}`    | `SECRET`                    |              |                             |
//! | SGT model         | `USER#{owner}`          | `SGTMODEL#{app}#{name}`     | `SGTPUBLIC` (public only) | `{owner}#{app}#{name}` |
//! | training chunk    | `SGTDATA#{model_id}`    | `CHUNK#{seq:010}`           |              |                             |
//! | training job      | `SGTJOB#{model_id}`     | `JOB`                       | `SGTJOBS` (while not done) | `{model_id}`   |
//!
//! User-supplied parts (`owner`, `app`, `name`) are escaped by [`keys::part`] so a `#` in a name
//! can never forge another key. Every item carries `ver` (optimistic concurrency: writers put
//! with [`Cond::Version`]) and may carry `ttl` (epoch seconds; expired items are filtered on
//! read by both backends, because DynamoDB deletes them late and the embedded store never).
//!
//! # Access patterns
//! - secret by id: `get(SECRET#id, SECRET)`
//! - a user's models: `query(USER#owner, prefix SGTMODEL#)`
//! - a model by (owner, app, name): `get`
//! - all public models: `query_index(gsi1, SGTPUBLIC)`
//! - a model's training data: `query(SGTDATA#model_id, prefix CHUNK#)`
//! - runnable training jobs: `query_index(gsi1, SGTJOBS)` (sparse: done jobs drop out)

pub mod aws;
pub mod blobs;
pub mod config;
pub mod embedded;
pub mod error;
pub mod item;
pub mod keys;
pub mod records;
pub mod table;

pub use blobs::Blobs;
pub use config::{StoreConfig, Stores};
pub use error::{StoreError, StoreResult};
pub use item::{Item, Key};
pub use table::{Cond, Query, Table, Write};

/// Seconds since the Unix epoch, the unit of `ttl` and of every stored timestamp.
pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Milliseconds since the Unix epoch, for leases.
pub fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
