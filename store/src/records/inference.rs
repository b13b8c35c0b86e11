//! Inference records: deployments (a model pinned with its default parameters and serving
//! spec), their counters, and each caller's history of calls.
//!
//! A user holds at most [`MAX_DEPLOYMENTS`] deployments. Each one takes a numbered slot item in
//! the same transaction that writes it, so two concurrent creates can never both take the last
//! place.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::registry::{use_key, use_marker};
use super::{from_item, to_item, Record};
use crate::error::{StoreError, StoreResult};
use crate::item::Key;
use crate::table::{Cond, Query, Table, Write};
use crate::Stores;

/// Deployments a user may hold at once (seed 003 §12.2).
pub const MAX_DEPLOYMENTS: u32 = 10;

/// A model pinned for serving. `config` is the seed's object (replicas, hardware,
/// autoscaling, `inference_config`), checked at the API's edge and kept as given.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Deployment {
    pub deployment_id: String,
    pub owner: String,
    pub name: String,
    pub model_id: String,
    #[serde(default)]
    pub model_version: Option<String>,
    /// What the engine serves it as, when that is not `model_id` (a registry version:
    /// `{model_id}@{version}`).
    #[serde(default)]
    pub engine_model: Option<String>,
    pub config: Value,
    #[serde(default)]
    pub project_id: Option<String>,
    /// The place it takes among its owner's [`MAX_DEPLOYMENTS`].
    pub slot: u32,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl Deployment {
    /// The model id the engine serves this deployment with.
    pub fn engine_model(&self) -> &str {
        self.engine_model.as_deref().unwrap_or(&self.model_id)
    }

    pub fn key_for(id: &str) -> Key {
        Key::new(format!("DEPLOY#{id}"), "DEPLOY")
    }

    /// Where its counters live (see [`InferenceRepo::count`]).
    pub fn metrics_key(id: &str) -> Key {
        Key::new(format!("DEPLOY#{id}"), "METRICS")
    }
}

fn owner_index(owner: &str) -> String {
    format!("DEPLOYS#{owner}")
}

impl Record for Deployment {
    fn key(&self) -> Key {
        Deployment::key_for(&self.deployment_id)
    }
    fn gsi1(&self) -> Option<Key> {
        Some(Key::new(
            owner_index(&self.owner),
            format!("{:012}#{}", self.created_at, self.deployment_id),
        ))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// The marker of one taken deployment place.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Slot {
    owner: String,
    slot: u32,
    deployment_id: String,
    #[serde(default)]
    ver: u64,
}

impl Slot {
    fn key_for(owner: &str, slot: u32) -> Key {
        Key::new(format!("DEPLOYSLOT#{owner}"), format!("{slot:02}"))
    }
}

impl Record for Slot {
    fn key(&self) -> Key {
        Slot::key_for(&self.owner, self.slot)
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// One call, as the caller's history shows it. Kept until `ttl` (epoch seconds).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    pub id: String,
    pub owner: String,
    /// Epoch milliseconds.
    pub at_ms: i64,
    /// The API that was called: `chat`, `completion`, `embedding`, `generate`, ...
    pub kind: String,
    pub model: String,
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// `success` or `error`.
    pub status: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    /// The start of the prompt and of the answer, cut to a few hundred characters.
    pub prompt: String,
    pub output: String,
    #[serde(default)]
    pub error: Option<String>,
    pub ttl: i64,
    #[serde(default)]
    pub ver: u64,
}

fn history_pk(owner: &str) -> String {
    format!("HISTORY#{owner}")
}

impl Record for HistoryEntry {
    fn key(&self) -> Key {
        Key::new(history_pk(&self.owner), format!("{:013}#{}", self.at_ms, self.id))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// Why a deployment could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// The owner holds [`MAX_DEPLOYMENTS`] already.
    Full,
    Store(StoreError),
}

impl From<StoreError> for CreateError {
    fn from(e: StoreError) -> Self {
        CreateError::Store(e)
    }
}

#[derive(Clone)]
pub struct InferenceRepo {
    pub table: Arc<dyn Table>,
}

impl InferenceRepo {
    pub fn new(stores: &Stores) -> Self {
        InferenceRepo {
            table: stores.table.clone(),
        }
    }

    pub async fn deployment(&self, id: &str) -> StoreResult<Option<Deployment>> {
        self.table
            .get(&Deployment::key_for(id))
            .await?
            .map(from_item)
            .transpose()
    }

