//! The model registry: models, their versions, likes, and the listing index.
//!
//! A model's record, its versions and its likes share the partition `MODEL#{id}`. Lists walk
//! a listing index instead of the models: one small entry per model and sort field, under
//! `MODELIDX#public` (everyone's public models, built-ins included) or `MODELIDX#private#{owner}`
//! (one owner's private ones), with a sort key `{field}#{sortable value}#{id}`. A page is read
//! from the entries after a cursor, so its cost follows the page, not the table. Every write
//! that changes a sort value moves its entries in the same transaction as the record, guarded
//! by the record's `ver`, so the index never disagrees with the records.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{from_item, to_item, Record};
use crate::error::{StoreError, StoreResult};
use crate::item::{Item, Key};
use crate::keys::part;
use crate::table::{Cond, Query, Write};
use crate::Stores;

/// Who owns the built-in models.
pub const PLATFORM_OWNER: &str = "maas";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Model {
    pub model_id: String,
    pub owner: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `llm`, `embedding`, `sgt`, ...
    pub model_type: String,
    #[serde(default)]
    pub category: String,
    /// `public` or `private`.
    pub visibility: String,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub latest_version: Option<String>,
    #[serde(default)]
    pub download_count: u64,
    #[serde(default)]
    pub like_count: u64,
    /// What the latest ready version's files say: parameter count, format, tasks, hardware.
    #[serde(default)]
    pub metadata: Value,
    #[serde(default)]
    pub project_id: Option<String>,
    /// The model this one was cloned from.
    #[serde(default)]
    pub cloned_from: Option<String>,
    #[serde(default)]
    pub base_model: Option<String>,
    /// Epoch milliseconds, so that lists sorted by time keep the order things happened in.
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl Model {
    pub fn key_for(id: &str) -> Key {
        Key::new(partition(id), "MODEL")
    }

    pub fn is_public(&self) -> bool {
        self.visibility == "public"
    }

    /// Whether `user` may see it: public models are everyone's, private ones their owner's.
    pub fn visible_to(&self, user: &str) -> bool {
        self.is_public() || self.owner == user
    }

    fn index_partition(&self) -> String {
        if self.is_public() {
            "MODELIDX#public".into()
        } else {
            private_partition(&self.owner)
        }
    }

    /// The words `search` looks in: name, description and tags, lower-cased.
    fn search_text(&self) -> String {
        let mut text = format!("{}\n{}", self.name, self.description);
        for tag in &self.tags {
            text.push('\n');
            text.push_str(tag);
        }
        text.to_lowercase()
    }

    /// The listing entries this model holds, one per sort field.
    fn entries(&self) -> Vec<Item> {
        SortField::ALL
            .iter()
            .map(|field| {
                let key = Key::new(self.index_partition(), field.sort_key(self));
                let mut item = Item(serde_json::Map::new());
                item.0.insert("pk".into(), key.pk.into());
                item.0.insert("sk".into(), key.sk.into());
                item.0.insert("model_id".into(), self.model_id.clone().into());
                item.0.insert("model_type".into(), self.model_type.clone().into());
                item.0.insert("category".into(), self.category.clone().into());
                item.0.insert("search".into(), self.search_text().into());
                item
            })
            .collect()
    }
}

/// The registry's view of an SGT model: type `sgt`, named `{app}/{name}`, with its shape as
/// metadata. It is written and deleted with the SGT model itself, in the same transaction, so
/// the registry lists SGT models under the SGT API's ownership and visibility.
pub fn sgt_mirror(m: &super::sgt::SgtModel) -> Model {
    let at = m.created_at.saturating_mul(1000);
    Model {
        model_id: m.model_id.clone(),
        owner: m.owner.clone(),
        name: format!("{}/{}", m.app_name, m.name),
        description: String::new(),
        model_type: "sgt".into(),
        category: m.model_type.clone(),
        visibility: if m.is_public { "public" } else { "private" }.into(),
        license: None,
        tags: vec!["sgt".into()],
        latest_version: None,
        download_count: 0,
        like_count: 0,
        metadata: serde_json::json!({
            "model_format": "sgt",
            "app_name": m.app_name,
            "sgt_name": m.name,
            "in_size": m.in_size,
            "out_size": m.out_size,
            "parameters_count": (m.in_size as u64 + 1) * m.out_size as u64,
        }),
        project_id: None,
        cloned_from: None,
        base_model: None,
        created_at: at,
        updated_at: at,
        ver: 0,
    }
}

/// The writes that add a new model and its listing entries (the count is added after).
pub fn create_writes(model: &Model) -> StoreResult<Vec<Write>> {
    let mut writes = vec![Write::Put {
        item: to_item(model)?,
        cond: Cond::NotExists,
    }];
    writes.extend(model.entries().into_iter().map(|item| Write::Put {
        item,
        cond: Cond::Always,
    }));
    Ok(writes)
}

/// The writes that remove a model as read (`ver` included) and its listing entries.
pub fn delete_writes(model: &Model) -> Vec<Write> {
    let mut writes = vec![Write::Delete {
        key: model.key(),
        cond: Cond::Version(model.ver),
    }];
    writes.extend(model.entries().iter().map(|e| Write::Delete {
        key: e.key().expect("entries have keys"),
        cond: Cond::Always,
    }));
    writes
}

/// The counters a model counts in, on its scope's count item: all models, and by type, by
/// category, and by both, so that lists filtered that way know their total without a walk.
pub fn counter_names(model: &Model) -> [String; 4] {
    counters_for(Some(&model.model_type), Some(&model.category))
}

fn counters_for(model_type: Option<&str>, category: Option<&str>) -> [String; 4] {
    let (t, c) = (model_type.unwrap_or_default(), category.unwrap_or_default());
    ["n".into(), format!("t#{t}"), format!("c#{c}"), format!("tc#{t}#{c}")]
}

/// The one counter that holds a filter's total, when one does (no `search`).
fn counter_for(filter: &Filter) -> Option<String> {
    if !filter.search.is_empty() {
        return None;
    }
    let [n, t, c, tc] = counters_for(filter.model_type.as_deref(), filter.category.as_deref());
    Some(match (&filter.model_type, &filter.category) {
        (None, None) => n,
        (Some(_), None) => t,
        (None, Some(_)) => c,
        (Some(_), Some(_)) => tc,
    })
}

/// Keeps a scope's counts: +1 or -1 as a model enters or leaves it.
pub async fn count_model(table: &dyn crate::Table, model: &Model, by: i64) -> StoreResult<()> {
    let key = count_key(&model.index_partition());
    for name in counter_names(model) {
        table.add(&key, &name, by, None).await?;
    }
    Ok(())
}

/// The count item of a scope, where [`counter_names`] live.
pub fn count_key_of(model: &Model) -> Key {
    count_key(&model.index_partition())
}

fn partition(id: &str) -> String {
    format!("MODEL#{}", part(id))
}

fn private_partition(owner: &str) -> String {
    format!("MODELIDX#private#{}", part(owner))
}

impl Record for Model {
    fn key(&self) -> Key {
        Model::key_for(&self.model_id)
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// What lists sort by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortField {
    CreatedAt,
    UpdatedAt,
    DownloadCount,
    LikeCount,
    Name,
}

impl SortField {
    pub const ALL: [SortField; 5] = [
        SortField::CreatedAt,
        SortField::UpdatedAt,
        SortField::DownloadCount,
        SortField::LikeCount,
        SortField::Name,
    ];

    pub fn parse(s: &str) -> Option<SortField> {
        SortField::ALL.into_iter().find(|f| f.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SortField::CreatedAt => "created_at",
            SortField::UpdatedAt => "updated_at",
            SortField::DownloadCount => "download_count",
            SortField::LikeCount => "like_count",
            SortField::Name => "name",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            SortField::CreatedAt => "c",
            SortField::UpdatedAt => "u",
            SortField::DownloadCount => "d",
            SortField::LikeCount => "l",
            SortField::Name => "n",
        }
    }

    /// `{tag}#{value}#{id}`, with numbers zero-padded so that byte order is numeric order, and
    /// names lower-cased (then cut, so an entry stays small) so that order ignores case.
    fn sort_key(self, m: &Model) -> String {
        let value = match self {
            SortField::CreatedAt => format!("{:016}", m.created_at.max(0)),
            SortField::UpdatedAt => format!("{:016}", m.updated_at.max(0)),
            SortField::DownloadCount => format!("{:020}", m.download_count),
            SortField::LikeCount => format!("{:020}", m.like_count),
            SortField::Name => part(&m.name.to_lowercase().chars().take(64).collect::<String>()),
        };
        format!("{}#{value}#{}", self.tag(), part(&m.model_id))
    }

    fn prefix(self) -> String {
        format!("{}#", self.tag())
    }
}

/// Which models a list shows, besides the caller's visibility.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub model_type: Option<String>,
    pub category: Option<String>,
    /// Lower-cased words that must all appear in the name, description or tags.
    pub search: Vec<String>,
}

impl Filter {
    fn matches(&self, entry: &Item) -> bool {
        let field = |name: &str| entry.0.get(name).and_then(Value::as_str).unwrap_or_default();
        self.model_type.as_deref().is_none_or(|t| field("model_type") == t)
            && self.category.as_deref().is_none_or(|c| field("category") == c)
            && self.search.iter().all(|w| field("search").contains(w.as_str()))
    }
}

/// Which listing partitions a caller's list reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Public models and the caller's private ones.
    Visible,
    Public,
    /// The caller's private models.
    Private,
}

