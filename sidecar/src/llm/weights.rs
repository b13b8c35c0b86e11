//! Opening a language model's files: a GGUF file holds weights, sizes and tokenizer together.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::Device;

use super::{Llama, Repack, Tokenizer};

/// A model ready to run: weights and the tokenizer that goes with them.
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    /// The chat template from the model's metadata, when it has one.
    pub chat_template: Option<String>,
}

impl LoadedModel {
    /// Loads a GGUF file, its matmuls split for `threads`.
    pub fn gguf(path: &Path, device: &Device, repack: Repack, threads: usize) -> Result<LoadedModel> {
        let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let ct = Content::read(&mut file).with_context(|| format!("reading GGUF header of {}", path.display()))?;
        let tokenizer = Tokenizer::from_gguf(&ct)?;
        let chat_template = match ct.metadata.get("tokenizer.chat_template") {
            Some(t) => Some(t.to_string()?.clone()),
            None => None,
        };
        let model = Llama::from_gguf(&ct, &mut file, device, repack, threads)?;
        Ok(LoadedModel {
            model,
            tokenizer,
            chat_template,
        })
    }
}
