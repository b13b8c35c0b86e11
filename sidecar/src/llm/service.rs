//! The language models one sidecar serves: found in a models folder, loaded in the background
//! (`loading`, then `ready` or `failed`), and asked for by id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use maas_sidecar_client::llm::{GenerateError, GenerateEvent, GenerateRequest, LlmModelInfo, Prompt};
use tokio::sync::mpsc::UnboundedReceiver;

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
    engine: Engine,
    template: Option<ChatTemplate>,
    info: LlmModelInfo,
}

pub struct LlmService {
    slots: RwLock<BTreeMap<String, Slot>>,
    cfg: EngineConfig,
}

impl LlmService {
    pub fn new(cfg: EngineConfig) -> Arc<LlmService> {
        Arc::new(LlmService {
            slots: RwLock::new(BTreeMap::new()),
            cfg,
        })
    }

    /// Starts loading every `<id>/model.gguf` under `dir`, each on its own thread.
    pub fn load_dir(self: &Arc<Self>, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::warn!(dir = %dir.display(), "no models folder; serving no language model");
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path().join("model.gguf");
            if path.is_file() {
                let id = entry.file_name().to_string_lossy().into_owned();
                self.load(id, path);
            }
        }
    }

    /// Loads a GGUF file as model `id`, in the background.
    pub fn load(self: &Arc<Self>, id: String, path: PathBuf) {
        self.slots
            .write()
            .expect("slots lock")
            .insert(id.clone(), Slot::Loading);
        let this = self.clone();
        std::thread::spawn(move || {
            let slot = match this.open(&id, &path) {
                Ok(served) => {
                    tracing::info!(model = %id, "model ready");
                    Slot::Ready(Arc::new(served))
                }
                Err(e) => {
                    tracing::error!(model = %id, error = %e, "model failed to load");
                    Slot::Failed(e.to_string())
                }
            };
            this.slots.write().expect("slots lock").insert(id, slot);
        });
    }

    fn open(&self, id: &str, path: &Path) -> anyhow::Result<Served> {
        let model = Arc::new(LoadedModel::gguf(path, &candle_core::Device::Cpu, self.cfg.weights)?);
        let tok = &model.tokenizer;
        let name = |t: Option<u32>| t.map(|t| String::from_utf8_lossy(tok.token_bytes(t)).into_owned());
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
            created: std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64),
        };
        Ok(Served {
            engine: Engine::start(model, self.cfg.clone())?,
            template,
            info,
        })
    }

    pub fn status(&self, id: &str) -> Option<ModelStatus> {
        Some(match self.slots.read().expect("slots lock").get(id)? {
            Slot::Loading => ModelStatus::Loading,
            Slot::Ready(_) => ModelStatus::Ready,
            Slot::Failed(e) => ModelStatus::Failed(e.clone()),
        })
    }

    /// The models ready to serve.
    pub fn models(&self) -> Vec<LlmModelInfo> {
        self.slots
            .read()
            .expect("slots lock")
            .values()
            .filter_map(|s| match s {
                Slot::Ready(m) => Some(m.info.clone()),
                _ => None,
            })
            .collect()
    }

    /// Starts generating for `req`; events arrive on the receiver.
    pub fn generate(&self, req: GenerateRequest) -> Result<UnboundedReceiver<GenerateEvent>, GenerateError> {
        let served = match self.slots.read().expect("slots lock").get(&req.model) {
            Some(Slot::Ready(m)) => m.clone(),
            Some(Slot::Loading) => return Err(GenerateError::Loading),
            Some(Slot::Failed(_)) | None => return Err(GenerateError::UnknownModel { model: req.model }),
        };
        let text = match req.prompt {
            Prompt::Text(t) => t,
            Prompt::Chat(messages) => {
                let template = served.template.as_ref().ok_or_else(|| GenerateError::BadPrompt {
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
        let ids = served
            .engine
            .model
            .tokenizer
            .encode(&text)
            .map_err(|e| GenerateError::Internal { message: e.to_string() })?;
        served.engine.submit(&req.user, ids, req.params)
    }
}