    /// The owner's deployments, oldest first.
    pub async fn deployments(&self, owner: &str) -> StoreResult<Vec<Deployment>> {
        let items = self.table.query(&Query::gsi1(owner_index(owner), "")).await?;
        items.into_iter().map(from_item).collect()
    }

    /// Writes a new deployment in a free slot of its owner's; `slot` is set here. Slots taken
    /// by a concurrent create are skipped.
    pub async fn create(&self, mut d: Deployment) -> Result<Deployment, CreateError> {
        let taken: Vec<u32> = self
            .table
            .query(&Query::primary(format!("DEPLOYSLOT#{}", d.owner), ""))
            .await?
            .into_iter()
            .map(from_item::<Slot>)
            .map(|s| s.map(|s| s.slot))
            .collect::<StoreResult<_>>()?;
        for slot in (0..MAX_DEPLOYMENTS).filter(|s| !taken.contains(s)) {
            d.slot = slot;
            let marker = Slot {
                owner: d.owner.clone(),
                slot,
                deployment_id: d.deployment_id.clone(),
                ver: 0,
            };
            let writes = vec![
                Write::Put {
                    item: to_item(&d)?,
                    cond: Cond::NotExists,
                },
                Write::Put {
                    item: to_item(&marker)?,
                    cond: Cond::NotExists,
                },
                Write::Put {
                    item: use_marker(&d.model_id, "deployment", &d.deployment_id),
                    cond: Cond::Always,
                },
            ];
            match self.table.write(writes).await {
                Ok(()) => return Ok(d),
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CreateError::Full)
    }

    /// Replaces a deployment that still has the version it was read with.
    /// Writes `d` over the stored `old`; a change of model moves the deployment's use marker.
    pub async fn update(&self, old: &Deployment, d: &Deployment) -> StoreResult<Deployment> {
        let mut next = d.clone();
        next.ver = old.ver + 1;
        let mut writes = vec![Write::Put {
            item: to_item(&next)?,
            cond: Cond::Version(old.ver),
        }];
        if old.model_id != next.model_id {
            writes.push(Write::Delete {
                key: use_key(&old.model_id, "deployment", &old.deployment_id),
                cond: Cond::Always,
            });
            writes.push(Write::Put {
                item: use_marker(&next.model_id, "deployment", &next.deployment_id),
                cond: Cond::Always,
            });
        }
        self.table.write(writes).await?;
        Ok(next)
    }

    /// Removes a deployment, its slot and its counters together.
    pub async fn delete(&self, d: &Deployment) -> StoreResult<()> {
        self.table
            .write(vec![
                Write::Delete {
                    key: d.key(),
                    cond: Cond::Version(d.ver),
                },
                Write::Delete {
                    key: Slot::key_for(&d.owner, d.slot),
                    cond: Cond::Always,
                },
                Write::Delete {
                    key: Deployment::metrics_key(&d.deployment_id),
                    cond: Cond::Always,
                },
                Write::Delete {
                    key: use_key(&d.model_id, "deployment", &d.deployment_id),
                    cond: Cond::Always,
                },
            ])
            .await
    }

    /// Adds `by` to one of a deployment's counters.
    pub async fn count(&self, deployment_id: &str, counter: &str, by: i64) -> StoreResult<i64> {
        self.table
            .add(&Deployment::metrics_key(deployment_id), counter, by, None)
            .await
    }

    /// Every counter of a deployment, by name (none yet: empty).
    pub async fn counters(&self, deployment_id: &str) -> StoreResult<serde_json::Map<String, Value>> {
        Ok(self
            .table
            .get(&Deployment::metrics_key(deployment_id))
            .await?
            .map(|item| item.0)
            .unwrap_or_default())
    }

    pub async fn record(&self, entry: &HistoryEntry) -> StoreResult<()> {
        self.table.put(to_item(entry)?, Cond::Always).await
    }

    /// The owner's calls still kept, newest first.
    pub async fn history(&self, owner: &str) -> StoreResult<Vec<HistoryEntry>> {
        let items = self.table.query(&Query::primary(history_pk(owner), "")).await?;
        let mut entries: Vec<HistoryEntry> = items.into_iter().map(from_item).collect::<StoreResult<_>>()?;
        entries.reverse();
        Ok(entries)
    }
}
