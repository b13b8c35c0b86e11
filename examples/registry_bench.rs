//! The model registry's hot paths, on either store, in one process: list latency with many
//! models (over HTTP, against reading every listing entry, the least any scan must read), and
//! upload throughput through presigned parts (against one plain PUT of the same bytes to the
//! same store). Prints one JSON line per figure. See BENCHMARKS.md for how it is run.
//!
//!   cargo run --release --example registry_bench -- --store embedded --models 100000
//!   eval "$(localstack/up)"; cargo run --release --example registry_bench -- --store aws

use std::time::{Duration, Instant};

use clap::Parser;
use maas::{Config, Gateway};
use maas_store::records::registry::{
    counter_names, create_writes, Filter, ListRequest, Model, RegistryRepo, Scope, SortField,
};
use maas_store::{Query, Stores};
use serde_json::{json, Value};
use sha2::Digest;

#[derive(Parser)]
struct Args {
    #[arg(long, value_parser = ["embedded", "aws"])]
    store: String,
    /// Models in the registry for the list figures.
    #[arg(long, default_value_t = 100_000)]
    models: usize,
    /// Times each list figure is taken.
    #[arg(long, default_value_t = 50)]
    repeat: usize,
    /// Size of the upload, in MiB (0: no upload figures).
    #[arg(long, default_value_t = 256)]
    upload_mib: usize,
    /// Parts PUT at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

fn config(store: &str, dir: &std::path::Path) -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Config {
        addr: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        store: store.into(),
        table: format!("bench-{id}"),
        bucket: format!("bench-{}", &id[..24]),
        body_limit: maas_functions::config::DEFAULT_BODY_LIMIT,
        sidecar_url: None,
        sidecar_secret: None,
        sidecar_queue: 256,
        idle_timeout_secs: 30,
        training: maas_sidecar::TrainingArgs::default(),
        llm: maas_sidecar::llm::engine::LlmArgs::default(),
        system_key: Some(format!("bench-{id}")),
        identity: maas_functions::config::IdentityArgs {
            jwt_keys: None,
            rate_auth: "1000000/60".parse().unwrap(),
            rate_other: "1000000/60".parse().unwrap(),
            rate_ip: "10000000/60".parse().unwrap(),
            monthly_calls: 1_000_000_000,
            storage_bytes: 1 << 40,
            admin_email: Some("registry-bench@example.com".into()),
            admin_password: Some("Sturdy-Pr0file!q".into()),
            ..Default::default()
        },
    }
}

