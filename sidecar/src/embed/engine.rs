//! The loop of one embedding model: requests that arrive while a batch runs are taken together
//! next, their inputs packed into batches of at most `max_batch_tokens` tokens, and each
//! request answered once all its inputs are pooled. It runs on its own thread, with its own
//! pool for the kernels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use maas_sidecar_client::llm::GenerateError;
use tokio::sync::oneshot;

use super::EmbedModel;

#[derive(Clone, Debug)]
pub struct EmbedConfig {
    /// Most tokens one forward pass packs.
    pub max_batch_tokens: usize,
    /// Requests that may wait; more are answered 429.
    pub max_waiting: usize,
    /// Threads the kernels use.
    pub threads: usize,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        EmbedConfig {
            max_batch_tokens: 8192,
            max_waiting: 256,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Most tokens in one forward pass: larger groups spill the activations out of cache. On 1,000
/// sentences (bench/embed.sh, 2 threads): 256 tokens 445 sentences/s, 512 430, 1,024 431,
/// 2,048 393, one group per thread 284.
const GROUP_TOKENS: usize = 256;

pub type Vectors = Result<Vec<Vec<f32>>, String>;

struct Job {
    inputs: Vec<Vec<u32>>,
    reply: oneshot::Sender<Vectors>,
}

struct Shared {
    inbox: Mutex<Vec<Job>>,
    wake: Condvar,
    stop: AtomicBool,
}

pub struct EmbedEngine {
    shared: Arc<Shared>,
    pub model: Arc<EmbedModel>,
    max_waiting: usize,
}

impl EmbedEngine {
    pub fn start(model: Arc<EmbedModel>, cfg: EmbedConfig) -> std::io::Result<EmbedEngine> {
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads.max(1))
            .thread_name(|i| format!("embed-kernel-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let worker = Worker {
            shared: shared.clone(),
            model: model.clone(),
            pool,
            max_batch_tokens: cfg.max_batch_tokens.max(1),
        };
        std::thread::Builder::new()
            .name("embed-engine".into())
            .spawn(move || worker.run())?;
        Ok(EmbedEngine {
            shared,
            model,
            max_waiting: cfg.max_waiting,
        })
    }

    /// Queues tokenized inputs; the vectors arrive on the receiver, in input order. Dropping
    /// the receiver skips the request if it has not started.
    pub fn submit(&self, inputs: Vec<Vec<u32>>) -> Result<oneshot::Receiver<Vectors>, GenerateError> {
        let (reply, rx) = oneshot::channel();
        let mut inbox = self.shared.inbox.lock().expect("inbox lock");
        if inbox.len() >= self.max_waiting {
            return Err(GenerateError::QueueFull);
        }
        inbox.push(Job { inputs, reply });
        drop(inbox);
        self.shared.wake.notify_one();
        Ok(rx)
    }
}

impl Drop for EmbedEngine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

struct Worker {
    shared: Arc<Shared>,
    model: Arc<EmbedModel>,
    pool: rayon::ThreadPool,
    max_batch_tokens: usize,
}

impl Worker {
    fn run(self) {
        while let Some(jobs) = self.take() {
            let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
            let inputs: Vec<&[u32]> = jobs.iter().flat_map(|j| j.inputs.iter().map(Vec::as_slice)).collect();
            let mut vectors = self.pool.install(|| self.embed(&inputs)).map_err(|e| {
                tracing::error!(error = %e, "embedding batch failed");
                "the model failed on this request".to_string()
            });
            for job in jobs {
                let answer = match &mut vectors {
                    Ok(v) => Ok(v.drain(..job.inputs.len()).collect()),
                    Err(e) => Err(e.clone()),
                };
                // The caller may have gone; nobody is left to tell.
                let _ = job.reply.send(answer);
            }
        }
    }

    /// Waits for requests and takes every one waiting; `None` once the engine is dropped.
    fn take(&self) -> Option<Vec<Job>> {
        let mut inbox = self.shared.inbox.lock().expect("inbox lock");
        while inbox.is_empty() {
            if self.shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            inbox = self.shared.wake.wait(inbox).expect("inbox lock");
        }
        Some(std::mem::take(&mut *inbox))
    }

    /// The vectors of `inputs`, in order. Inputs are cut into consecutive groups of about equal
    /// tokens, one or more per thread and none over `max_batch_tokens`, and the groups run in
    /// parallel, each single-threaded: the kernels stay single-threaded in the sidecar (see
    /// `single_threaded_kernels`), and separate groups never wait on each other's barriers.
    fn embed(&self, inputs: &[&[u32]]) -> anyhow::Result<Vec<Vec<f32>>> {
        use rayon::prelude::*;
        let total: usize = inputs.iter().map(|i| i.len()).sum();
        let per_group = total
            .div_ceil(self.pool.current_num_threads())
            .clamp(1, self.max_batch_tokens.min(GROUP_TOKENS));
        let groups = groups(inputs, per_group);
        let vectors = self
            .pool
            .install(|| groups.par_iter().map(|g| self.model.embed_ids(g)).collect::<Vec<_>>());
        let mut out = Vec::with_capacity(inputs.len());
        for v in vectors {
            out.extend(v?);
        }
        Ok(out)
    }
}

/// `inputs` cut into consecutive groups of at most `max_tokens` tokens (an input longer than
/// that is a group alone).
fn groups<'a>(inputs: &[&'a [u32]], max_tokens: usize) -> Vec<Vec<&'a [u32]>> {
    let mut out: Vec<Vec<&[u32]>> = Vec::new();
    let mut tokens = 0;
    for &input in inputs {
        match out.last_mut() {
            Some(g) if tokens + input.len() <= max_tokens => g.push(input),
            _ => {
                out.push(vec![input]);
                tokens = 0;
            }
        }
        tokens += input.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::groups;

    #[test]
    fn groups_keep_order_and_stay_under_the_token_limit() {
        let (a, b, c, d) = ([1u32; 3], [2u32; 4], [3u32; 9], [4u32; 1]);
        let inputs: Vec<&[u32]> = vec![&a, &b, &c, &d];
        let g = groups(&inputs, 7);
        assert_eq!(g, vec![vec![&a[..], &b[..]], vec![&c[..]], vec![&d[..]]]);
        assert_eq!(groups(&inputs, 100).len(), 1);
    }
}
