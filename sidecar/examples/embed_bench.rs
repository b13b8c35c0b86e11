//! The embedding engine's figures for BENCHMARKS.md, in process (no HTTP): 1,000 sentences in
//! one request and in requests of 32 sent at once, and one short sentence alone.
//! `bench/embed.sh` runs it beside sentence-transformers on the same sentences.
//!
//!   cargo run --release -p maas-sidecar --example embed_bench -- MODELS_DIR SENTENCES THREADS

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maas_sidecar::llm::engine::EngineConfig;
use maas_sidecar::llm::service::{LlmService, ModelStatus};
use maas_sidecar_client::llm::EmbedRequest;

const MODEL: &str = "all-minilm-l6-v2";

fn request(inputs: &[String]) -> EmbedRequest {
    EmbedRequest {
        model: MODEL.into(),
        inputs: inputs.to_vec(),
        user: "bench".into(),
    }
}

async fn best_of<F, Fut>(runs: usize, f: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        best = best.min(t.elapsed());
    }
    best
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let models = PathBuf::from(args.next().expect("MODELS_DIR"));
    let texts: Vec<String> = std::fs::read_to_string(args.next().expect("SENTENCES"))
        .expect("sentences file")
        .lines()
        .map(str::to_string)
        .collect();
    let threads: usize = args.next().map_or(2, |t| t.parse().expect("THREADS"));
    let service = LlmService::new(EngineConfig {
        threads,
        ..EngineConfig::default()
    });
    service.load_embedder(MODEL.into(), models.join(MODEL));
    while service.status(MODEL) == Some(ModelStatus::Loading) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(service.status(MODEL), Some(ModelStatus::Ready));
    let s = &service;
    // Warm-up.
    s.embed_all(request(&texts[..64])).await.unwrap();
    let whole = best_of(3, || async {
        s.embed_all(request(&texts)).await.unwrap();
    })
    .await;
    let batches = best_of(3, || async {
        let calls = texts.chunks(32).map(|c| {
            let s = Arc::clone(s);
            let req = request(c);
            tokio::spawn(async move { s.embed_all(req).await.unwrap() })
        });
        for c in calls.collect::<Vec<_>>() {
            c.await.unwrap();
        }
    })
    .await;
    let mut one = Vec::new();
    for t in texts.iter().take(50) {
        let start = Instant::now();
        s.embed_all(request(std::slice::from_ref(t))).await.unwrap();
        one.push(start.elapsed());
    }
    one.sort();
    let per_s = |d: Duration| texts.len() as f64 / d.as_secs_f64();
    println!(
        "maas: {} sentences in one request {:.3} s = {:.0} sentences/s; in requests of 32 at once {:.3} s = {:.0} sentences/s; one sentence p50 {:.1} ms",
        texts.len(),
        whole.as_secs_f64(),
        per_s(whole),
        batches.as_secs_f64(),
        per_s(batches),
        one[one.len() / 2].as_secs_f64() * 1e3
    );
}
