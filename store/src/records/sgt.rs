//! SGT secrets and models.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::registry;
use super::training::{chunk_prefix, TrainChunk, TrainJob};
use super::{from_item, to_item, Record};
use crate::blobs::Blobs;
use crate::error::{StoreError, StoreResult};
use crate::item::Key;
use crate::keys::part;
use crate::table::{Cond, Query, Table, Write};
use crate::Stores;

/// A credential: an SGT secret or a `/api/v1` API key, which are the same thing. `hash` is an
/// argon2id PHC string (user-chosen SGT secrets) or `sha256$<hex>` (generated 256-bit keys, for
/// which a slow hash adds nothing); the secret itself is never stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Secret {
    pub secret_id: String,
    pub hash: String,
    pub doc: String,
    /// Expiry, epoch seconds.
    pub end_time: i64,
    pub updated_at: i64,
    /// The platform user this key belongs to. Secrets made by `update_auth_token` have none and
    /// act as their own SGT owner.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The permissions the key grants (within its user's); `None` grants all of them.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub ver: u64,
}

impl Record for Secret {
    fn key(&self) -> Key {
        Secret::key_for(&self.secret_id)
    }
    fn gsi1(&self) -> Option<Key> {
        let user = self.user_id.as_ref()?;
        Some(Key::new(format!("KEYS#{}", part(user)), part(&self.secret_id)))
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

impl Secret {
    pub fn key_for(secret_id: &str) -> Key {
        Key::new(format!("SECRET#{}", part(secret_id)), "SECRET")
    }

    /// Whose SGT models this credential reaches: its user's, or its own id's.
    pub fn owner(&self) -> &str {
        self.user_id.as_deref().unwrap_or(&self.secret_id)
    }
}

/// The latest checkpoint of a model's weights.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub blob: String,
    pub step: u64,
    pub loss: f64,
    /// Grows by one with every checkpoint; caches compare it.
    pub version: u64,
}

/// What a client keeps next to its model: any JSON value, handed back exactly as it was sent.
///
/// Stored as its JSON text in a one-field map, `{"json": "<text>"}`, so both backends keep it
/// byte for byte: DynamoDB's own types would turn `1.0` into `1` and refuse empty map keys. A
/// bare string is how `client_data` was stored before it could be any value; it reads back as
/// that same string.
#[derive(Clone, Debug)]
pub struct ClientData(Box<serde_json::value::RawValue>);

impl ClientData {
    /// `text` must be one JSON value; it is kept as written.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        serde_json::value::RawValue::from_string(text).map(ClientData)
    }

    /// A JSON string holding `s`.
    pub fn string(s: &str) -> Self {
        ClientData::from_json(serde_json::to_string(s).expect("a string serialises")).expect("valid JSON")
    }

    pub fn null() -> Self {
        ClientData::from_json("null".into()).expect("valid JSON")
    }

    /// The value's JSON text, as sent.
    pub fn json(&self) -> &serde_json::value::RawValue {
        &self.0
    }
}

