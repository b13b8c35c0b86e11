//! The loop of one model: take new requests, let the scheduler pick the step, run the model
//! over the packed batch, sample, send text, retire what finished. It runs on its own thread,
//! with its own pool for the kernels, so async tasks never wait on tensor work.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use maas_sidecar_client::llm::{FinishReason, GenerateError, GenerateEvent, SamplingParams};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::kv::SeqCache;
use super::model::{row, SeqStep};
use super::scheduler::{Scheduler, SchedulerConfig};
use super::sequence::Sequence;
use super::weights::LoadedModel;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    /// Threads the kernels use.
    pub threads: usize,
    /// How quantized weights are held in memory.
    pub weights: super::Repack,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            scheduler: SchedulerConfig::default(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            weights: super::Repack::Mixed,
        }
    }
}

/// The language-model flags `maas` and `maas-sidecar` share.
#[derive(clap::Args, Clone, Debug)]
pub struct LlmArgs {
    /// Serve every model in this folder (`scripts/fetch-models` fills it): `<id>/model.gguf`, a
    /// Hugging Face Llama folder, or a sentence-transformers folder.
    #[arg(long, env = "MAAS_MODELS_DIR")]
    pub models_dir: Option<std::path::PathBuf>,
    /// Most sequences a model computes in one step.
    #[arg(long, env = "MAAS_LLM_MAX_BATCH", default_value_t = SchedulerConfig::default().max_batch)]
    pub llm_max_batch: usize,
    /// Most positions (prompt + max_tokens) a model's running sequences reserve together.
    #[arg(long, env = "MAAS_LLM_KV_TOKENS", default_value_t = SchedulerConfig::default().max_kv_tokens)]
    pub llm_kv_tokens: usize,
    /// Most tokens one step computes; longer prompts are prefilled in chunks of this size.
    #[arg(long, env = "MAAS_LLM_STEP_TOKENS", default_value_t = SchedulerConfig::default().step_tokens)]
    pub llm_step_tokens: usize,
    /// Requests that may wait for a model; more are answered 429.
    #[arg(long, env = "MAAS_LLM_QUEUE", default_value_t = SchedulerConfig::default().max_waiting)]
    pub llm_queue: usize,
    /// Threads for a model's kernels (default: every core).
    #[arg(long, env = "MAAS_LLM_THREADS")]
    pub llm_threads: Option<usize>,
    /// How weights are held: `mixed` (f32 GEMMs for prompts, the int8 kernel for generated
    /// tokens: fastest, most memory), `as-stored`, `q8_0` (formats without a fast kernel, f32
    /// and f16 safetensors included, repacked) or `f32`.
    #[arg(long, env = "MAAS_LLM_WEIGHTS", default_value = "mixed")]
    pub llm_weights: super::Repack,
    /// Memory for weights loaded from the bucket, in MiB: past it, the least recently used
    /// idle models are unloaded.
    #[arg(long, env = "MAAS_MODELS_MEMORY_MIB", default_value_t = 8192)]
    pub models_memory_mib: u64,
}

impl LlmArgs {
    pub fn engine_config(&self) -> EngineConfig {
        let default = EngineConfig::default();
        EngineConfig {
            scheduler: SchedulerConfig {
                max_batch: self.llm_max_batch.max(1),
                max_kv_tokens: self.llm_kv_tokens.max(1),
                step_tokens: self.llm_step_tokens.max(1),
                max_waiting: self.llm_queue,
            },
            threads: self.llm_threads.unwrap_or(default.threads).max(1),
            weights: self.llm_weights,
        }
    }
}

impl Default for LlmArgs {
    fn default() -> Self {
        let s = SchedulerConfig::default();
        LlmArgs {
            models_dir: None,
            llm_max_batch: s.max_batch,
            llm_kv_tokens: s.max_kv_tokens,
            llm_step_tokens: s.step_tokens,
            llm_queue: s.max_waiting,
            llm_threads: None,
            llm_weights: super::Repack::Mixed,
            models_memory_mib: 8192,
        }
    }
}

pub struct Engine {
    shared: Arc<Shared>,
    pub model: Arc<LoadedModel>,
    max_waiting: usize,
    max_kv_tokens: usize,
}

struct Shared {
    inbox: Mutex<Vec<Sequence>>,
    wake: Condvar,
    /// Requests the scheduler holds that wait for a place in the batch; with the inbox, the
    /// queue the bound applies to.
    waiting: AtomicUsize,
    stop: AtomicBool,
    /// Held by every sequence submitted and not yet dropped: in the inbox, waiting, or running.
    in_flight: Arc<()>,
}

impl Engine {
    pub fn start(model: Arc<LoadedModel>, cfg: EngineConfig) -> std::io::Result<Engine> {
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            waiting: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            in_flight: Arc::new(()),
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads.max(1))
            .thread_name(|i| format!("llm-kernel-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let worker = Worker {
            shared: shared.clone(),
            model: model.clone(),
            sched: Scheduler::new(cfg.scheduler.clone()),
            pool,
        };
        std::thread::Builder::new()
            .name("llm-engine".into())
            .spawn(move || worker.run())?;
        Ok(Engine {
            shared,
            model,
            max_waiting: cfg.scheduler.max_waiting,
            max_kv_tokens: cfg.scheduler.max_kv_tokens,
        })
    }

