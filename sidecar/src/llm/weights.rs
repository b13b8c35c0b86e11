//! Opening a language model: a GGUF file (weights, sizes and tokenizer together) or a Hugging
//! Face folder (`config.json`, safetensors, `tokenizer.json`).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::Device;

use super::{hf, Llama, Repack, Tokenizer};

/// A model ready to run: weights and the tokenizer that goes with them.
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    /// The chat template from the model's metadata, when it has one.
    pub chat_template: Option<String>,
}

impl LoadedModel {
    /// Loads `path`: a GGUF file, or a Hugging Face folder.
    pub fn open(path: &Path, device: &Device, repack: Repack, threads: usize) -> Result<LoadedModel> {
        match path.is_dir() {
            true => LoadedModel::hf(path, device, repack, threads),
            false => LoadedModel::gguf(path, device, repack, threads),
        }
    }

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

    /// Loads a Hugging Face folder (f32, f16 or bf16 safetensors), its matmuls held as
    /// `repack` says for dense weights.
    pub fn hf(dir: &Path, device: &Device, repack: Repack, threads: usize) -> Result<LoadedModel> {
        let cfg = hf::read_config(dir)?;
        let tok_cfg = hf::read_tokenizer_config(dir)?;
        let tokenizer = Tokenizer::from_hf(
            &dir.join("tokenizer.json"),
            tok_cfg.bos.as_deref(),
            tok_cfg.eos.as_deref(),
        )?;
        let mut tensors = hf::Tensors::open(dir, &cfg)?;
        let model = Llama::load(cfg.llama, &mut tensors, device, repack, threads)?;
        Ok(LoadedModel {
            model,
            tokenizer,
            chat_template: tok_cfg.chat_template,
        })
    }
}
