//! The AWS backend: DynamoDB for the table and S3 for blobs. The same code talks to AWS,
//! LocalStack or moto; only `AWS_ENDPOINT_URL` differs.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::blobs::{Blobs, Part};
use crate::error::{StoreError, StoreResult};
use crate::item::{attr, Item, Key};
use crate::table::{Cond, Index, Query, Table, Write};

pub const GSI1: &str = "gsi1";
/// S3 multipart kicks in above this size; parts are this big.
const MULTIPART_PART: usize = 16 * 1024 * 1024;

/// Loads the standard AWS configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

pub fn s3_client(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    // Path-style works everywhere, including LocalStack and moto on one port.
    let s3 = aws_sdk_s3::config::Builder::from(conf).force_path_style(true).build();
    aws_sdk_s3::Client::from_conf(s3)
}

pub struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
}

impl DynamoTable {
    pub fn new(client: aws_sdk_dynamodb::Client, name: impl Into<String>) -> Self {
        DynamoTable {
            client,
            name: name.into(),
        }
    }
}

fn to_av(item: &Item) -> StoreResult<HashMap<String, AttributeValue>> {
    serde_dynamo::to_item(&item.0).map_err(StoreError::backend)
}

fn from_av(av: HashMap<String, AttributeValue>) -> StoreResult<Item> {
    serde_dynamo::from_item(av)
        .map(Item)
        .map_err(|e| StoreError::Corrupt("dynamodb".into(), e.to_string()))
}

fn key_av(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (attr::PK.to_string(), AttributeValue::S(key.pk.clone())),
        (attr::SK.to_string(), AttributeValue::S(key.sk.clone())),
    ])
}

