//! The models one sidecar serves, language and embedding: found in a models folder, loaded in
//! the background (`loading`, then `ready` or `failed`), and asked for by id.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use maas_sidecar_client::llm::{
    EmbedRequest, Embeddings, GenerateError, GenerateEvent, GenerateRequest, LlmModelInfo, ModelState, Prompt,
    TokenCounts,
};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::embed::{EmbedConfig, EmbedEngine, EmbedModel};

use super::lora::Adapter;
use super::remote::RemoteModels;

use super::engine::{Engine, EngineConfig};
use super::template::{ChatTemplate, Message};
use super::weights::LoadedModel;

/// Where a model stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelStatus {
    Loading,
    Ready,
    Failed(String),
}

enum Slot {
    Loading,
    Ready(Arc<Served>),
    Failed(String),
}

struct Served {
    kind: Kind,
    info: LlmModelInfo,
    /// The weights' bytes in memory, counted against a remote budget.
    bytes: u64,
}

// One per served model, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Chat {
        engine: Engine,
        template: Option<ChatTemplate>,
        /// LoRA adapters by name, asked for as `<model>:<adapter>`.
        adapters: BTreeMap<String, Arc<Adapter>>,
    },
    Embed(EmbedEngine),
}

/// A language model's tokenizer, held while texts are counted.
pub struct TokenCounter(Arc<Served>);

impl TokenCounter {
    pub fn count(&self, text: &str) -> Result<u32, GenerateError> {
        let Kind::Chat { engine, .. } = &self.0.kind else {
            unreachable!("token_counter checks the kind")
        };
        engine
            .model
            .tokenizer
            .encode(text)
            .map(|ids| ids.len() as u32)
            .map_err(|e| GenerateError::Internal { message: e.to_string() })
    }

    pub fn context(&self) -> u32 {
        self.0.info.context
    }
}

/// What a model folder holds.
enum Source {
    /// A language model: a GGUF file, or a Hugging Face folder.
    Llm(PathBuf),
    Embedder(PathBuf),
}

pub struct LlmService {
    slots: RwLock<BTreeMap<String, Slot>>,
    cfg: EngineConfig,
    embed_cfg: EmbedConfig,
    /// Models in the bucket, loaded when first asked for (a sidecar fleet in AWS).
    remote: Option<Arc<RemoteModels>>,
    /// When each model was last asked for: the least recent idle one is unloaded first.
    used: Mutex<HashMap<String, Instant>>,
    runtime: Option<tokio::runtime::Handle>,
}

impl LlmService {
    pub fn new(cfg: EngineConfig) -> Arc<LlmService> {
        LlmService::with_remote(cfg, None)
    }

