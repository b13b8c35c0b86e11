//! The maas sidecar: SGT ensembles trained and served with candle, behind a small hyper server.
//! `maas` runs it in-process; in AWS it runs as a long-lived service next to the Lambdas.

pub mod activation;
pub mod cache;
pub mod embed;
pub mod ensemble;
pub mod jobs;
pub mod llm;
pub mod server;
pub mod train;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use maas_store::records::sgt::SgtRepo;
use maas_store::Stores;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use worker::{TrainingArgs, WorkerConfig};

#[derive(Clone, Debug)]
pub struct SidecarConfig {
    /// The shared secret every API function presents.
    pub secret: String,
    /// Run requests admitted at once (queued + computing); more get 429.
    pub queue: usize,
    /// Run requests computing at once.
    pub compute: usize,
    /// Training jobs this sidecar works on at once.
    pub trainers: usize,
    /// Tasks (dataset validation, processing, ...) this sidecar runs at once.
    pub task_workers: usize,
    /// Inference networks kept in memory.
    pub cache_models: usize,
    /// How long a client of the HTTP face may take to send a request's head.
    pub head_timeout: Duration,
    pub worker: WorkerConfig,
    /// Models to serve from local disk: see `LlmService::load_dir`.
    pub models_dir: Option<std::path::PathBuf>,
    /// Models in the bucket, loaded on demand.
    pub remote_models: Option<RemoteModelsConfig>,
    pub engine: llm::engine::EngineConfig,
}

/// Where in the bucket models are kept, where they are copied, and the memory they may take.
#[derive(Clone, Debug)]
pub struct RemoteModelsConfig {
    pub prefix: String,
    pub cache_dir: std::path::PathBuf,
    pub budget_bytes: u64,
}

impl SidecarConfig {
    pub fn new(secret: impl Into<String>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        SidecarConfig {
            secret: secret.into(),
            queue: 256,
            compute: cores,
            trainers: 1,
            task_workers: 1,
            cache_models: 256,
            head_timeout: Duration::from_secs(30),
            worker: WorkerConfig::default(),
            models_dir: None,
            remote_models: None,
            engine: llm::engine::EngineConfig::default(),
        }
    }
}

/// Makes candle's CPU kernels run on the calling thread. The sidecar already runs one request
/// per core; candle's own pool would only make those requests spin on each other's barrier
/// (measured: 29% of CPU time at 8 concurrent clients). Call before any thread starts, e.g.
/// first thing in `main`; variables already set by the operator win.
pub fn single_threaded_kernels() {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: called at the start of `main`, before any other thread exists.
            unsafe { std::env::set_var(var, "1") };
        }
    }
}

/// Runs a binary's async `main` body: kernels single-threaded first (before any thread
/// exists), then a multi-threaded runtime.
pub fn block_on<F: std::future::Future>(main: F) -> std::io::Result<F::Output> {
    single_threaded_kernels();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    Ok(runtime.block_on(main))
}

/// The compute device: the first CUDA GPU when built with `--features cuda` and one is present.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// Keeps the list of the bucket's models current: new ones can be asked for within a minute.
async fn list_bucket_models(remote: Arc<llm::remote::RemoteModels>) {
    loop {
        if let Err(e) = remote.refresh().await {
            tracing::warn!(error = %e, "could not list the bucket's models");
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// The runner of every long operation but SGT training, leased as training jobs are.
fn task_runner(stores: &Stores, cfg: &SidecarConfig, llm: Arc<llm::service::LlmService>, id: String) -> jobs::Runner {
    let kinds: Vec<Arc<dyn jobs::Job>> = vec![
        Arc::new(jobs::dataset_validation::DatasetValidation::new(stores)),
        Arc::new(jobs::dataset_processing::DatasetProcessing::new(stores)),
        Arc::new(jobs::dataset_quality::DatasetQuality::new(stores, llm)),
        Arc::new(jobs::model_validation::ModelValidation::new(stores)),
    ];
    let runner_cfg = jobs::RunnerConfig {
        poll: cfg.worker.poll,
        lease: cfg.worker.lease,
    };
    jobs::Runner::new(id, maas_store::records::tasks::TaskRepo::new(stores), kinds, runner_cfg)
}

/// A running sidecar. Dropping it does not stop it; abort the tasks to do that.
pub struct Sidecar {
    /// Where it serves HTTP; `None` when it was started without a listener.
    pub addr: Option<SocketAddr>,
    /// The run path without HTTP, for a gateway in the same process.
    pub compute: Arc<server::ServerState>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sidecar {
    /// Starts the training workers, and serves HTTP on `listener` when there is one (a gateway
    /// in the same process calls [`Sidecar::compute`] instead).
    pub async fn start(stores: &Stores, listener: Option<TcpListener>, cfg: SidecarConfig) -> anyhow::Result<Sidecar> {
        let device = device();
        let cache = Arc::new(cache::ModelCache::new(cfg.cache_models, device.clone()));
        let remote = cfg.remote_models.as_ref().map(|r| {
            Arc::new(llm::remote::RemoteModels::new(
                stores.blobs.clone(),
                &r.prefix,
                r.cache_dir.clone(),
                r.budget_bytes,
            ))
        });
        let llm = llm::service::LlmService::with_remote(cfg.engine.clone(), remote.clone());
        if let Some(dir) = &cfg.models_dir {
            llm.load_dir(dir);
        }
        let mut tasks = Vec::new();
        if let Some(remote) = remote {
            tasks.push(tokio::spawn(list_bucket_models(remote)));
        }
        let state = Arc::new(server::ServerState {
            secret: cfg.secret.clone(),
            cache: cache.clone(),
            blobs: stores.blobs.clone(),
            device: device.clone(),
            admitted: Arc::new(Semaphore::new(cfg.queue)),
            compute: Arc::new(Semaphore::new(cfg.compute.max(1))),
            llm,
        });
        let addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        tasks.extend(listener.map(|l| tokio::spawn(server::serve(l, state.clone(), cfg.head_timeout))));
        let instance = uuid::Uuid::new_v4().simple().to_string();
        for i in 0..cfg.trainers {
            let w = worker::Worker {
                id: format!("sidecar-{}-{i}", &instance[..12]),
                repo: SgtRepo::new(stores),
                cache: cache.clone(),
                device: device.clone(),
                cfg: cfg.worker.clone(),
            };
            tasks.push(tokio::spawn(w.run()));
        }
        for i in 0..cfg.task_workers {
            let id = format!("sidecar-{}-tasks-{i}", &instance[..12]);
            tasks.push(tokio::spawn(task_runner(stores, &cfg, state.llm.clone(), id).run()));
        }
        Ok(Sidecar {
            addr,
            compute: state,
            tasks,
        })
    }

    /// Stops serving: runs still waiting for a compute slot, and any sent afterwards (on
    /// connections already open, or in process), are answered "shutting down", which callers
    /// treat as busy, so they retry elsewhere instead of hanging. Training stops where it is;
    /// its lease lapses and another sidecar resumes the job from its last checkpoint.
    pub fn stop(&self) {
        self.compute.compute.close();
        for t in &self.tasks {
            t.abort();
        }
    }
}