pub struct ListRequest<'a> {
    pub user: &'a str,
    pub scope: Scope,
    pub filter: Filter,
    pub sort: SortField,
    pub descending: bool,
    /// Continue after this entry (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Matches to pass over first, for page numbers without a cursor.
    pub skip: usize,
    pub limit: usize,
}

pub struct ListPage {
    pub models: Vec<Model>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// One of a model's versions. Its files lie in the bucket under `blob_prefix`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelVersion {
    pub model_id: String,
    /// Semantic version, unique within its model.
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// `uploading`, `ready` or `failed`.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub files: Vec<VersionFile>,
    /// What the files' headers say (see the API's metadata reader).
    #[serde(default)]
    pub metadata: Value,
    /// The task checking an uploaded version's digests.
    #[serde(default)]
    pub task_id: Option<String>,
    pub created_at: i64,
    /// While `uploading`: when the upload's URLs stop working (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// While `uploading`: when the store forgets an abandoned version (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(default)]
    pub ver: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionFile {
    /// The file's name within the version, such as `model.gguf` or `config.json`.
    pub name: String,
    /// Where it lies in the bucket.
    pub blob: String,
    /// Its size and digest: as declared while uploading, as checked once ready.
    pub size: u64,
    pub sha256: String,
    /// While uploading: the bucket's multipart upload id, and the size of each part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    #[serde(default)]
    pub part_size: u64,
}

impl ModelVersion {
    pub fn key_for(model_id: &str, version: &str) -> Key {
        Key::new(partition(model_id), format!("VERSION#{}", part(version)))
    }

    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

impl Record for ModelVersion {
    fn key(&self) -> Key {
        ModelVersion::key_for(&self.model_id, &self.version)
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// One user's like of one model; its existence is the like.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Like {
    model_id: String,
    user: String,
    at: i64,
    #[serde(default)]
    ver: u64,
}

impl Like {
    fn key_for(model_id: &str, user: &str) -> Key {
        Key::new(partition(model_id), format!("LIKE#{}", part(user)))
    }
}

impl Record for Like {
    fn key(&self) -> Key {
        Like::key_for(&self.model_id, &self.user)
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

/// The marker that says `what` (`deployment`, `job`) `id` uses model `model_id`. Whoever
/// starts using a model writes it in the same transaction; deleting the model is refused while
/// one exists.
pub fn use_marker(model_id: &str, what: &str, id: &str) -> Item {
    let key = use_key(model_id, what, id);
    let mut item = Item(serde_json::Map::new());
    item.0.insert("pk".into(), key.pk.into());
    item.0.insert("sk".into(), key.sk.into());
    item
}

pub fn use_key(model_id: &str, what: &str, id: &str) -> Key {
    Key::new(partition(model_id), format!("USE#{what}#{}", part(id)))
}

fn count_key(scope_partition: &str) -> Key {
    Key::new(scope_partition, "COUNT")
}

/// How many times a write retries when another writer changed the model first.
const RETRIES: usize = 16;

#[derive(Clone)]
pub struct RegistryRepo {
    table: Arc<dyn crate::Table>,
}

impl RegistryRepo {
    pub fn new(stores: &Stores) -> Self {
        RegistryRepo {
            table: stores.table.clone(),
        }
    }

    pub async fn get(&self, id: &str) -> StoreResult<Option<Model>> {
        self.table.get(&Model::key_for(id)).await?.map(from_item).transpose()
    }

    /// Writes a new model, its listing entries and its versions together; `ConditionFailed` if
    /// the id is taken.
    pub async fn create(&self, model: &Model, versions: &[ModelVersion]) -> StoreResult<()> {
        let mut writes = vec![Write::Put {
            item: to_item(model)?,
            cond: Cond::NotExists,
        }];
        writes.extend(model.entries().into_iter().map(|item| Write::Put {
            item,
            cond: Cond::Always,
        }));
        for v in versions {
            writes.push(Write::Put {
                item: to_item(v)?,
                cond: Cond::NotExists,
            });
        }
        self.table.write(writes).await?;
        count_model(&*self.table, model, 1).await
    }

    /// Replaces `old` (as read, `ver` included) with `new`, moving its listing entries, plus
    /// `extra` writes, all or nothing. `ConditionFailed` when someone else wrote first.
    async fn replace(&self, old: &Model, new: &Model, extra: Vec<Write>) -> StoreResult<Model> {
        let mut next = new.clone();
        next.ver = old.ver + 1;
        let mut writes = vec![Write::Put {
            item: to_item(&next)?,
            cond: Cond::Version(old.ver),
        }];
        let fresh: Vec<Item> = next.entries();
        for gone in old.entries() {
            let key = gone.key()?;
            if !fresh.iter().any(|f| f.key().ok().as_ref() == Some(&key)) {
                writes.push(Write::Delete {
                    key,
                    cond: Cond::Always,
                });
            }
        }
        writes.extend(fresh.into_iter().map(|item| Write::Put {
            item,
            cond: Cond::Always,
        }));
        writes.extend(extra);
        self.table.write(writes).await?;
        let counted = |m: &Model| (m.index_partition(), counter_names(m));
        if counted(old) != counted(&next) {
            count_model(&*self.table, old, -1).await?;
            count_model(&*self.table, &next, 1).await?;
        }
        Ok(next)
    }

    /// Applies `change` to the current model and writes it, reading again when another writer
    /// got there first. `change` answers `None` to leave the model as it is.
    pub async fn update<F>(&self, id: &str, mut change: F) -> StoreResult<Option<Model>>
    where
        F: FnMut(&Model) -> Option<(Model, Vec<Write>)>,
    {
        for _ in 0..RETRIES {
            let Some(old) = self.get(id).await? else {
                return Ok(None);
            };
            let Some((new, extra)) = change(&old) else {
                return Ok(Some(old));
            };
            match self.replace(&old, &new, extra).await {
                Err(StoreError::ConditionFailed) => continue,
                other => return other.map(Some),
            }
        }
        Err(StoreError::ConditionFailed)
    }

    /// Deletes the model, its versions, likes and listing entries. Returns the versions, whose
    /// files the caller deletes from the bucket.
    pub async fn delete(&self, model: &Model) -> StoreResult<Vec<ModelVersion>> {
        self.table.write(delete_writes(model)).await?;
        count_model(&*self.table, model, -1).await?;
        let rest = self
            .table
            .query(&Query::primary(partition(&model.model_id), ""))
            .await?;
        let mut versions = Vec::new();
        for chunk in rest.chunks(25) {
            let mut writes = Vec::new();
            for item in chunk {
                if let Ok(v) = from_item::<ModelVersion>(item.clone()) {
                    versions.push(v);
                }
                writes.push(Write::Delete {
                    key: item.key()?,
                    cond: Cond::Always,
                });
            }
            self.table.write(writes).await?;
        }
        Ok(versions)
    }

    /// What uses the model (`deployment {id}`, ...), as their use markers say.
    pub async fn users_of(&self, id: &str) -> StoreResult<Vec<String>> {
        let items = self.table.query(&Query::primary(partition(id), "USE#")).await?;
        Ok(items
            .iter()
            .filter_map(|i| i.key().ok())
            .filter_map(|k| k.sk.strip_prefix("USE#").map(|u| u.replacen('#', " ", 1)))
            .collect())
    }

    pub async fn versions(&self, id: &str) -> StoreResult<Vec<ModelVersion>> {
        let items = self.table.query(&Query::primary(partition(id), "VERSION#")).await?;
        items.into_iter().map(from_item).collect()
    }

    pub async fn version(&self, id: &str, version: &str) -> StoreResult<Option<ModelVersion>> {
        self.table
            .get(&ModelVersion::key_for(id, version))
            .await?
            .map(from_item)
            .transpose()
    }

    /// Adds a version; `ConditionFailed` if the model already has one by that name.
    /// `latest` is the model as it becomes (its `latest_version` and metadata).
    pub async fn add_version(&self, v: &ModelVersion, latest: impl Fn(&Model) -> Model) -> StoreResult<Option<Model>> {
        let version = to_item(v)?;
        let mut taken = false;
        let out = self
            .update(&v.model_id, |m| {
                let add = Write::Put {
                    item: version.clone(),
                    cond: Cond::NotExists,
                };
                Some((latest(m), vec![add]))
            })
            .await;
        if let Err(StoreError::ConditionFailed) = out {
            taken = self.version(&v.model_id, &v.version).await?.is_some();
        }
        if taken {
            return Err(StoreError::ConditionFailed);
        }
        out
    }

    /// Writes a version that is starting to upload; `ConditionFailed` if the name is taken.
    pub async fn start_version(&self, v: &ModelVersion) -> StoreResult<()> {
        self.table.put(to_item(v)?, Cond::NotExists).await
    }

    /// Replaces a version as read (`ver` included) and the model with it, all or nothing.
    pub async fn finish_version(
        &self,
        old: &ModelVersion,
        new: &ModelVersion,
        model: impl Fn(&Model) -> Model,
    ) -> StoreResult<Option<Model>> {
        let mut next = new.clone();
        next.ver = old.ver + 1;
        let item = to_item(&next)?;
        self.update(&old.model_id, |m| {
            let write = Write::Put {
                item: item.clone(),
                cond: Cond::Version(old.ver),
            };
            Some((model(m), vec![write]))
        })
        .await
    }

    /// Replaces version `old` with `new`, with `more` writes (a task) in the same transaction,
    /// leaving the model as it is.
    pub async fn finish_version_with(
        &self,
        old: &ModelVersion,
        new: &ModelVersion,
        more: Vec<Write>,
    ) -> StoreResult<()> {
        let mut next = new.clone();
        next.ver = old.ver + 1;
        let mut writes = vec![Write::Put {
            item: to_item(&next)?,
            cond: Cond::Version(old.ver),
        }];
        writes.extend(more);
        self.table.write(writes).await
    }

    /// Whether `user` likes the model.
    pub async fn liked(&self, id: &str, user: &str) -> StoreResult<bool> {
        Ok(self.table.get(&Like::key_for(id, user)).await?.is_some())
    }

    /// Likes (or, with `like` false, unlikes) a model; doing it twice changes nothing.
    pub async fn set_like(&self, id: &str, user: &str, like: bool) -> StoreResult<Option<Model>> {
        let like_item = to_item(&Like {
            model_id: id.into(),
            user: user.into(),
            at: crate::now_millis(),
            ver: 0,
        })?;
        let key = Like::key_for(id, user);
        for _ in 0..RETRIES {
            let Some(old) = self.get(id).await? else {
                return Ok(None);
            };
            if self.liked(id, user).await? == like {
                return Ok(Some(old));
            }
            let mut new = old.clone();
            let write = if like {
                new.like_count += 1;
                Write::Put {
                    item: like_item.clone(),
                    cond: Cond::NotExists,
                }
            } else {
                new.like_count = new.like_count.saturating_sub(1);
                Write::Delete {
                    key: key.clone(),
                    cond: Cond::Exists,
                }
            };
            match self.replace(&old, &new, vec![write]).await {
                Err(StoreError::ConditionFailed) => continue,
                other => return other.map(Some),
            }
        }
        Err(StoreError::ConditionFailed)
    }

    /// Counts one download.
    pub async fn count_download(&self, id: &str) -> StoreResult<Option<Model>> {
        self.update(id, |m| {
            let mut new = m.clone();
            new.download_count += 1;
            Some((new, vec![]))
        })
        .await
    }

    /// How many models match a filter. Without `search` a counter holds it (one read per
    /// scope); with it, a walk over the listing entries of one sort field, which are small and
    /// hold what filters look at, never over the models themselves.
    pub async fn count(&self, user: &str, scope: Scope, filter: &Filter) -> StoreResult<u64> {
        let mut total = 0;
        for p in partitions(user, scope) {
            total += match counter_for(filter) {
                Some(name) => {
                    let item = self.table.get(&count_key(&p)).await?;
                    let n = item.and_then(|i| i.0.get(&name).and_then(crate::item::as_i64));
                    n.unwrap_or(0).max(0) as u64
                }
                None => {
                    let q = Query::primary(p, SortField::CreatedAt.prefix());
                    self.table.query(&q).await?.iter().filter(|e| filter.matches(e)).count() as u64
                }
            };
        }
        Ok(total)
    }

    /// One page of models, in order, from the listing entries of the scope's partitions,
    /// merged. Entries are read in pages of a few hundred, so a selective filter walks further
    /// but never reads a model that does not match.
    pub async fn list(&self, req: &ListRequest<'_>) -> StoreResult<ListPage> {
        let prefix = req.sort.prefix();
        if req.cursor.as_deref().is_some_and(|c| !c.starts_with(&prefix)) {
            return Err(StoreError::Corrupt("cursor".into(), "not a cursor of this sort".into()));
        }
        let want = req.skip + req.limit + 1;
        let mut streams = Vec::new();
        for p in partitions(req.user, req.scope) {
            streams.push(self.matching(&p, &prefix, req, want).await?);
        }
        let mut merged: Vec<(String, String)> = streams.into_iter().flatten().collect();
        merged.sort_by(|a, b| if req.descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
        let page: Vec<(String, String)> = merged.into_iter().skip(req.skip).take(req.limit + 1).collect();
        let more = page.len() > req.limit;
        let page = &page[..page.len().min(req.limit)];
        let next_cursor = if more {
            page.last().map(|(sk, _)| sk.clone())
        } else {
            None
        };
        let reads = page.iter().map(|(_, id)| self.get(id));
        let models = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(ListPage { models, next_cursor })
    }

    /// Up to `want` matching entries of one partition after the cursor: (sort key, model id).
    async fn matching(
        &self,
        p: &str,
        prefix: &str,
        req: &ListRequest<'_>,
        want: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        const READ: usize = 256;
        let mut out = Vec::new();
        let mut after = req.cursor.clone();
        loop {
            let q = Query::primary(p, prefix)
                .limit(READ.max(want))
                .after(after.clone())
                .descending(req.descending);
            let entries = self.table.query(&q).await?;
            let last = entries.len() < READ.max(want);
            for e in &entries {
                let key = e.key()?;
                after = Some(key.sk.clone());
                if req.filter.matches(e) {
                    let id = e.0.get("model_id").and_then(Value::as_str).unwrap_or_default();
                    out.push((key.sk, id.to_string()));
                }
            }
            if out.len() >= want || last {
                out.truncate(want);
                return Ok(out);
            }
        }
    }
}

fn partitions(user: &str, scope: Scope) -> Vec<String> {
    match scope {
        Scope::Visible => vec!["MODELIDX#public".into(), private_partition(user)],
        Scope::Public => vec!["MODELIDX#public".into()],
        Scope::Private => vec![private_partition(user)],
    }
}

/// Orders versions as semantic versions (`1.10.0` after `1.9.0`), or as text where one is not.
pub fn semver_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

impl Model {
    /// The model once its `version` is ready: that is its latest, with its metadata, unless a
    /// newer version is.
    pub fn with_ready_version(&self, version: &str, metadata: &Value) -> Model {
        let mut m = self.clone();
        if self
            .latest_version
            .as_deref()
            .is_none_or(|l| semver_cmp(version, l).is_gt())
        {
            m.latest_version = Some(version.to_string());
            m.metadata = metadata.clone();
        }
        m.updated_at = crate::now_millis();
        m
    }
}