    /// A service that also loads models from the bucket on demand. Call from within a Tokio
    /// runtime: copies from the bucket run on it.
    pub fn with_remote(cfg: EngineConfig, remote: Option<Arc<RemoteModels>>) -> Arc<LlmService> {
        let embed_cfg = EmbedConfig {
            threads: cfg.threads,
            ..EmbedConfig::default()
        };
        Arc::new(LlmService {
            slots: RwLock::new(BTreeMap::new()),
            cfg,
            embed_cfg,
            remote,
            used: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Starts loading every model under `dir`, each on its own thread: `<id>/model.gguf` is a
    /// language model, `<id>/` with a BERT `config.json` an embedding model, and `<id>/` with
    /// another `config.json` and safetensors a language model in Hugging Face's layout.
    pub fn load_dir(self: &Arc<Self>, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::warn!(dir = %dir.display(), "no models folder; serving no model");
            return;
        };
        for entry in entries.flatten() {
            if let Some(source) = source_in(&entry.path()) {
                self.start(entry.file_name().to_string_lossy().into_owned(), source);
            }
        }
    }

    /// Loads a GGUF file or a Hugging Face folder as model `id`, in the background.
    pub fn load(self: &Arc<Self>, id: String, path: PathBuf) {
        self.start(id, Source::Llm(path));
    }

    /// Loads a sentence-transformers folder as embedding model `id`, in the background.
    pub fn load_embedder(self: &Arc<Self>, id: String, dir: PathBuf) {
        self.start(id, Source::Embedder(dir));
    }

    fn start(self: &Arc<Self>, id: String, source: Source) {
        self.slots
            .write()
            .expect("slots lock")
            .insert(id.clone(), Slot::Loading);
        let this = self.clone();
        std::thread::spawn(move || {
            let opened = match &source {
                Source::Llm(path) => this.open(&id, path),
                Source::Embedder(dir) => this.open_embedder(&id, dir),
            };
            match opened {
                Ok(served) => {
                    tracing::info!(model = %id, "model ready");
                    this.slots
                        .write()
                        .expect("slots lock")
                        .insert(id.clone(), Slot::Ready(Arc::new(served)));
                    this.unload_beyond_budget(&id);
                }
                Err(e) => this.fail(&id, e.to_string()),
            }
        });
    }

    /// Where model `id` stands, starting to load it from the bucket when the bucket has it;
    /// `None` when no one has it.
    pub async fn find(self: &Arc<Self>, id: &str) -> anyhow::Result<Option<ModelState>> {
        if let Some(state) = self.state_of(id) {
            return Ok(Some(state));
        }
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        if !remote.discover(id).await? || !self.fetch(id) {
            return Ok(None);
        }
        Ok(self.state_of(id))
    }

    fn state_of(&self, id: &str) -> Option<ModelState> {
        self.slots.read().expect("slots lock").get(id).map(|s| match s {
            Slot::Ready(_) => ModelState::Ready,
            Slot::Loading => ModelState::Loading,
            Slot::Failed(_) => ModelState::Failed,
        })
    }

    /// Starts copying model `id` from the bucket and loading it, when the bucket has it.
    fn fetch(self: &Arc<Self>, id: &str) -> bool {
        let (Some(remote), Some(rt)) = (&self.remote, &self.runtime) else {
            return false;
        };
        if !remote.has(id) {
            return false;
        }
        {
            let mut slots = self.slots.write().expect("slots lock");
            if slots.contains_key(id) {
                return true; // another request got here first
            }
            slots.insert(id.to_string(), Slot::Loading);
        }
        let (this, remote, id) = (self.clone(), remote.clone(), id.to_string());
        rt.spawn(async move {
            match remote.fetch(&id).await {
                Ok(dir) => match source_in(&dir) {
                    Some(source) => this.start(id, source),
                    None => this.fail(&id, "the bucket holds no model in a known layout".into()),
                },
                Err(e) => this.fail(&id, format!("copying from the bucket: {e:#}")),
            }
        });
        true
    }

    fn fail(&self, id: &str, reason: String) {
        tracing::error!(model = %id, error = %reason, "model failed to load");
        self.slots
            .write()
            .expect("slots lock")
            .insert(id.to_string(), Slot::Failed(reason));
    }

    /// With a remote budget, unloads the least recently used idle models (never `keep`) until
    /// the loaded weights fit it. A model with requests in flight stays.
    fn unload_beyond_budget(&self, keep: &str) {
        let Some(budget) = self.remote.as_ref().map(|r| r.budget) else {
            return;
        };
        let mut slots = self.slots.write().expect("slots lock");
        let used = self.used.lock().expect("used lock");
        let mut loaded: Vec<(Option<Instant>, String, u64, bool)> = slots
            .iter()
            .filter_map(|(id, s)| match s {
                Slot::Ready(m) => Some((used.get(id).copied(), id.clone(), m.bytes, m.idle())),
                _ => None,
            })
            .collect();
        let mut total: u64 = loaded.iter().map(|l| l.2).sum();
        loaded.sort(); // never used first, then least recently used
        for (_, id, bytes, idle) in loaded {
            if total <= budget {
                break;
            }
            if idle && id != keep {
                tracing::info!(model = %id, bytes, "unloading the least recently used model");
                slots.remove(&id);
                total -= bytes;
            }
        }
    }

    fn open(&self, id: &str, path: &Path) -> anyhow::Result<Served> {
        let model = Arc::new(LoadedModel::open(
            path,
            &candle_core::Device::Cpu,
            self.cfg.weights,
            self.cfg.threads,
        )?);
        let tok = &model.tokenizer;
        let name = |t: Option<u32>| t.and_then(|t| tok.special_text(t));
        let template = match &model.chat_template {
            Some(src) => Some(ChatTemplate::new(
                src,
                &name(tok.bos).unwrap_or_default(),
                &name(Some(tok.eos)).unwrap_or_default(),
            )?),
            None => None,
        };
        let info = LlmModelInfo {
            id: id.to_string(),
            kind: "chat".into(),
            context: model.model.cfg.context as u32,
            created: modified(path),
            dimensions: None,
            status: ModelState::Ready,
        };
        let adapters = adapters_beside(path, &model.model.cfg);
        let bytes = model.model.weight_bytes();
        Ok(Served {
            kind: Kind::Chat {
                engine: Engine::start(model, self.cfg.clone())?,
                template,
                adapters,
            },
            info,
            bytes,
        })
    }

    fn open_embedder(&self, id: &str, dir: &Path) -> anyhow::Result<Served> {
        let model = Arc::new(EmbedModel::load(dir, &candle_core::Device::Cpu)?);
        let info = LlmModelInfo {
            id: id.to_string(),
            kind: "embedding".into(),
            context: model.max_tokens as u32,
            created: modified(&dir.join("model.safetensors")),
            dimensions: Some(model.dimensions() as u32),
            status: ModelState::Ready,
        };
        Ok(Served {
            kind: Kind::Embed(EmbedEngine::start(model, self.embed_cfg.clone())?),
            info,
            bytes: 0,
        })
    }

    pub fn status(&self, id: &str) -> Option<ModelStatus> {
        Some(match self.slots.read().expect("slots lock").get(id)? {
            Slot::Loading => ModelStatus::Loading,
            Slot::Ready(_) => ModelStatus::Ready,
            Slot::Failed(e) => ModelStatus::Failed(e.clone()),
        })
    }

    /// Every model, loading, ready or failed; sizes only for ready ones.
    pub fn models(&self) -> Vec<LlmModelInfo> {
        let unready = |id: &str, status| LlmModelInfo {
            id: id.to_string(),
            kind: String::new(),
            context: 0,
            created: 0,
            dimensions: None,
            status,
        };
        self.slots
            .read()
            .expect("slots lock")
            .iter()
            .flat_map(|(id, s)| match s {
                Slot::Ready(m) => m.listed(),
                Slot::Loading => vec![unready(id, ModelState::Loading)],
                Slot::Failed(_) => vec![unready(id, ModelState::Failed)],
            })
            .collect()
    }

    fn served(self: &Arc<Self>, model: &str) -> Result<Arc<Served>, GenerateError> {
        let slot = match self.slots.read().expect("slots lock").get(model) {
            Some(Slot::Ready(m)) => Ok(m.clone()),
            Some(Slot::Loading) => Err(Some(GenerateError::Loading)),
            Some(Slot::Failed(_)) => Err(Some(GenerateError::UnknownModel { model: model.into() })),
            None => Err(None),
        };
        match slot {
            Ok(m) => {
                self.used
                    .lock()
                    .expect("used lock")
                    .insert(model.to_string(), Instant::now());
                Ok(m)
            }
            Err(Some(e)) => Err(e),
            // Not here: loading it from the bucket, if it is there.
            Err(None) if self.fetch(model) => Err(GenerateError::Loading),
            Err(None) => Err(GenerateError::UnknownModel { model: model.into() }),
        }
    }

    /// The token counts of `texts` as language model `model` reads them, and its context
    /// length. Blocking (tokenizing).
    pub fn count_tokens(self: &Arc<Self>, model: &str, texts: &[String]) -> Result<TokenCounts, GenerateError> {
        let counter = self.token_counter(model)?;
        let counts = texts.iter().map(|t| counter.count(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(TokenCounts {
            counts,
            context: counter.context(),
        })
    }

    /// Counts tokens as language model `model` reads them, looked up once for many texts.
    pub fn token_counter(self: &Arc<Self>, model: &str) -> Result<TokenCounter, GenerateError> {
        let served = self.served(model)?;
        if !matches!(served.kind, Kind::Chat { .. }) {
            return Err(GenerateError::BadPrompt {
                message: format!("the model {model:?} is an embedding model; name a language model"),
            });
        }
        Ok(TokenCounter(served))
    }

    /// Starts generating for `req` (`model` or `model:adapter`); events arrive on the receiver.
    pub fn generate(self: &Arc<Self>, req: GenerateRequest) -> Result<UnboundedReceiver<GenerateEvent>, GenerateError> {
        let (base, adapter_name) = match req.model.split_once(':') {
            Some((base, adapter)) => (base, Some(adapter)),
            None => (req.model.as_str(), None),
        };
        let served = self.served(base)?;
        let Kind::Chat {
            engine,
            template,
            adapters,
        } = &served.kind
        else {
            return Err(GenerateError::BadPrompt {
                message: format!("the model {:?} is an embedding model; use embeddings", req.model),
            });
        };
        let text = match req.prompt {
            Prompt::Text(t) => t,
            Prompt::Chat(messages) => {
                let template = template.as_ref().ok_or_else(|| GenerateError::BadPrompt {
                    message: format!("the model {:?} has no chat template; use completions", req.model),
                })?;
                let messages: Vec<Message> = messages
                    .into_iter()
                    .map(|m| Message {
                        role: m.role,
                        content: m.content,
                    })
                    .collect();
                template.render(&messages).map_err(|e| GenerateError::BadPrompt {
                    message: format!(
                        "the chat template refused these messages: {}",
                        e.detail().unwrap_or("invalid conversation")
                    ),
                })?
            }
        };
        let ids = engine
            .model
            .tokenizer
            .encode(&text)
            .map_err(|e| GenerateError::Internal { message: e.to_string() })?;
        let adapter = match adapter_name {
            Some(name) => Some(adapters.get(name).cloned().ok_or_else(|| GenerateError::UnknownModel {
                model: req.model.clone(),
            })?),
            None => None,
        };
        engine.submit(&req.user, ids, req.params, adapter)
    }

    /// Tokenizes `req`'s inputs and queues them; blocking (tokenizing), so async callers run
    /// it off the runtime. The vectors come with the receiver.
    pub fn embed(self: &Arc<Self>, req: EmbedRequest) -> Result<(PendingEmbeddings, u32, u32), GenerateError> {
        let served = self.served(&req.model)?;
        let Kind::Embed(engine) = &served.kind else {
            return Err(GenerateError::BadPrompt {
                message: format!("the model {:?} is not an embedding model", req.model),
            });
        };
        let mut ids = Vec::with_capacity(req.inputs.len());
        let (mut tokens, mut truncated) = (0u32, 0u32);
        for text in &req.inputs {
            let (input, cut) = engine
                .model
                .tokenize(text)
                .map_err(|e| GenerateError::Internal { message: e.to_string() })?;
            tokens += input.len() as u32;
            truncated += cut as u32;
            ids.push(input);
        }
        Ok((engine.submit(ids)?, tokens, truncated))
    }

    /// [`Self::embed`] to the end: waits for the vectors.
    pub async fn embed_all(self: &Arc<Self>, req: EmbedRequest) -> Result<Embeddings, GenerateError> {
        let this = self.clone();
        let (pending, prompt_tokens, truncated) = tokio::task::spawn_blocking(move || this.embed(req))
            .await
            .map_err(|e| GenerateError::Internal { message: e.to_string() })??;
        let vectors = pending
            .await
            .map_err(|_| GenerateError::Internal {
                message: "the embedding engine stopped".into(),
            })?
            .map_err(|message| GenerateError::Internal { message })?;
        Ok(Embeddings {
            vectors,
            prompt_tokens,
            truncated,
        })
    }
}

impl Served {
    /// The model, and each of its adapters as a model of its own.
    fn listed(&self) -> Vec<LlmModelInfo> {
        let mut all = vec![self.info.clone()];
        if let Kind::Chat { adapters, .. } = &self.kind {
            all.extend(adapters.keys().map(|name| LlmModelInfo {
                id: format!("{}:{name}", self.info.id),
                ..self.info.clone()
            }));
        }
        all
    }
}

/// The adapters in `<model folder>/adapters/<name>/` (PEFT folders). One that does not load
/// is logged and left out; the model serves without it.
/// What model folder `dir` holds, if any: see [`LlmService::load_dir`].
fn source_in(dir: &Path) -> Option<Source> {
    let gguf = dir.join("model.gguf");
    if gguf.is_file() {
        Some(Source::Llm(gguf))
    } else if crate::embed::is_embedding_model(dir) {
        Some(Source::Embedder(dir.to_path_buf()))
    } else if super::hf::is_model_dir(dir) {
        Some(Source::Llm(dir.to_path_buf()))
    } else {
        None
    }
}

impl Served {
    /// Whether no request is in flight, so unloading it cuts no answer short. Embedding
    /// models are small and stay.
    fn idle(&self) -> bool {
        match &self.kind {
            Kind::Chat { engine, .. } => engine.idle(),
            Kind::Embed(_) => false,
        }
    }
}

fn adapters_beside(model: &Path, cfg: &super::LlamaConfig) -> BTreeMap<String, Arc<Adapter>> {
    // A GGUF file's folder, or the Hugging Face folder itself.
    let folder = if model.is_dir() { Some(model) } else { model.parent() };
    let Some(dir) = folder.map(|d| d.join("adapters")) else {
        return BTreeMap::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    let mut adapters = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().join("adapter_config.json").is_file() || name.contains(':') {
            continue;
        }
        match Adapter::load(&name, &entry.path(), cfg, &candle_core::Device::Cpu) {
            Ok(a) => drop(adapters.insert(name, Arc::new(a))),
            Err(e) => tracing::error!(adapter = %name, error = %e, "adapter failed to load"),
        }
    }
    adapters
}

/// Vectors on their way from an embedding engine.
pub type PendingEmbeddings = tokio::sync::oneshot::Receiver<crate::embed::engine::Vectors>;

/// A file's modification time in Unix seconds: a model's `created`.
fn modified(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}
