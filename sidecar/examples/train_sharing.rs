//! What sharing training time between jobs costs: one trainer, `JOBS` models with data, run
//! for a fixed time with each job trained until it is done (no turns) and with turns of
//! `--train-turn-secs`. Prints total optimisation steps a second (summed over every model's
//! last checkpoint) and how many models got any training. Embedded store by default;
//! `--store aws` uses the endpoint in `AWS_ENDPOINT_URL` (as `eval "$(localstack/up)"` sets).
//!
//!   cargo run --release -p maas-sidecar --example train_sharing -- --seconds 30

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use maas_sidecar::cache::ModelCache;
use maas_sidecar::worker::Worker;
use maas_store::records::sgt::{SgtModel, SgtRepo};
use maas_store::{aws, StoreConfig, Stores};

#[derive(Parser)]
struct Args {
    /// Training time for each setting.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Models waiting to be trained.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Samples per model, of a 64-in, 8-out function.
    #[arg(long, default_value_t = 4096)]
    samples: usize,
    /// The turn length measured against no turns.
    #[arg(long, default_value_t = 2.0)]
    turn_secs: f64,
    #[arg(long, default_value_t = 2.0)]
    checkpoint_secs: f64,
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "aws"])]
    store: String,
}

const IN: usize = 64;
const OUT: usize = 8;

fn main() -> anyhow::Result<()> {
    maas_sidecar::block_on(run())?
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "{} jobs of {} samples ({IN} in, {OUT} out), one trainer, {} s each, {} store",
        args.jobs, args.samples, args.seconds, args.store
    );
    for turn in [0.0, args.turn_secs] {
        let (steps, trained) = measure(&args, turn).await?;
        let label = if turn == 0.0 {
            "no turns".to_string()
        } else {
            format!("turns of {turn} s")
        };
        println!(
            "{label:>16}: {:>8.1} steps/s in total, {trained} of {} models trained",
            steps as f64 / args.seconds as f64,
            args.jobs
        );
    }
    Ok(())
}

/// Total checkpointed steps over all models, and how many models got any, after training
/// for `args.seconds` with turns of `turn` seconds (0: none).
async fn measure(args: &Args, turn: f64) -> anyhow::Result<(u64, usize)> {
    let dir = tempfile::tempdir()?;
    let stores = open(args, &dir).await?;
    let repo = SgtRepo::new(&stores);
    let models = seed_models(&repo, args).await?;
    let training = maas_sidecar::TrainingArgs {
        checkpoint_secs: args.checkpoint_secs,
        train_turn_secs: turn,
        // The loss must not go flat during the run: every job stays busy.
        train_patience_steps: u64::MAX / 4,
        ..Default::default()
    };
    let mut cfg = training.worker_config();
    cfg.train.max_steps = u64::MAX;
    let worker = Worker {
        id: "bench".into(),
        repo: repo.clone(),
        cache: Arc::new(ModelCache::new(16, candle_core::Device::Cpu)),
        device: candle_core::Device::Cpu,
        cfg,
    };
    let task = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    task.abort();
    let mut total = (0, 0);
    for m in &models {
        let step = repo
            .get_model(&m.owner, &m.app_name, &m.name)
            .await?
            .and_then(|m| m.checkpoint)
            .map_or(0, |c| c.step);
        total = (total.0 + step, total.1 + usize::from(step > 0));
    }
    Ok(total)
}

async fn open(args: &Args, dir: &tempfile::TempDir) -> anyhow::Result<Stores> {
    if args.store == "embedded" {
        return Stores::open(&StoreConfig::Embedded {
            dir: dir.path().to_path_buf(),
        })
        .await;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (table, bucket) = (format!("share-{id}"), format!("share-{}", &id[..20]));
    aws::provision(&aws::sdk_config().await, &table, &bucket).await?;
    Stores::open(&StoreConfig::Aws { table, bucket }).await
}

async fn seed_models(repo: &SgtRepo, args: &Args) -> anyhow::Result<Vec<SgtModel>> {
    let mut models = Vec::new();
    for j in 0..args.jobs {
        let mut model = SgtModel::new(
            &uuid::Uuid::new_v4().to_string(),
            (&format!("user{j}"), "bench", "m"),
            IN as u32,
            OUT as u32,
        );
        model.seed = j as u64;
        repo.create_model(&model).await?;
        let bytes: Vec<u8> = samples(args.samples, j as u32)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        repo.append_train_data(&model.owner, "bench", "m", args.samples as u64, bytes.into())
            .await
            .map_err(|_| anyhow::anyhow!("cannot upload training data"))?;
        models.push(model);
    }
    Ok(models)
}

/// `n` rows of inputs then labels: a smooth function of pseudo-random inputs.
fn samples(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as f32 / u32::MAX as f32 * 2.0 - 1.0
    };
    let mut out = Vec::with_capacity(n * (IN + OUT));
    for _ in 0..n {
        let x: Vec<f32> = (0..IN).map(|_| next()).collect();
        out.extend_from_slice(&x);
        for k in 0..OUT {
            let dot: f32 = x
                .iter()
                .enumerate()
                .map(|(i, v)| v * (((i * 7 + k * 3) % 11) as f32 / 5.5 - 1.0))
                .sum();
            out.push(0.9 * (0.3 * dot).tanh());
        }
    }
    out
}
