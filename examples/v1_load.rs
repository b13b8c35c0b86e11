//! Load generator for the `/api/v1` identity hot paths on `maas`: the gateway's `/health` (the
//! baseline: the HTTP stack only), `GET /api/v1/auth/me` with a JWT and with an API key, and
//! password sign-in. Prints one JSON line of figures, with the server's CPU time per request
//! when given its pid. See BENCHMARKS.md for how it is run.
//!
//!   cargo run --release --example v1_load -- --url http://127.0.0.1:8080 --email E \
//!       --password P --mode me-jwt --clients 8 --requests 500 --pid 1234

use std::sync::Arc;

use clap::Parser;
use serde_json::{json, Value};

#[path = "shared/stats.rs"]
mod stats;
use stats::{drive, summary};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    url: String,
    /// An account to sign in with (the bench script uses the configured first admin).
    #[arg(long)]
    email: String,
    #[arg(long)]
    password: String,
    #[arg(long, value_parser = ["health", "me-jwt", "me-key", "login"])]
    mode: String,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// The server's pid: its user+system CPU time over the run is reported per request.
    #[arg(long)]
    pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

/// The server's user + system CPU seconds so far.
fn cpu_seconds(pid: u32, clk_tck: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("server pid readable");
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|v| v.parse().unwrap()).collect();
    (f[0] + f[1]) as f64 / clk_tck as f64
}

async fn sign_in(http: &reqwest::Client, a: &Args) -> Value {
    let r = http
        .post(format!("{}/api/v1/auth/login", a.url))
        .json(&json!({"email": a.email, "password": a.password}))
        .send()
        .await
        .expect("sign-in answers");
    assert!(r.status().is_success(), "sign-in: {}", r.status());
    r.json::<Value>().await.unwrap()["data"].clone()
}

async fn api_key(http: &reqwest::Client, a: &Args, access: &str) -> String {
    let r = http
        .post(format!("{}/api/v1/users/me/api-keys", a.url))
        .bearer_auth(access)
        .json(&json!({"name": "v1-load", "permissions": ["profile:read"]}))
        .send()
        .await
        .expect("key creation answers");
    r.json::<Value>().await.unwrap()["data"]["key"]
        .as_str()
        .expect("a key")
        .to_string()
}

/// The request each mode sends, built once.
async fn request(http: &reqwest::Client, a: &Args) -> reqwest::Request {
    let me = format!("{}/api/v1/auth/me", a.url);
    let builder = match a.mode.as_str() {
        "health" => http.get(format!("{}/health", a.url)),
        "login" => http
            .post(format!("{}/api/v1/auth/login", a.url))
            .json(&json!({"email": a.email, "password": a.password})),
        mode => {
            let access = sign_in(http, a).await["access_token"].as_str().unwrap().to_string();
            let credential = if mode == "me-key" {
                api_key(http, a, &access).await
            } else {
                access
            };
            http.get(me).bearer_auth(credential)
        }
    };
    builder.build().unwrap()
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let req = Arc::new(request(&http, &a).await);
    let send = move || {
        let (http, req) = (http.clone(), req.try_clone().unwrap());
        async move {
            match http.execute(req).await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    };
    // Warm-up: connections, caches, the first counter items.
    for _ in 0..5 {
        assert!(send.clone()().await, "warm-up request succeeds");
    }
    let cpu_before = a.pid.map(|p| cpu_seconds(p, a.clk_tck));
    let (lat, errors, wall) = drive(a.clients, a.requests, send).await;
    let done = lat.len().max(1) as f64;
    let cpu_ms = cpu_before.map(|b| (cpu_seconds(a.pid.unwrap(), a.clk_tck) - b) * 1e3 / done);
    println!(
        "{}",
        summary(
            &a.mode,
            lat,
            errors,
            wall,
            json!({"clients": a.clients, "server_cpu_ms_per_request": cpu_ms})
        )
    );
}
