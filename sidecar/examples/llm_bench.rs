//! The LLM engine's figures for BENCHMARKS.md, in process (no HTTP): time to first token for a
//! ~200-token prompt, decode tokens/s at batch 1, total tokens/s with 8 concurrent streams, and
//! the process's peak RSS. `bench/llm.sh` runs it beside llama.cpp on the same GGUF.
//!
//!   cargo run --release -p maas-sidecar --example llm_bench -- .maas/models

use std::path::PathBuf;
use std::time::{Duration, Instant};

use maas_sidecar::llm::engine::EngineConfig;
use maas_sidecar::llm::service::{LlmService, ModelStatus};
use maas_sidecar_client::llm::{GenerateEvent, GenerateRequest, Prompt, SamplingParams};
use tokio::sync::mpsc::UnboundedReceiver;

const MODEL: &str = "smollm2-135m-instruct";

/// A prompt of about 200 tokens whose first line differs per run, so no cache could help.
fn prompt(run: usize) -> String {
    format!(
        "Request {run}: read the following notes and answer the question at the end.\n{}\nQuestion: summarise the notes in detail, point by point.",
        (1..=6)
            .map(|i| format!("Note {i}: the quarterly report lists revenue, costs, hiring plans and the new office in city {i}."))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn params(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens,
        temperature: 0.0,
        // Keeps greedy decoding from ending early, so every run decodes max_tokens.
        repetition_penalty: 1.0,
        ..SamplingParams::default()
    }
}

struct Timing {
    first: Duration,
    done: Duration,
    tokens: u32,
    prompt_tokens: u32,
}

async fn timed(mut rx: UnboundedReceiver<GenerateEvent>, start: Instant) -> Timing {
    let mut first = None;
    while let Some(e) = rx.recv().await {
        match e {
            GenerateEvent::Token { .. } => {
                first.get_or_insert_with(|| start.elapsed());
            }
            GenerateEvent::Done {
                completion_tokens,
                prompt_tokens,
                ..
            } => {
                return Timing {
                    first: first.unwrap_or_default(),
                    done: start.elapsed(),
                    tokens: completion_tokens,
                    prompt_tokens,
                }
            }
            GenerateEvent::Failed { message } => panic!("{message}"),
        }
    }
    panic!("stream ended early")
}

fn request(run: usize, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        model: MODEL.into(),
        prompt: Prompt::Text(prompt(run)),
        params: params(max_tokens),
        user: format!("user{run}"),
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".maas/models".into()));
    let mut cfg = EngineConfig::default();
    if let Some(t) = std::env::var("MAAS_LLM_THREADS").ok().and_then(|t| t.parse().ok()) {
        cfg.threads = t;
    }
    if let Ok(w) = std::env::var("MAAS_LLM_WEIGHTS") {
        cfg.weights = w.parse().unwrap();
    }
    let cfg_weights = cfg.weights;
    let svc = LlmService::new(cfg);
    svc.load(MODEL.into(), dir.join(MODEL).join("model.gguf"));
    while svc.status(MODEL) != Some(ModelStatus::Ready) {
        assert!(
            !matches!(svc.status(MODEL), Some(ModelStatus::Failed(_))),
            "{:?}",
            svc.status(MODEL)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm-up.
    timed(svc.generate(request(0, 8)).unwrap(), Instant::now()).await;

    let mut ttft = Vec::new();
    for run in 1..=3 {
        let start = Instant::now();
        let t = timed(svc.generate(request(run, 1)).unwrap(), start).await;
        ttft.push((t.first.as_secs_f64() * 1000.0, t.prompt_tokens));
    }
    let start = Instant::now();
    let one = timed(svc.generate(request(10, 128)).unwrap(), start).await;
    let decode = (one.tokens - 1) as f64 / (one.done - one.first).as_secs_f64();

    let start = Instant::now();
    let streams: Vec<_> = (0..8)
        .map(|i| tokio::spawn(timed(svc.generate(request(20 + i, 128)).unwrap(), start)))
        .collect();
    let mut total = 0;
    for s in streams {
        total += s.await.unwrap().tokens;
    }
    let eight = total as f64 / start.elapsed().as_secs_f64();
    let ttft_ms: Vec<f64> = ttft.iter().map(|t| t.0).collect();
    println!(
        "{{\"engine\": \"maas ({:?} weights)\", \"prompt_tokens\": {}, \"ttft_ms\": {:?}, \"decode_tok_s\": {decode:.1}, \"eight_streams_tok_s\": {eight:.1}, \"eight_streams_tokens\": {total}, \"peak_rss_mb\": {:.0}}}",
        cfg_weights,
        ttft[0].1,
        ttft_ms,
        peak_rss_mb()
    );
}