impl PartialEq for ClientData {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredClientData {
    json: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ClientDataForms {
    Json(StoredClientData),
    Legacy(String),
}

impl Serialize for ClientData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredClientData {
            json: self.0.get().to_owned(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClientData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ClientDataForms::deserialize(d)? {
            ClientDataForms::Json(stored) => ClientData::from_json(stored.json).map_err(serde::de::Error::custom),
            ClientDataForms::Legacy(s) => Ok(ClientData::string(&s)),
        }
    }
}

/// An SGT model, owned by (owner, app_name, name).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SgtModel {
    pub model_id: String,
    pub owner: String,
    pub app_name: String,
    pub name: String,
    pub model_type: String,
    pub client_data: ClientData,
    pub in_size: u32,
    pub out_size: u32,
    pub is_public: bool,
    /// Seeds the initial weights, so an untrained model answers deterministically.
    pub seed: u64,
    pub created_at: i64,
    #[serde(default)]
    pub checkpoint: Option<Checkpoint>,
    /// Number of training-data uploads so far; a job trains until it has seen this version.
    #[serde(default)]
    pub data_version: u64,
    #[serde(default)]
    pub samples: u64,
    #[serde(default)]
    pub ver: u64,
}

pub const PUBLIC_INDEX: &str = "SGTPUBLIC";

impl Record for SgtModel {
    fn key(&self) -> Key {
        SgtModel::key_for(&self.owner, &self.app_name, &self.name)
    }
    fn gsi1(&self) -> Option<Key> {
        self.is_public.then(|| {
            Key::new(
                PUBLIC_INDEX,
                format!("{}#{}#{}", part(&self.owner), part(&self.app_name), part(&self.name)),
            )
        })
    }
    fn ver(&self) -> u64 {
        self.ver
    }
}

impl SgtModel {
    /// A private `std` model with no data, no checkpoint and `null` client data.
    pub fn new(model_id: &str, (owner, app_name, name): (&str, &str, &str), in_size: u32, out_size: u32) -> SgtModel {
        SgtModel {
            model_id: model_id.into(),
            owner: owner.into(),
            app_name: app_name.into(),
            name: name.into(),
            model_type: "std".into(),
            client_data: ClientData::null(),
            in_size,
            out_size,
            is_public: false,
            seed: 1,
            created_at: crate::now_secs(),
            checkpoint: None,
            data_version: 0,
            samples: 0,
            ver: 0,
        }
    }

    pub fn key_for(owner: &str, app_name: &str, name: &str) -> Key {
        Key::new(
            format!("USER#{}", part(owner)),
            format!("SGTMODEL#{}#{}", part(app_name), part(name)),
        )
    }

    /// Where this model's blobs live; deleting the prefix deletes them all.
    pub fn blob_prefix(&self) -> String {
        format!("sgt/{}/", self.model_id)
    }
}

/// How many times an optimistic update is retried before giving up.
const CAS_RETRIES: usize = 32;

/// SGT records and their access patterns.
#[derive(Clone)]
pub struct SgtRepo {
    pub table: Arc<dyn Table>,
    pub blobs: Arc<dyn Blobs>,
}

/// Why appending training data failed.
#[derive(Debug)]
pub enum AppendError {
    NoModel,
    Store(StoreError),
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        AppendError::Store(e)
    }
}

impl SgtRepo {
    pub fn new(stores: &Stores) -> Self {
        SgtRepo {
            table: stores.table.clone(),
            blobs: stores.blobs.clone(),
        }
    }

    pub async fn get<R: Record>(&self, key: &Key) -> StoreResult<Option<R>> {
        self.table.get(key).await?.map(from_item).transpose()
    }

    pub async fn get_secret(&self, secret_id: &str) -> StoreResult<Option<Secret>> {
        self.get(&Secret::key_for(secret_id)).await
    }

    /// Creates or replaces a secret.
    pub async fn put_secret(&self, secret: &Secret) -> StoreResult<()> {
        self.table.put(to_item(secret)?, Cond::Always).await
    }

    pub async fn get_model(&self, owner: &str, app_name: &str, name: &str) -> StoreResult<Option<SgtModel>> {
        self.get(&SgtModel::key_for(owner, app_name, name)).await
    }

    /// Creates a model, and its entry in the model registry; `ConditionFailed` when
    /// (owner, app_name, name) is taken.
    pub async fn create_model(&self, model: &SgtModel) -> StoreResult<()> {
        let mirror = registry::sgt_mirror(model);
        let mut writes = vec![Write::Put {
            item: to_item(model)?,
            cond: Cond::NotExists,
        }];
        writes.extend(registry::create_writes(&mirror)?);
        self.table.write(writes).await?;
        registry::count_model(&*self.table, &mirror, 1).await
    }

    pub async fn list_models(&self, owner: &str) -> StoreResult<Vec<SgtModel>> {
        let q = Query::primary(format!("USER#{}", part(owner)), "SGTMODEL#");
        self.table.query(&q).await?.into_iter().map(from_item).collect()
    }

    pub async fn list_public_models(&self) -> StoreResult<Vec<SgtModel>> {
        let q = Query::gsi1(PUBLIC_INDEX, "");
        self.table.query(&q).await?.into_iter().map(from_item).collect()
    }