/// Writes `n` public models straight into the table, many to a transaction.
async fn populate(stores: &Stores, n: usize) {
    let per_write = if stores_are_aws() { 16 } else { 500 };
    let mut counts: std::collections::HashMap<String, i64> = Default::default();
    let types = [
        "llm",
        "llm",
        "llm",
        "embedding",
        "llm",
        "classification",
        "llm",
        "llm",
        "vision",
        "llm",
    ];
    let started = Instant::now();
    let mut batch = Vec::new();
    for i in 0..n {
        let now = 1_700_000_000_000 + i as i64;
        let m = Model {
            model_id: uuid::Uuid::new_v4().to_string(),
            owner: "bench-owner".into(),
            name: format!("model-{:06}", (i * 7919) % n),
            description: format!("benchmark model {i}"),
            model_type: types[i % types.len()].into(),
            category: "text-generation".into(),
            visibility: "public".into(),
            license: None,
            tags: vec![format!("tag{}", i % 100)],
            latest_version: None,
            download_count: (i % 1000) as u64,
            like_count: (i % 37) as u64,
            metadata: json!({}),
            project_id: None,
            cloned_from: None,
            base_model: None,
            created_at: now,
            updated_at: now,
            ver: 0,
        };
        batch.extend(create_writes(&m).unwrap());
        for name in counter_names(&m) {
            *counts.entry(name).or_default() += 1;
        }
        if batch.len() >= per_write * 6 || i + 1 == n {
            stores.table.write(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    for (name, by) in counts {
        stores
            .table
            .add(&maas_store::Key::new("MODELIDX#public", "COUNT"), &name, by, None)
            .await
            .unwrap();
    }
    eprintln!("populated {n} models in {:.1} s", started.elapsed().as_secs_f64());
}

fn stores_are_aws() -> bool {
    std::env::args().any(|a| a == "aws")
}

/// Median and p95 of `repeat` runs of `f`, in milliseconds.
async fn time<F, Fut>(repeat: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await; // warm
    let mut ms = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t = Instant::now();
        f().await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    (ms[ms.len() / 2], ms[(ms.len() * 95 / 100).min(ms.len() - 1)])
}

fn report(store: &str, what: &str, models: usize, (p50, p95): (f64, f64)) {
    println!(
        "{}",
        json!({"store": store, "figure": what, "models": models, "p50_ms": p50, "p95_ms": p95})
    );
}

async fn lists(args: &Args, gateway: &Gateway, url: &str, token: &str) {
    let repo = RegistryRepo::new(&gateway.stores);
    let http = reqwest::Client::new();
    let n = args.models;
    let get = |q: &'static str| {
        let (http, url, token) = (http.clone(), url.to_string(), token.to_string());
        move || {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let r = http
                    .get(format!("{url}/api/v1/models?{q}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{q}: {}", r.status());
                r.bytes().await.unwrap();
            }
        }
    };
    report(
        &args.store,
        "GET /api/v1/models?limit=20 (newest first)",
        n,
        time(args.repeat, get("limit=20")).await,
    );
    report(
        &args.store,
        "GET ?sort=like_count&limit=20",
        n,
        time(args.repeat, get("sort=like_count&limit=20")).await,
    );
    report(
        &args.store,
        "GET ?type=embedding&limit=20 (1 model in 10)",
        n,
        time(args.repeat, get("type=embedding&limit=20")).await,
    );
    report(
        &args.store,
        "GET ?search=tag7&limit=20 (11 models in 100; its total walks the index)",
        n,
        time(args.repeat.min(10), get("search=tag7&limit=20")).await,
    );
    // A deep page through a cursor costs what the first does.
    let deep = ListRequest {
        user: "someone",
        scope: Scope::Visible,
        filter: Filter::default(),
        sort: SortField::CreatedAt,
        descending: true,
        cursor: None,
        skip: n / 2,
        limit: 20,
    };
    let cursor = repo.list(&deep).await.unwrap().next_cursor.unwrap();
    let cursor = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, cursor);
    let q: &'static str = Box::leak(format!("limit=20&cursor={cursor}").into_boxed_str());
    report(
        &args.store,
        "GET ?limit=20&cursor=(the middle of the list)",
        n,
        time(args.repeat, get(q)).await,
    );
    let stores = gateway.stores.clone();
    let scan = || {
        let stores = stores.clone();
        async move {
            let all = stores
                .table
                .query(&Query::primary("MODELIDX#public", "c#"))
                .await
                .unwrap();
            assert_eq!(all.len(), n);
        }
    };
    report(
        &args.store,
        "baseline: read every listing entry once (any scan's least)",
        n,
        time(args.repeat.min(5), scan).await,
    );
    let one = || {
        let stores = stores.clone();
        async move {
            stores
                .table
                .query(&Query::primary("MODELIDX#public", "c#").limit(21))
                .await
                .unwrap();
        }
    };
    report(
        &args.store,
        "floor: one query of 21 listing entries, no HTTP",
        n,
        time(args.repeat, one).await,
    );
}

async fn upload(args: &Args, gateway: &Gateway, url: &str, token: &str) {
    let size = args.upload_mib << 20;
    // A GGUF header with one f32 tensor filling the rest.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    let name = b"w";
    bytes.extend((name.len() as u64).to_le_bytes());
    bytes.extend(name);
    let values = (size - 64) / 4;
    bytes.extend(1u32.to_le_bytes());
    bytes.extend((values as u64).to_le_bytes());
    bytes.extend(0u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.resize(bytes.len().div_ceil(32) * 32, 0);
    let body_start = bytes.len();
    bytes.resize(body_start + values * 4, 7);
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mib = bytes.len() as f64 / (1 << 20) as f64;
    let http = reqwest::Client::new();

    let t = Instant::now();
    let r: Value = http
        .post(format!("{url}/api/v1/models"))
        .bearer_auth(token)
        .json(&json!({"name": "upload", "type": "llm", "files": [{"field": "model_file", "size": bytes.len(), "sha256": sha, "format": "gguf"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upload = &r["data"]["upload"];
    let file = &upload["files"][0];
    let part = file["part_size"].as_u64().unwrap() as usize;
    let urls: Vec<(u64, String)> = file["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let u = p["url"].as_str().unwrap();
            (
                p["part_number"].as_u64().unwrap(),
                if u.starts_with('/') {
                    format!("{url}{u}")
                } else {
                    u.to_string()
                },
            )
        })
        .collect();
    let started = t.elapsed();
    let t = Instant::now();
    let bytes = bytes::Bytes::from(bytes);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(args.parallel));
    let mut tasks = Vec::new();
    for (n, u) in urls {
        let chunk = bytes.slice((n as usize - 1) * part..(n as usize * part).min(bytes.len()));
        let (http, sem) = (http.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let r = http.put(u).body(chunk).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            json!({"part_number": n, "etag": r.headers()["etag"].to_str().unwrap()})
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.unwrap());
    }
    let put = t.elapsed();
    let t = Instant::now();
    let r = http
        .post(format!("{url}{}", upload["complete_url"].as_str().unwrap()))
        .bearer_auth(token)
        .json(&json!({"files": [{"field": "model_file", "parts": parts}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let complete = t.elapsed();

    let t = Instant::now();
    gateway
        .stores
        .blobs
        .put("bench/plain-put.bin", bytes.clone())
        .await
        .unwrap();
    let plain = t.elapsed();
    let line = |what: &str, d: Duration| {
        println!(
            "{}",
            json!({"store": args.store, "figure": what, "mib": mib, "seconds": d.as_secs_f64(), "mib_per_s": mib / d.as_secs_f64()})
        )
    };
    line("start: declare and get part URLs", started);
    line(&format!("PUT parts to presigned URLs, {} at once", args.parallel), put);
    line(
        "complete: join, size and header check (the sha256 is a task's)",
        complete,
    );
    line("baseline: one plain PUT of the same bytes to the same store", plain);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&args.store, dir.path());
    if args.store == "aws" {
        let conf = maas_store::aws::sdk_config().await;
        maas_store::aws::provision(&conf, &cfg.table, &cfg.bucket)
            .await
            .unwrap();
    }
    let gateway = Gateway::start(cfg).await.unwrap();
    let url = format!("http://{}", gateway.addr);
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login: Value = http
        .post(format!("{url}/api/v1/auth/login"))
        .json(&json!({"email": "registry-bench@example.com", "password": "Sturdy-Pr0file!q"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["data"]["access_token"].as_str().unwrap().to_string();
    if args.models > 0 {
        populate(&gateway.stores, args.models).await;
        lists(&args, &gateway, &url, &token).await;
    }
    if args.upload_mib > 0 {
        upload(&args, &gateway, &url, &token).await;
    }
    gateway.stop();
}