/// A condition as a DynamoDB expression, with its names and values.
struct Expr {
    text: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

fn expr(cond: &Cond) -> Expr {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let text = match cond {
        Cond::Always => None,
        Cond::NotExists => {
            names.insert("#ttl".into(), attr::TTL.into());
            values.insert(":now".into(), AttributeValue::N(crate::now_secs().to_string()));
            Some("attribute_not_exists(pk) OR (attribute_exists(#ttl) AND #ttl <= :now)".into())
        }
        Cond::Exists => Some("attribute_exists(pk)".into()),
        Cond::Version(v) => {
            names.insert("#ver".into(), attr::VER.into());
            values.insert(":ver".into(), AttributeValue::N(v.to_string()));
            Some("#ver = :ver".into())
        }
    };
    Expr { text, names, values }
}

fn opt_map<V>(m: HashMap<String, V>) -> Option<HashMap<String, V>> {
    (!m.is_empty()).then_some(m)
}

fn sdk_err<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e
        .as_service_error()
        .and_then(|s| s.code())
        .unwrap_or_default()
        .to_string();
    match code.as_str() {
        "ConditionalCheckFailedException" => StoreError::ConditionFailed,
        "TransactionCanceledException" if format!("{e:?}").contains("ConditionalCheckFailed") => {
            StoreError::ConditionFailed
        }
        _ => StoreError::backend(format!(
            "dynamodb {code}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        )),
    }
}

/// Applies a condition's expression, names and values to any DynamoDB write builder.
macro_rules! conditioned {
    ($builder:expr, $cond:expr) => {{
        let e = expr($cond);
        $builder
            .set_condition_expression(e.text)
            .set_expression_attribute_names(opt_map(e.names))
            .set_expression_attribute_values(opt_map(e.values))
    }};
}

/// One write of a transaction; `None` for a check that asserts nothing.
fn transact_item(w: Write, table: &str) -> StoreResult<Option<TransactWriteItem>> {
    let b = TransactWriteItem::builder();
    let built = match w {
        Write::Put { item, cond } => {
            let put = conditioned!(Put::builder().table_name(table).set_item(Some(to_av(&item)?)), &cond);
            b.put(put.build().map_err(StoreError::backend)?)
        }
        Write::Delete { key, cond } => {
            let del = conditioned!(Delete::builder().table_name(table).set_key(Some(key_av(&key))), &cond);
            b.delete(del.build().map_err(StoreError::backend)?)
        }
        Write::Check { cond: Cond::Always, .. } => return Ok(None),
        Write::Check { key, cond } => {
            let check = conditioned!(
                ConditionCheck::builder().table_name(table).set_key(Some(key_av(&key))),
                &cond
            );
            b.condition_check(check.build().map_err(StoreError::backend)?)
        }
    };
    Ok(Some(built.build()))
}

#[async_trait]
impl Table for DynamoTable {
    async fn add(&self, key: &Key, counter: &str, by: i64, ttl: Option<i64>) -> StoreResult<i64> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key_av(key)))
            .expression_attribute_names("#n", counter)
            .expression_attribute_values(":by", AttributeValue::N(by.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew);
        update = match ttl {
            Some(t) => update
                .update_expression("ADD #n :by SET #ttl = if_not_exists(#ttl, :ttl)")
                .expression_attribute_names("#ttl", attr::TTL)
                .expression_attribute_values(":ttl", AttributeValue::N(t.to_string())),
            None => update.update_expression("ADD #n :by"),
        };
        let out = update.send().await.map_err(sdk_err)?;
        out.attributes
            .and_then(|a| a.get(counter).cloned())
            .and_then(|v| v.as_n().ok().and_then(|n| n.parse().ok()))
            .ok_or_else(|| StoreError::backend("dynamodb: counter missing from the update's answer"))
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key_av(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        let now = crate::now_secs();
        Ok(out.item.map(from_av).transpose()?.filter(|i| !i.is_expired(now)))
    }

    async fn query(&self, q: &Query) -> StoreResult<Vec<Item>> {
        let (pk, sk) = match q.index {
            Index::Primary => (attr::PK, attr::SK),
            Index::Gsi1 => (attr::GSI1PK, attr::GSI1SK),
        };
        let now = crate::now_secs();
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        q.check_cursor()?;
        let mut start = q
            .after
            .as_ref()
            .map(|after| key_av(&Key::new(q.pk.clone(), after.clone())));
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.name)
                .expression_attribute_names("#pk", pk)
                .expression_attribute_values(":pk", AttributeValue::S(q.pk.clone()))
                .scan_index_forward(!q.descending)
                .set_exclusive_start_key(start.take());
            // DynamoDB refuses an empty prefix; an empty prefix means the whole partition.
            req = if q.sk_prefix.is_empty() {
                req.key_condition_expression("#pk = :pk")
            } else {
                req.key_condition_expression("#pk = :pk AND begins_with(#sk, :sk)")
                    .expression_attribute_names("#sk", sk)
                    .expression_attribute_values(":sk", AttributeValue::S(q.sk_prefix.clone()))
            };
            if q.index == Index::Gsi1 {
                req = req.index_name(GSI1);
            } else {
                req = req.consistent_read(true);
            }
            let page = req.send().await.map_err(sdk_err)?;
            for av in page.items.unwrap_or_default() {
                let item = from_av(av)?;
                if !item.is_expired(now) {
                    out.push(item);
                }
            }
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn write(&self, mut writes: Vec<Write>) -> StoreResult<()> {
        // Single puts and deletes skip the transaction API: cheaper, and the same semantics.
        match (writes.len(), writes.pop()) {
            (1, Some(Write::Put { item, cond })) => {
                let put = self
                    .client
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(to_av(&item)?));
                conditioned!(put, &cond).send().await.map_err(sdk_err)?;
            }
            (1, Some(Write::Delete { key, cond })) => {
                let del = self
                    .client
                    .delete_item()
                    .table_name(&self.name)
                    .set_key(Some(key_av(&key)));
                conditioned!(del, &cond).send().await.map_err(sdk_err)?;
            }
            (_, last) => {
                writes.extend(last);
                let mut items = Vec::with_capacity(writes.len());
                for w in writes {
                    items.extend(transact_item(w, &self.name)?);
                }
                if !items.is_empty() {
                    self.client
                        .transact_write_items()
                        .set_transact_items(Some(items))
                        .send()
                        .await
                        .map_err(sdk_err)?;
                }
            }
        }
        Ok(())
    }
}

pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Blobs {
            client,
            bucket: bucket.into(),
        }
    }

    /// A large object in parts, through the same multipart calls presigned uploads use.
    async fn put_multipart(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let id = self.create_upload(key).await?;
        let mut parts = Vec::new();
        for (i, chunk) in data.chunks(MULTIPART_PART).enumerate() {
            let number = i as u32 + 1;
            match self.put_part(key, &id, number, data.slice_ref(chunk)).await {
                Ok(etag) => parts.push(Part {
                    number,
                    etag,
                    size: chunk.len() as u64,
                }),
                Err(e) => {
                    let _ = self.abort_upload(key, &id).await;
                    return Err(e);
                }
            }
        }
        self.complete_upload(key, &id, &parts).await
    }
}

