//! Inference networks kept in memory, keyed by model id and checkpoint version, so a run
//! request touches storage only when a model is new here or a newer checkpoint exists.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use lru::LruCache;
use maas_sidecar_client::ModelRef;
use maas_store::Blobs;

use crate::ensemble::{std_widths, Ensemble, Mlp};
use crate::train::decode_checkpoint;

pub struct ModelCache {
    entries: Mutex<LruCache<String, (u64, Arc<Mlp>)>>,
    device: Device,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("unknown model type {0}")]
    UnknownType(String),
    /// The checkpoint named in the request was superseded and removed; re-read the model.
    #[error("checkpoint superseded")]
    Stale,
    #[error("{0}")]
    Failed(String),
}

impl ModelCache {
    pub fn new(capacity: usize, device: Device) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("non-zero");
        ModelCache {
            entries: Mutex::new(LruCache::new(cap)),
            device,
        }
    }

    fn cached(&self, model_id: &str) -> Option<(u64, Arc<Mlp>)> {
        self.entries.lock().expect("cache lock").get(model_id).cloned()
    }

    /// Stores a network, unless a newer version is already cached.
    pub fn insert(&self, model_id: &str, version: u64, mlp: Arc<Mlp>) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.peek(model_id).is_none_or(|(v, _)| *v <= version) {
            entries.put(model_id.to_string(), (version, mlp));
        }
    }

    /// The network for `model`: at least as new as the checkpoint the caller saw.
    pub async fn get(&self, model: &ModelRef, blobs: &dyn Blobs) -> Result<Arc<Mlp>, LoadError> {
        if !maas_sidecar_client::MODEL_TYPES.contains(&model.model_type.as_str()) {
            return Err(LoadError::UnknownType(model.model_type.clone()));
        }
        let wanted = model.checkpoint.as_ref().map_or(0, |c| c.version);
        let cached = self.cached(&model.model_id);
        if let Some((v, mlp)) = &cached {
            if *v >= wanted {
                return Ok(mlp.clone());
            }
        }
        let loaded = match &model.checkpoint {
            None => self.initial(model),
            Some(ck) => match blobs.get(&ck.blob).await {
                Ok(Some(bytes)) => self.load_checkpoint(model, &bytes),
                // The checkpoint was superseded and removed after the caller read it: serve
                // the newest network we have, if any.
                Ok(None) => return cached.map(|(_, m)| m).ok_or(LoadError::Stale),
                Err(e) => Err(LoadError::Failed(e.to_string())),
            },
        }?;
        let mlp = Arc::new(loaded);
        self.insert(&model.model_id, wanted, mlp.clone());
        Ok(mlp)
    }

    fn initial(&self, model: &ModelRef) -> Result<Mlp, LoadError> {
        let widths = std_widths(model.in_size as usize, model.out_size as usize);
        let ens = Ensemble::init(&widths, crate::ensemble::MEMBERS, model.seed, &self.device).map_err(failed)?;
        ens.member(0).map_err(failed)
    }

    fn load_checkpoint(&self, model: &ModelRef, bytes: &[u8]) -> Result<Mlp, LoadError> {
        let ck = decode_checkpoint(bytes, &self.device).map_err(failed)?;
        let widths = std_widths(model.in_size as usize, model.out_size as usize);
        if ck.widths != widths {
            return Err(LoadError::Failed(format!(
                "checkpoint widths {:?} do not fit the model",
                ck.widths
            )));
        }
        Ensemble::from_tensors(&widths, ck.best, &ck.tensors)
            .and_then(|e| e.member(ck.best))
            .map_err(failed)
    }
}

fn failed(e: candle_core::Error) -> LoadError {
    LoadError::Failed(e.to_string())
}
