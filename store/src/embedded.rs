//! The embedded backend: redb for the table (ACID, one file) and plain files for blobs,
//! written to a temporary name, fsynced and renamed so a crash never leaves a torn object.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::blobs::{Blobs, Part, MIN_PART};
use crate::error::{StoreError, StoreResult};
use crate::item::{Item, Key};
use crate::table::{Cond, Index, Query, Table, Write};

/// pk \0 sk -> the item as JSON.
const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");
/// gsi1pk \0 gsi1sk \0 pk \0 sk -> nothing; the value is looked up in ITEMS.
const GSI1: TableDefinition<&str, ()> = TableDefinition::new("gsi1");

const SEP: char = '\0';

fn primary_key(k: &Key) -> String {
    format!("{}{SEP}{}", k.pk, k.sk)
}

fn index_key(gsi: &Key, k: &Key) -> String {
    format!("{}{SEP}{}{SEP}{}{SEP}{}", gsi.pk, gsi.sk, k.pk, k.sk)
}

fn split_primary(s: &str) -> Key {
    let (pk, sk) = s.split_once(SEP).unwrap_or((s, ""));
    Key::new(pk, sk)
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::backend(format!("embedded table: {e}"))
}

pub struct EmbeddedTable {
    db: Arc<Database>,
}

impl EmbeddedTable {
    /// Opens (or creates) the table file. Only one process may hold it at a time.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(db_err)?;
        }
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(ITEMS).map_err(db_err)?;
        tx.open_table(GSI1).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(EmbeddedTable { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(db_err)?
    }
}

fn decode(bytes: &[u8]) -> StoreResult<Item> {
    serde_json::from_slice(bytes)
        .map(Item)
        .map_err(|e| StoreError::Corrupt("embedded".into(), e.to_string()))
}

