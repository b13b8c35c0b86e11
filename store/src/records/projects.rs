//! Projects (seed 002): a user's named groups of models, deployments, datasets and jobs. What a
//! project holds is counted on a counts item beside it, moved by whoever attaches or detaches a
//! member, so `stats` never walks the members.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{from_item, to_item, Record};
use crate::error::StoreResult;
use crate::item::{as_i64, Key};
use crate::keys::part;
use crate::table::{Cond, Query, Table, Write};
use crate::Stores;

/// The kinds of member a project counts.
pub const MEMBERS: [&str; 4] = ["models", "deployments", "datasets", "jobs"];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Project {
    pub project_id: String,
    pub owner: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl Project {
    pub fn key_for(id: &str) -> Key {
        Key::new(format!("PROJECT#{}", part(id)), "PROJECT")
    }

    fn counts_key(id: &str) -> Key {
        Key::new(format!("PROJECT#{}", part(id)), "COUNTS")
    }
}

impl Record for Project {
    fn key(&self) -> Key {
        Project::key_for(&self.project_id)
    }
    fn gsi1(&self) -> Option<Key> {
        Some(Key::new(
            format!("PROJECTS#{}", part(&self.owner)),
            format!("{:016}#{}", self.created_at.max(0), part(&self.project_id)),
        ))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// How many of each member kind a project holds, in [`MEMBERS`] order.
pub type Counts = [u64; 4];

#[derive(Clone)]
pub struct ProjectRepo {
    table: Arc<dyn Table>,
}

impl ProjectRepo {
    pub fn new(stores: &Stores) -> Self {
        ProjectRepo {
            table: stores.table.clone(),
        }
    }

    pub async fn get(&self, id: &str) -> StoreResult<Option<Project>> {
        self.table.get(&Project::key_for(id)).await?.map(from_item).transpose()
    }

    /// The owner's projects, oldest first.
    pub async fn list(&self, owner: &str) -> StoreResult<Vec<Project>> {
        let q = Query::gsi1(format!("PROJECTS#{}", part(owner)), "");
        self.table.query(&q).await?.into_iter().map(from_item).collect()
    }

    pub async fn create(&self, p: &Project) -> StoreResult<()> {
        self.table.put(to_item(p)?, Cond::NotExists).await
    }

    /// Writes `p` over the stored version it was read as; `ConditionFailed` if it changed.
    pub async fn update(&self, p: &Project) -> StoreResult<Project> {
        let mut next = p.clone();
        next.ver = p.ver + 1;
        self.table.put(to_item(&next)?, Cond::Version(p.ver)).await?;
        Ok(next)
    }

    /// Deletes the project and its counts, as read.
    pub async fn delete(&self, p: &Project) -> StoreResult<()> {
        self.table
            .write(vec![
                Write::Delete {
                    key: p.key(),
                    cond: Cond::Version(p.ver),
                },
                Write::Delete {
                    key: Project::counts_key(&p.project_id),
                    cond: Cond::Always,
                },
            ])
            .await
    }

    pub async fn counts(&self, id: &str) -> StoreResult<Counts> {
        let item = self.table.get(&Project::counts_key(id)).await?;
        let mut out = [0; 4];
        if let Some(item) = item {
            for (i, kind) in MEMBERS.iter().enumerate() {
                out[i] = item.0.get(*kind).and_then(as_i64).unwrap_or(0).max(0) as u64;
            }
        }
        Ok(out)
    }

    /// Counts a member of `kind` joining (`by` 1) or leaving (`by` -1) project `id`.
    pub async fn count(&self, id: &str, kind: &str, by: i64) -> StoreResult<()> {
        self.table.add(&Project::counts_key(id), kind, by, None).await.map(drop)
    }
}