/// S3's `NoSuchUpload` is the client's doing (an upload that expired or was finished); other
/// failures are the backend's.
fn upload_err<E, R>(e: aws_sdk_s3::error::SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let message = match e.as_service_error().and_then(|s| s.code()) {
        Some("NoSuchUpload") => "no such upload",
        Some("InvalidPart") => "a part was never uploaded, or its ETag is not the uploaded part's",
        Some("InvalidPartOrder") => "parts must be listed in rising order",
        Some("EntityTooSmall") => "a part that is not the last is smaller than 5 MiB",
        _ => return s3_err(e),
    };
    StoreError::Upload(message.into())
}

fn s3_err<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    e: aws_sdk_s3::error::SdkError<E, R>,
) -> StoreError {
    StoreError::backend(format!("s3: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
}

#[async_trait]
impl Blobs for S3Blobs {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        if data.len() > MULTIPART_PART {
            return self.put_multipart(key, data).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(s3_err)?;
        Ok(())
    }

    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> StoreResult<Option<String>> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl).map_err(StoreError::backend)?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(s3_err)?;
        Ok(Some(req.uri().to_string()))
    }

    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_err(e)),
        }
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> StoreResult<Option<Bytes>> {
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        let range = format!("bytes={start}-{}", start + len - 1);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.body.collect().await.map_err(StoreError::backend)?.into_bytes(),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            // A start past the end: nothing there, as the embedded store answers.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => Ok(Some(Bytes::new())),
            Err(e) => Err(s3_err(e)),
        }
    }

    async fn create_upload(&self, key: &str) -> StoreResult<String> {
        let up = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_err)?;
        Ok(up.upload_id().unwrap_or_default().to_string())
    }

    async fn presign_part(
        &self,
        key: &str,
        upload: &str,
        part: u32,
        ttl: std::time::Duration,
    ) -> StoreResult<Option<String>> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl).map_err(StoreError::backend)?;
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .part_number(part as i32)
            .presigned(config)
            .await
            .map_err(s3_err)?;
        Ok(Some(req.uri().to_string()))
    }

    async fn put_part(&self, key: &str, upload: &str, part: u32, data: Bytes) -> StoreResult<String> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .part_number(part as i32)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(upload_err)?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn complete_upload(&self, key: &str, upload: &str, parts: &[Part]) -> StoreResult<()> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(upload_err)?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload: &str) -> StoreResult<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            Err(e) => Err(s3_err(e)),
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(
                out.body.collect().await.map_err(StoreError::backend)?.into_bytes(),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(s3_err(e)),
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_err)?;
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(format!("{}/{}", self.bucket, from))
            .send()
            .await
            .map_err(s3_err)?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_err)?;
            out.extend(page.contents.unwrap_or_default().into_iter().filter_map(|o| o.key));
        }
        out.sort();
        Ok(out)
    }
}

/// Creates the table (with gsi1 and TTL) and the bucket when missing. Idempotent.
pub async fn provision(conf: &aws_config::SdkConfig, table: &str, bucket: &str) -> anyhow::Result<()> {
    let ddb = aws_sdk_dynamodb::Client::new(conf);
    if ddb.describe_table().table_name(table).send().await.is_err() {
        let s = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let k = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build();
        let created = ddb
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(vec![
                s(attr::PK)?,
                s(attr::SK)?,
                s(attr::GSI1PK)?,
                s(attr::GSI1SK)?,
            ]))
            .key_schema(k(attr::PK, KeyType::Hash)?)
            .key_schema(k(attr::SK, KeyType::Range)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(GSI1)
                    .key_schema(k(attr::GSI1PK, KeyType::Hash)?)
                    .key_schema(k(attr::GSI1SK, KeyType::Range)?)
                    .projection(Projection::builder().projection_type(ProjectionType::All).build())
                    .build()?,
            )
            .send()
            .await;
        if let Err(e) = created {
            // Another process may have created it between our describe and create.
            if !format!("{e:?}").contains("ResourceInUse") {
                return Err(anyhow::anyhow!(
                    "create table {table}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                ));
            }
        }
        ddb.update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attr::TTL)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .ok();
    }
    let s3 = s3_client(conf);
    if s3.head_bucket().bucket(bucket).send().await.is_err() {
        if let Err(e) = s3.create_bucket().bucket(bucket).send().await {
            let text = format!("{e:?}");
            if !text.contains("BucketAlreadyOwnedByYou") && !text.contains("BucketAlreadyExists") {
                return Err(anyhow::anyhow!(
                    "create bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ));
            }
        }
    }
    Ok(())
}