    /// Queues `prompt` for generation. Events arrive on the receiver; dropping it cancels the
    /// request within a step.
    /// Whether no sequence is in flight.
    pub fn idle(&self) -> bool {
        Arc::strong_count(&self.shared.in_flight) == 1
    }

    pub fn submit(
        &self,
        user: &str,
        prompt: Vec<u32>,
        params: SamplingParams,
        adapter: Option<Arc<super::lora::Adapter>>,
    ) -> Result<UnboundedReceiver<GenerateEvent>, GenerateError> {
        let context = self.model.model.cfg.context.min(self.max_kv_tokens);
        let needed = prompt.len() + params.max_tokens as usize;
        if needed > context {
            return Err(GenerateError::ContextTooLong {
                context: context as u32,
                prompt: prompt.len() as u32,
                max_tokens: params.max_tokens,
                needed: needed as u32,
            });
        }
        if prompt.is_empty() {
            return Err(GenerateError::BadPrompt {
                message: "the prompt is empty".into(),
            });
        }
        let (tx, rx) = unbounded_channel();
        let cache = SeqCache::new(&self.model.model.cfg);
        let mut seq = Sequence::new(user.to_string(), prompt, params, cache, tx, adapter);
        seq.in_flight = Some(self.shared.in_flight.clone());
        let mut inbox = self.shared.inbox.lock().expect("inbox lock");
        if inbox.len() + self.shared.waiting.load(Ordering::SeqCst) >= self.max_waiting {
            return Err(GenerateError::QueueFull);
        }
        inbox.push(seq);
        drop(inbox);
        self.shared.wake.notify_one();
        Ok(rx)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

struct Worker {
    shared: Arc<Shared>,
    model: Arc<LoadedModel>,
    sched: Scheduler,
    pool: rayon::ThreadPool,
}

impl Worker {
    fn run(mut self) {
        while self.take_new() {
            self.sched.drop_cancelled();
            self.sched.admit();
            self.shared.waiting.store(self.sched.waiting(), Ordering::SeqCst);
            self.step();
        }
    }

    /// Moves new requests into the scheduler, sleeping while there is nothing to do. `false`
    /// once the engine is dropped.
    fn take_new(&mut self) -> bool {
        let mut inbox = self.shared.inbox.lock().expect("inbox lock");
        while inbox.is_empty() && self.sched.is_idle() {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            inbox = self.shared.wake.wait(inbox).expect("inbox lock");
        }
        for seq in inbox.drain(..) {
            self.sched.enqueue(seq);
        }
        // Counted before the lock goes, so a submit never sees these in neither place.
        self.shared.waiting.store(self.sched.waiting(), Ordering::SeqCst);
        !self.shared.stop.load(Ordering::SeqCst)
    }

    /// One model step over the planned batch, then sampling for every sequence past its prompt.
    fn step(&mut self) {
        let plan = self.sched.plan();
        let chosen: Vec<usize> = plan
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, _)| i)
            .collect();
        if chosen.is_empty() {
            return;
        }
        let model = &self.model.model;
        let mut steps: Vec<SeqStep> = self
            .sched
            .running
            .iter_mut()
            .zip(&plan)
            .filter(|(_, n)| **n > 0)
            .map(|(s, &n)| s.step(n))
            .collect();
        let result = self.pool.install(|| model.forward(&mut steps, false));
        drop(steps);
        let logits = match result {
            Ok(l) => l,
            Err(e) => return self.fail_all(&chosen, &e.to_string()),
        };
        let mut finished = Vec::new();
        for (r, &i) in chosen.iter().enumerate() {
            let seq = &mut self.sched.running[i];
            if !seq.decoding() {
                continue;
            }
            let mut row = match row(&logits, r) {
                Ok(row) => row,
                Err(e) => {
                    seq.fail(e.to_string());
                    finished.push((i, None));
                    continue;
                }
            };
            if let Some(reason) = seq.advance(&mut row, &self.model.tokenizer) {
                finished.push((i, Some(reason)));
            } else if seq.cache.len() + 1 >= model.cfg.context {
                finished.push((i, Some(FinishReason::Length)));
            }
        }
        // Highest index first, so swap_remove leaves the lower ones in place.
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (i, reason) in finished {
            let seq = self.sched.retire(i);
            // A sequence without a reason failed and already said so.
            if let Some(r) = reason {
                seq.finish(r);
            }
        }
    }

    fn fail_all(&mut self, chosen: &[usize], message: &str) {
        tracing::error!(error = message, "model step failed");
        for &i in chosen.iter().rev() {
            let seq = self.sched.retire(i);
            seq.fail("the model failed on this request".into());
        }
    }
}
