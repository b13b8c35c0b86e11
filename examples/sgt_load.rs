//! Load generator for any server speaking the SGT API (maas or the PyTorch + Flask baseline).
//! Prints one JSON line of figures. See BENCHMARKS.md for how it is run.
//!
//!   cargo run --release --example sgt_load -- --url http://127.0.0.1:8080 --system-key K \
//!       --mode run --rows 1024 --cols 64 --out 8 --clients 8 --requests 100

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fixtures::{r2, rows, target};
use serde_json::{json, Value};

#[path = "../tests/e2e/fixtures.rs"]
mod fixtures;
#[path = "shared/stats.rs"]
mod stats;
use stats::{drive, summary};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long)]
    system_key: String,
    /// run: run_sgt_model throughput/latency; create: create_sgt_model latency;
    /// learn: seconds from upload until held-out R^2 >= 0.99.
    #[arg(long, default_value = "run", value_parser = ["run", "create", "learn"])]
    mode: String,
    #[arg(long, default_value_t = 1024)]
    rows: usize,
    #[arg(long, default_value_t = 64)]
    cols: usize,
    #[arg(long, default_value_t = 8)]
    out: usize,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Round inputs to this many decimals (SGT clients often send short numbers: the issue's
    /// 1024 x 2048 bodies are about 6 MB). Full f32 precision when absent.
    #[arg(long)]
    decimals: Option<i32>,
    /// Give up on `learn` after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

struct Session {
    http: reqwest::Client,
    url: String,
    creds: Value,
}

impl Session {
    async fn send(&self, path: &str, body: impl Into<reqwest::Body>) -> Result<reqwest::Response, String> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            200 => Ok(r),
            status => Err(format!("{status}: {}", r.text().await.unwrap_or_default())),
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Value, String> {
        self.send(path, body).await?.json().await.map_err(|e| e.to_string())
    }

    /// A timed request: only the status is checked and the body read, so the generator spends
    /// as little CPU as possible on the machine it shares with the server.
    async fn post_timed(&self, path: &str, body: bytes::Bytes) -> Result<(), String> {
        self.send(path, body)
            .await?
            .bytes()
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn body(&self, extra: Value) -> Vec<u8> {
        let mut b = self.creds.clone();
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::to_vec(&b).unwrap()
    }

    async fn create(&self, name: &str, inp: usize, out: usize) -> Result<Value, String> {
        let body = self.body(
            json!({"name": name, "app_name": "bench", "model_type": "std", "client_data": "",
            "in_size": inp, "out_size": out, "is_public": false}),
        );
        self.post("/sgt/public/create_sgt_model", body).await
    }
}

async fn run_mode(s: Arc<Session>, a: &Args) -> Value {
    s.create("runbench", a.cols, a.out).await.ok();
    let data: Vec<Vec<f64>> = rows(a.rows, a.cols, 1)
        .into_iter()
        .map(|r| r.into_iter().map(|v| round(v as f64, a.decimals)).collect())
        .collect();
    let body = bytes::Bytes::from(s.body(json!({"name": "runbench", "app_name": "bench", "data": data})));
    // Warm up (loads the model, opens connections).
    for _ in 0..3 {
        s.post("/sgt/public/run_sgt_model", body.to_vec())
            .await
            .expect("warm-up run succeeds");
    }
    let body_bytes = body.len();
    let (lat, errors, wall) = drive(a.clients, a.requests, move || {
        let (s, body) = (s.clone(), body.clone());
        async move { s.post_timed("/sgt/public/run_sgt_model", body).await.is_ok() }
    })
    .await;
    let extra =
        json!({"rows": a.rows, "cols": a.cols, "clients": a.clients, "body_bytes": body_bytes, "decimals": a.decimals});
    summary("run", lat, errors, wall, extra)
}

fn round(v: f64, decimals: Option<i32>) -> f64 {
    match decimals {
        Some(d) => (v * 10f64.powi(d)).round() / 10f64.powi(d),
        None => v,
    }
}

async fn create_mode(s: Arc<Session>, a: &Args) -> Value {
    let start = Instant::now();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for i in 0..a.requests {
        let t = Instant::now();
        match s.create(&format!("c{i}-{}", std::process::id()), a.cols, a.out).await {
            Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => errors += 1,
        }
    }
    summary("create", lat, errors, start.elapsed(), json!({}))
}

async fn learn_mode(s: Arc<Session>, a: &Args) -> Value {
    let name = format!("learn-{}", std::process::id());
    s.create(&name, 8, 2).await.expect("create");
    let pairs: Vec<Value> = rows(2048, 8, 10).iter().map(|x| json!([x, target(x)])).collect();
    let held = rows(256, 8, 11);
    let truth: Vec<Vec<f32>> = held.iter().map(|x| target(x)).collect();
    let run_body = s.body(json!({"name": name, "app_name": "bench", "data": held}));
    s.post(
        "/sgt/public/upload_sgt_model_train_data",
        s.body(json!({"name": name, "app_name": "bench", "train_data": pairs})),
    )
    .await
    .expect("upload");
    let start = Instant::now();
    let mut best = f64::NEG_INFINITY;
    while start.elapsed() < Duration::from_secs(a.timeout) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(v) = s.post("/sgt/public/run_sgt_model", run_body.clone()).await {
            let pred: Vec<Vec<f32>> = serde_json::from_value(v).unwrap();
            best = best.max(r2(&pred, &truth));
            if best >= 0.99 {
                return json!({"mode": "learn", "seconds_to_r2_0.99": start.elapsed().as_secs_f64(), "r2": best});
            }
        }
    }
    json!({"mode": "learn", "seconds_to_r2_0.99": null, "r2": best, "timeout_s": a.timeout})
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let id = format!("bench-{}", std::process::id());
    let auth = json!({"key": a.system_key, "secret_id": id, "secret_key": "bench-secret", "doc": "", "end_time": "2099-01-01 00:00:00"});
    let s = Arc::new(Session {
        http,
        url: a.url.clone(),
        creds: json!({"secret_id": id, "secret_key": "bench-secret"}),
    });
    s.post("/sgt/private/update_auth_token", serde_json::to_vec(&auth).unwrap())
        .await
        .expect("update_auth_token");
    let result = match a.mode.as_str() {
        "create" => create_mode(s, &a).await,
        "learn" => learn_mode(s, &a).await,
        _ => run_mode(s, &a).await,
    };
    println!("{result}");
}