    /// Read-modify-write with optimistic concurrency. `None` when the model does not exist.
    pub async fn update_model(
        &self,
        key: &Key,
        mut change: impl FnMut(&mut SgtModel),
    ) -> StoreResult<Option<SgtModel>> {
        for _ in 0..CAS_RETRIES {
            let Some(mut model) = self.get::<SgtModel>(key).await? else {
                return Ok(None);
            };
            let expected = model.ver;
            change(&mut model);
            model.ver = expected + 1;
            match self.table.put(to_item(&model)?, Cond::Version(expected)).await {
                Ok(()) => return Ok(Some(model)),
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::backend("too much contention updating a model"))
    }

    /// Deletes a model, its job, its training data and its blobs. The record and job go in one
    /// transaction; the rest is keyed by the dead model id, so a crash half-way leaves only
    /// unreachable leftovers, never a half-deleted visible model. For the same reason a failure
    /// to clear those leftovers is logged, not returned: the model is gone either way.
    pub async fn delete_model(&self, owner: &str, app_name: &str, name: &str) -> StoreResult<Option<SgtModel>> {
        let key = SgtModel::key_for(owner, app_name, name);
        for _ in 0..CAS_RETRIES {
            let Some(model) = self.get::<SgtModel>(&key).await? else {
                return Ok(None);
            };
            // Its registry entry, as it stands now (likes move its listing entries).
            let mirror: Option<registry::Model> = self.get(&registry::Model::key_for(&model.model_id)).await?;
            let mut writes = vec![
                Write::Delete {
                    key: key.clone(),
                    cond: Cond::Version(model.ver),
                },
                Write::Delete {
                    key: TrainJob::key_for(&model.model_id),
                    cond: Cond::Always,
                },
            ];
            writes.extend(mirror.iter().flat_map(registry::delete_writes));
            match self.table.write(writes).await {
                Ok(()) => {
                    if let Some(m) = &mirror {
                        registry::count_model(&*self.table, m, -1).await?;
                    }
                }
                // Changed or deleted under us: read the current state again.
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.purge_model_data(&model.model_id).await {
                tracing::warn!(model_id = %model.model_id, error = %e, "deleted model's data left behind");
            }
            return Ok(Some(model));
        }
        Err(StoreError::backend("too much contention deleting a model"))
    }

    async fn purge_model_data(&self, model_id: &str) -> StoreResult<()> {
        for chunk in self
            .table
            .query(&Query::primary(chunk_prefix(model_id), "CHUNK#"))
            .await?
        {
            self.table.delete(chunk.key()?, Cond::Always).await?;
        }
        for blob in self.blobs.list(&format!("sgt/{model_id}/")).await? {
            self.blobs.delete(&blob).await?;
        }
        Ok(())
    }

    /// Stores a batch of training samples (`rows` samples as little-endian f32, inputs then
    /// labels) and queues training. The blob is written first and the records that reference
    /// it after, in one transaction, so a crash never leaves a record without its data.
    pub async fn append_train_data(
        &self,
        owner: &str,
        app_name: &str,
        name: &str,
        rows: u64,
        data: bytes::Bytes,
    ) -> Result<SgtModel, AppendError> {
        let key = SgtModel::key_for(owner, app_name, name);
        let Some(first) = self.get::<SgtModel>(&key).await? else {
            return Err(AppendError::NoModel);
        };
        let blob = format!("{}data/{}.f32", first.blob_prefix(), uuid::Uuid::new_v4());
        self.blobs.put(&blob, data).await?;
        let mut outcome = AppendError::Store(StoreError::backend("too much contention appending training data"));
        for _ in 0..CAS_RETRIES {
            let Some(mut model) = self.get::<SgtModel>(&key).await? else {
                outcome = AppendError::NoModel;
                break;
            };
            if model.model_id != first.model_id {
                // Deleted and re-created meanwhile: this data belonged to the old one.
                outcome = AppendError::NoModel;
                break;
            }
            let expected = model.ver;
            model.data_version += 1;
            model.samples += rows;
            model.ver += 1;
            let chunk = TrainChunk {
                model_id: model.model_id.clone(),
                seq: model.data_version,
                blob: blob.clone(),
                rows,
                ver: 0,
            };
            let job = self.get::<TrainJob>(&TrainJob::key_for(&model.model_id)).await?;
            let job_write = TrainJob::queued(job, &model);
            let writes = vec![
                Write::Put {
                    item: to_item(&model)?,
                    cond: Cond::Version(expected),
                },
                Write::Put {
                    item: to_item(&chunk)?,
                    cond: Cond::NotExists,
                },
                job_write,
            ];
            match self.table.write(writes).await {
                Ok(()) => return Ok(model),
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Only here is it certain that no record points at the blob. After a store error the
        // write may still have landed, and a stray blob is safer than a chunk without data.
        self.blobs.delete(&blob).await.ok();
        Err(outcome)
    }

    /// Copies `source` (weights and fields) to `new_name` under `owner`. `ConditionFailed` when
    /// the target name is taken.
    pub async fn clone_model(
        &self,
        source: &SgtModel,
        owner: &str,
        new_name: &str,
        model_id: String,
    ) -> StoreResult<SgtModel> {
        let mut source = source.clone();
        for _ in 0..CAS_RETRIES {
            match self.try_clone(&source, owner, new_name, &model_id).await {
                Err(StoreError::Backend(e)) => {
                    // Training may have replaced (and removed) the checkpoint we were copying:
                    // retry from a fresh read, unless the source did not change.
                    let fresh = self.get::<SgtModel>(&source.key()).await?;
                    match fresh {
                        Some(f) if f.model_id == source.model_id && f.checkpoint != source.checkpoint => source = f,
                        _ => return Err(StoreError::Backend(e)),
                    }
                }
                other => return other,
            }
        }
        Err(StoreError::backend(
            "the source model kept changing while it was cloned",
        ))
    }

    async fn try_clone(&self, source: &SgtModel, owner: &str, new_name: &str, model_id: &str) -> StoreResult<SgtModel> {
        let mut copy = source.clone();
        copy.model_id = model_id.to_string();
        copy.owner = owner.to_string();
        copy.name = new_name.to_string();
        copy.created_at = crate::now_secs();
        copy.data_version = 0;
        copy.samples = 0;
        copy.ver = 0;
        if self.table.get(&copy.key()).await?.is_some() {
            return Err(StoreError::ConditionFailed);
        }
        if let Some(ck) = &source.checkpoint {
            let blob = format!("{}ckpt/{}.safetensors", copy.blob_prefix(), uuid::Uuid::new_v4());
            self.blobs.copy(&ck.blob, &blob).await?;
            copy.checkpoint = Some(Checkpoint { blob, ..ck.clone() });
        }
        if let Err(e) = self.create_model(&copy).await {
            if let Some(ck) = &copy.checkpoint {
                self.blobs.delete(&ck.blob).await.ok();
            }
            return Err(e);
        }
        Ok(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(text: &str) -> serde_json::Value {
        serde_json::to_value(ClientData::from_json(text.into()).unwrap()).unwrap()
    }

    #[test]
    fn client_data_keeps_its_json_text_exactly() {
        for text in [
            r#"{"k":[1.0,{"":null}],"z":"é"}"#,
            "1.0",
            "-0",
            "[]",
            "{}",
            "null",
            "true",
            r#""s""#,
            "12345678901234567890123",
        ] {
            let back: ClientData = serde_json::from_value(stored(text)).unwrap();
            assert_eq!(back.json().get(), text);
        }
    }

    #[test]
    fn client_data_stored_as_a_bare_string_reads_back_as_that_string() {
        let back: ClientData = serde_json::from_value(serde_json::json!("{\"k\": 1}")).unwrap();
        assert_eq!(back.json().get(), r#""{\"k\": 1}""#);
    }

    #[test]
    fn client_data_must_be_one_json_value() {
        assert!(ClientData::from_json("{".into()).is_err());
        assert!(ClientData::from_json("1 2".into()).is_err());
        assert!(serde_json::from_value::<ClientData>(serde_json::json!({"json": "{"})).is_err());
    }
}
