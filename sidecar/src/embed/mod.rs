//! Embedding models: a BERT encoder of our own on candle, read from a sentence-transformers
//! folder (`config.json`, `model.safetensors`, `tokenizer.json`, pooling and normalisation).
//!
//! - `bert`: the encoder over a packed batch.
//! - `pooling`: token states to one vector.
//! - `engine`: requests batched together on one thread.

pub mod bert;
pub mod engine;
pub mod pooling;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use bert::{Bert, BertConfig};
pub use engine::{EmbedConfig, EmbedEngine};
pub use pooling::{Pooling, PoolingConfig};

/// An embedding model ready to run: encoder, tokenizer and pooling.
pub struct EmbedModel {
    pub bert: Bert,
    pub tokenizer: Tokenizer,
    pub pooling: PoolingConfig,
    /// Longer inputs are cut to this many tokens, `[CLS]` and `[SEP]` included.
    pub max_tokens: usize,
}

/// Does `dir` hold a BERT-family model (`config.json` with `model_type` `bert`)?
pub fn is_embedding_model(dir: &Path) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind {
        model_type: Option<String>,
    }
    std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Kind>(&b).ok())
        .and_then(|k| k.model_type)
        .is_some_and(|t| t == "bert")
}

impl EmbedModel {
    pub fn load(dir: &Path, device: &Device) -> Result<EmbedModel> {
        let bert = bert::load(dir, device)?;
        let pooling = PoolingConfig::read(dir)?;
        let max_tokens = max_seq_length(dir)?.unwrap_or(bert.cfg.max_position_embeddings);
        let max_tokens = max_tokens.min(bert.cfg.max_position_embeddings);
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| anyhow::anyhow!("reading {}: {e}", tok_path.display()))?;
        // sentence-transformers' settings: no padding (batches are packed), cut at the limit.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow::anyhow!("truncation: {e}"))?;
        Ok(EmbedModel {
            bert,
            tokenizer,
            pooling,
            max_tokens,
        })
    }

    /// Token ids of `text`, `[CLS]` and `[SEP]` included, cut at `max_tokens`; and whether it
    /// was cut.
    pub fn tokenize(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok((enc.get_ids().to_vec(), !enc.get_overflowing().is_empty()))
    }

    pub fn dimensions(&self) -> usize {
        self.bert.cfg.hidden_size
    }

    /// One vector per input, in one forward pass.
    pub fn embed_ids(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let states = self.bert.forward(inputs)?;
        let mut start = 0;
        let mut out = Vec::with_capacity(inputs.len());
        for s in inputs {
            out.push(self.pooling.pool(&states.narrow(0, start, s.len())?)?);
            start += s.len();
        }
        Ok(out)
    }
}

/// `max_seq_length` from `sentence_bert_config.json`, when there is one.
fn max_seq_length(dir: &Path) -> Result<Option<usize>> {
    #[derive(serde::Deserialize)]
    struct St {
        max_seq_length: Option<usize>,
    }
    let path = dir.join("sentence_bert_config.json");
    match std::fs::read(&path) {
        Ok(b) => Ok(serde_json::from_slice::<St>(&b)
            .with_context(|| format!("parsing {}", path.display()))?
            .max_seq_length),
        Err(_) => Ok(None),
    }
}