fn read_item(items: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> StoreResult<Option<Item>> {
    match items.get(key).map_err(db_err)? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}

fn live(item: Option<Item>, now: i64) -> Option<Item> {
    item.filter(|i| !i.is_expired(now))
}

fn holds(cond: &Cond, current: Option<&Item>) -> bool {
    match cond {
        Cond::Always => true,
        Cond::NotExists => current.is_none(),
        Cond::Exists => current.is_some(),
        Cond::Version(v) => current.is_some_and(|i| i.version() == *v),
    }
}

fn write_key(w: &Write) -> StoreResult<Key> {
    match w {
        Write::Put { item, .. } => item.key(),
        Write::Delete { key, .. } | Write::Check { key, .. } => Ok(key.clone()),
    }
}

fn apply(db: &Database, writes: Vec<Write>) -> StoreResult<()> {
    let now = crate::now_secs();
    let tx = db.begin_write().map_err(db_err)?;
    {
        let mut items = tx.open_table(ITEMS).map_err(db_err)?;
        let mut gsi = tx.open_table(GSI1).map_err(db_err)?;
        // Check every condition before touching anything, so a failed transaction writes nothing.
        let mut olds = Vec::with_capacity(writes.len());
        for w in &writes {
            let key = write_key(w)?;
            let old = live(read_item(&items, &primary_key(&key))?, now);
            let cond = match w {
                Write::Put { cond, .. } | Write::Delete { cond, .. } | Write::Check { cond, .. } => cond,
            };
            if !holds(cond, old.as_ref()) {
                return Err(StoreError::ConditionFailed);
            }
            olds.push((key, old));
        }
        for (w, (key, old)) in writes.into_iter().zip(olds) {
            let pkey = primary_key(&key);
            if let Some(g) = old.as_ref().and_then(Item::gsi1) {
                gsi.remove(index_key(&g, &key).as_str()).map_err(db_err)?;
            }
            match w {
                Write::Put { item, .. } => {
                    let bytes = serde_json::to_vec(&item.0).map_err(db_err)?;
                    items.insert(pkey.as_str(), bytes.as_slice()).map_err(db_err)?;
                    if let Some(g) = item.gsi1() {
                        gsi.insert(index_key(&g, &key).as_str(), ()).map_err(db_err)?;
                    }
                }
                Write::Delete { .. } => {
                    items.remove(pkey.as_str()).map_err(db_err)?;
                }
                Write::Check { .. } => {}
            }
        }
    }
    tx.commit().map_err(db_err)
}

fn run_query(db: &Database, q: &Query) -> StoreResult<Vec<Item>> {
    let now = crate::now_secs();
    let tx = db.begin_read().map_err(db_err)?;
    let items = tx.open_table(ITEMS).map_err(db_err)?;
    let (start, end) = bounds(q)?;
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    match q.index {
        Index::Primary => {
            let range = items.range(start.as_str()..end.as_str()).map_err(db_err)?;
            let walk: Box<dyn Iterator<Item = _>> = if q.descending {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for entry in walk {
                let (_, v) = entry.map_err(db_err)?;
                out.extend(live(Some(decode(v.value())?), now));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Index::Gsi1 => {
            let gsi = tx.open_table(GSI1).map_err(db_err)?;
            let range = gsi.range(start.as_str()..end.as_str()).map_err(db_err)?;
            let walk: Box<dyn Iterator<Item = _>> = if q.descending {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for entry in walk {
                let (k, _) = entry.map_err(db_err)?;
                let mut parts = k.value().splitn(3, SEP);
                let rest = parts.nth(2).unwrap_or_default();
                out.extend(live(read_item(&items, &primary_key(&split_primary(rest)))?, now));
                if out.len() >= limit {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// The key range a query walks: the prefix's range, cut at the cursor. `SEP` sorts below every
/// other character, so `after + SEP` is the first key past every key equal to `after`.
fn bounds(q: &Query) -> StoreResult<(String, String)> {
    let mut start = format!("{}{SEP}{}", q.pk, q.sk_prefix);
    let mut end = format!("{start}{}", char::MAX);
    q.check_cursor()?;
    if let Some(after) = &q.after {
        let at = format!("{}{SEP}{after}", q.pk);
        if q.descending {
            end = end.min(at);
        } else {
            start = start.max(format!("{at}{SEP}"));
        }
    }
    Ok((start, end))
}

/// Counters are not worth an fsync each: a crash may lose the last increments, never more, and
/// the next durable commit persists them.
fn add_counter(db: &Database, key: &Key, counter: &str, by: i64, ttl: Option<i64>) -> StoreResult<i64> {
    let now = crate::now_secs();
    let mut tx = db.begin_write().map_err(db_err)?;
    tx.set_durability(redb::Durability::None).map_err(db_err)?;
    let value = {
        let mut items = tx.open_table(ITEMS).map_err(db_err)?;
        let pkey = primary_key(key);
        let mut item = match live(read_item(&items, &pkey)?, now) {
            Some(item) => item,
            None => {
                let mut map = serde_json::Map::new();
                map.insert(crate::item::attr::PK.into(), key.pk.clone().into());
                map.insert(crate::item::attr::SK.into(), key.sk.clone().into());
                if let Some(t) = ttl {
                    map.insert(crate::item::attr::TTL.into(), t.into());
                }
                Item(map)
            }
        };
        let value = item.0.get(counter).and_then(serde_json::Value::as_i64).unwrap_or(0) + by;
        item.0.insert(counter.into(), value.into());
        let bytes = serde_json::to_vec(&item.0).map_err(db_err)?;
        items.insert(pkey.as_str(), bytes.as_slice()).map_err(db_err)?;
        value
    };
    tx.commit().map_err(db_err)?;
    Ok(value)
}

#[async_trait]
impl Table for EmbeddedTable {
    async fn add(&self, key: &Key, counter: &str, by: i64, ttl: Option<i64>) -> StoreResult<i64> {
        let (key, counter) = (key.clone(), counter.to_string());
        self.blocking(move |db| add_counter(db, &key, &counter, by, ttl)).await
    }

    /// Read on the calling thread. A point read is one B-tree walk in redb's page cache (a few
    /// microseconds, and readers never wait for a writer), while handing it to the blocking pool
    /// woke a pool thread and then the caller: 11 futex calls a `run_sgt_model` request, which
    /// makes two of these reads. Writes fsync, and queries read any number of items, so they
    /// still go to the pool.
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let items = tx.open_table(ITEMS).map_err(db_err)?;
        Ok(live(read_item(&items, &primary_key(key))?, crate::now_secs()))
    }

    async fn query(&self, query: &Query) -> StoreResult<Vec<Item>> {
        let q = query.clone();
        self.blocking(move |db| run_query(db, &q)).await
    }

    async fn write(&self, writes: Vec<Write>) -> StoreResult<()> {
        self.blocking(move |db| apply(db, writes)).await
    }
}

/// Blobs as files under one directory.
pub struct FileBlobs {
    root: PathBuf,
}

impl FileBlobs {
    pub fn open(root: &Path) -> StoreResult<Self> {
        // A crash mid-put leaves only a temporary file behind: sweep them on start.
        let _ = std::fs::remove_dir_all(root.join(".tmp"));
        std::fs::create_dir_all(root.join(".tmp")).map_err(db_err)?;
        // Uploads abandoned past their URLs' lifetime hold parts no one can finish.
        sweep_uploads(root, UPLOAD_LIFETIME);
        Ok(FileBlobs {
            root: root.to_path_buf(),
        })
    }

    /// An upload's folder: its parts, and the key it is for.
    fn upload_dir(&self, upload: &str) -> StoreResult<PathBuf> {
        if upload.is_empty() || !upload.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::Upload("no such upload".into()));
        }
        Ok(self.root.join(".tmp-uploads").join(upload))
    }

    /// The upload's folder, if it exists and is for `key`.
    async fn upload_for(&self, key: &str, upload: &str) -> StoreResult<PathBuf> {
        let dir = self.upload_dir(upload)?;
        match tokio::fs::read_to_string(dir.join("key")).await {
            Ok(k) if k == key => Ok(dir),
            Ok(_) => Err(StoreError::Upload("no such upload".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Upload("no such upload".into())),
            Err(e) => Err(db_err(e)),
        }
    }

    /// The parts stored so far, in order.
    async fn parts(&self, key: &str, upload: &str) -> StoreResult<Vec<Part>> {
        let dir = self.upload_for(key, upload).await?;
        tokio::task::spawn_blocking(move || {
            let mut parts = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(db_err)? {
                let path = entry.map_err(db_err)?.path();
                let Some(number) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let data = std::fs::read(&path).map_err(db_err)?;
                parts.push(Part {
                    number,
                    etag: format!("\"{}\"", hex_sha256(&data)),
                    size: data.len() as u64,
                });
            }
            parts.sort_by_key(|p| p.number);
            Ok(parts)
        })
        .await
        .map_err(db_err)?
    }

    fn path(&self, key: &str) -> StoreResult<PathBuf> {
        let safe = !key.is_empty()
            && key
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.starts_with(".tmp"))
            && !key.contains('\\');
        if !safe {
            return Err(StoreError::backend(format!("invalid blob key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

fn write_atomically(root: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = root.join(".tmp").join(uuid::Uuid::new_v4().to_string());
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How long an unfinished multipart upload's parts are kept: past the day its URLs work.
pub const UPLOAD_LIFETIME: std::time::Duration = std::time::Duration::from_secs(2 * 24 * 3600);

/// Removes the parts of uploads started more than `age` ago; returns how many were removed.
pub fn sweep_uploads(root: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(root.join(".tmp-uploads")) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let started = entry.path().join("key").metadata().and_then(|m| m.modified());
        let old = started.is_ok_and(|t| t.elapsed().is_ok_and(|e| e >= age));
        if old && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The parts a client names must be the ones stored, in rising order, each but the last at
/// least [`MIN_PART`] bytes: S3's rules, so that clients see one behaviour on both backends.
fn check_parts(named: &[Part], stored: &[Part]) -> StoreResult<()> {
    if named.is_empty() {
        return Err(StoreError::Upload("name at least one part".into()));
    }
    for (i, p) in named.iter().enumerate() {
        if i > 0 && p.number <= named[i - 1].number {
            return Err(StoreError::Upload("parts must be listed in rising order".into()));
        }
        let Some(s) = stored.iter().find(|s| s.number == p.number) else {
            return Err(StoreError::Upload(format!("part {} was never uploaded", p.number)));
        };
        if s.etag.trim_matches('"') != p.etag.trim_matches('"') {
            return Err(StoreError::Upload(format!(
                "part {}'s ETag is not the uploaded part's",
                p.number
            )));
        }
        if i + 1 < named.len() && s.size < MIN_PART {
            return Err(StoreError::Upload(format!(
                "part {} is smaller than 5 MiB and not the last",
                p.number
            )));
        }
    }
    Ok(())
}

/// Concatenates the parts into `path`, written aside and renamed as every put is.
fn join_parts(root: &Path, dir: &Path, numbers: &[u32], path: &Path) -> std::io::Result<()> {
    let tmp = root.join(".tmp").join(uuid::Uuid::new_v4().to_string());
    {
        let mut out = std::fs::File::create(&tmp)?;
        for n in numbers {
            let mut part = std::fs::File::open(dir.join(format!("{n:05}")))?;
            std::io::copy(&mut part, &mut out)?;
        }
        out.sync_all()?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&tmp, path)
}

fn list_under(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            list_under(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[async_trait]
impl Blobs for FileBlobs {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let (root, path) = (self.root.clone(), self.path(key)?);
        tokio::task::spawn_blocking(move || write_atomically(&root, &path, &data))
            .await
            .map_err(db_err)?
            .map_err(db_err)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(v) => Ok(Some(Bytes::from(v))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(db_err(e)),
            _ => Ok(()),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        let data = self
            .get(from)
            .await?
            .ok_or_else(|| StoreError::backend(format!("no blob {from}")))?;
        self.put(to, data).await
    }

    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> StoreResult<Option<Bytes>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = match tokio::fs::File::open(self.path(key)?).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(db_err(e)),
        };
        f.seek(std::io::SeekFrom::Start(start)).await.map_err(db_err)?;
        let mut out = Vec::new();
        f.take(len).read_to_end(&mut out).await.map_err(db_err)?;
        Ok(Some(Bytes::from(out)))
    }

    async fn create_upload(&self, key: &str) -> StoreResult<String> {
        self.path(key)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.upload_dir(&id)?;
        tokio::fs::create_dir_all(&dir).await.map_err(db_err)?;
        tokio::fs::write(dir.join("key"), key).await.map_err(db_err)?;
        Ok(id)
    }

    async fn put_part(&self, key: &str, upload: &str, part: u32, data: Bytes) -> StoreResult<String> {
        if !(1..=10_000).contains(&part) {
            return Err(StoreError::Upload(format!("part {part} is not 1 to 10000")));
        }
        let dir = self.upload_for(key, upload).await?;
        let etag = format!("\"{}\"", hex_sha256(&data));
        let (root, path) = (self.root.clone(), dir.join(format!("{part:05}")));
        tokio::task::spawn_blocking(move || write_atomically(&root, &path, &data))
            .await
            .map_err(db_err)?
            .map_err(db_err)?;
        Ok(etag)
    }

    async fn complete_upload(&self, key: &str, upload: &str, parts: &[Part]) -> StoreResult<()> {
        let dir = self.upload_for(key, upload).await?;
        let stored = self.parts(key, upload).await?;
        check_parts(parts, &stored)?;
        let (root, path) = (self.root.clone(), self.path(key)?);
        let numbers: Vec<u32> = parts.iter().map(|p| p.number).collect();
        tokio::task::spawn_blocking(move || join_parts(&root, &dir, &numbers, &path))
            .await
            .map_err(db_err)?
            .map_err(db_err)?;
        self.abort_upload(key, upload).await
    }

    async fn abort_upload(&self, key: &str, upload: &str) -> StoreResult<()> {
        match self.upload_for(key, upload).await {
            Ok(dir) => tokio::fs::remove_dir_all(dir).await.map_err(db_err),
            Err(StoreError::Upload(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            // Walk only the deepest directory the prefix names, then filter by the rest.
            let dir = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            list_under(&root, &dir, &mut out).map_err(db_err)?;
            out.retain(|k| k.starts_with(&prefix) && !k.starts_with(".tmp"));
            out.sort();
            Ok(out)
        })
        .await
        .map_err(db_err)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn abandoned_uploads_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FileBlobs::open(dir.path()).unwrap();
        let up = blobs.create_upload("a/b").await.unwrap();
        blobs.put_part("a/b", &up, 1, Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(sweep_uploads(dir.path(), UPLOAD_LIFETIME), 0, "a fresh upload stays");
        assert_eq!(sweep_uploads(dir.path(), std::time::Duration::ZERO), 1);
        let gone = blobs.put_part("a/b", &up, 2, Bytes::from_static(b"y")).await;
        assert!(matches!(gone, Err(StoreError::Upload(_))));
    }
}
