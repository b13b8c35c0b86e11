//! The floor under any `run_sgt_model` server on this machine: the same HTTP stack as `maas`
//! (axum on hyper and tokio, served by `maas::serve`) that only receives each body, under the
//! same limit and budget, and sends back a precomputed answer of the right size; the frames are
//! dropped as they come. With `--read-rows` it also reads the rows as maas reads them, while the
//! body arrives, and nothing else. `bench/run.sh` drives it with `sgt_load` beside maas and
//! the baseline, so BENCHMARKS.md can say how much of the budget the transport and the numbers
//! take before any model runs.
//!
//!   cargo run --release --example sgt_floor -- --addr 127.0.0.1:18082 [--read-rows]

use axum::body::Bytes;
use axum::extract::Request;
use axum::routing::{get, post};
use axum::{Extension, Router};
use clap::Parser;
use maas_functions::body::{self, BodyBudget, BodyLimit, Sink};
use maas_functions::config::DEFAULT_BODY_LIMIT;
use maas_functions::sgt::answer::rows_json;
use maas_functions::sgt::requests::RUN_VALUES_READ;
use maas_functions::sgt::rows::split_data;
use maas_functions::sgt::run_body::RunBody;

/// Frames counted and dropped.
struct Dropped(usize);

impl Sink for Dropped {
    fn take(&mut self, frame: Bytes) {
        self.0 += frame.len();
    }
}

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: String,
    /// Read every request's rows (and drop them) before answering.
    #[arg(long)]
    read_rows: bool,
    /// Rows and outputs of the precomputed answer (sgt_load's defaults).
    #[arg(long, default_value_t = 1024)]
    rows: usize,
    #[arg(long, default_value_t = 8)]
    out: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // Values like a tanh-bounded model's, so the answer is as long as maas's.
    let values: Vec<f32> = (0..a.rows * a.out).map(|i| ((i as f32) * 0.37).sin() * 0.9).collect();
    let answer = Bytes::from(rows_json(&values, a.out));
    let read_rows = a.read_rows;
    let run = post(move |req: Request| async move {
        if !read_rows {
            std::hint::black_box(body::read_into(req, |_| Dropped(0)).await.map(|(d, _)| d.0).ok());
            return answer;
        }
        if let Ok((mut run, _share)) = body::read_into(req, |len| RunBody::new(len, RUN_VALUES_READ)).await {
            // As maas does: a body whose rows did not read as it came is read whole.
            if std::hint::black_box(run.rows_and_rest()).is_none() {
                std::hint::black_box(split_data(&run.whole(), RUN_VALUES_READ));
            }
        }
        answer
    });
    let app = Router::new()
        .route("/sgt/public/run_sgt_model", run)
        .route("/health", get(|| async { "ok" }))
        // Setup calls (token, model) only need a JSON answer.
        .fallback(post(|| async { "{}" }))
        .layer(Extension(BodyLimit(DEFAULT_BODY_LIMIT)))
        .layer(Extension(BodyBudget::for_limit(DEFAULT_BODY_LIMIT)));
    let listener = tokio::net::TcpListener::bind(&a.addr).await?;
    maas::serve::serve(listener, app, std::time::Duration::from_secs(30)).await;
    Ok(())
}
