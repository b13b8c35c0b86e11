//! Hugging Face model folders: `config.json`, weights in one or more `*.safetensors` files
//! (f32, f16 or bf16) in transformers' tensor names, and `tokenizer.json`.
//!
//! The model runs in llama.cpp's layout, so tensors are renamed to GGUF names here and the
//! query and key projections are permuted the way llama.cpp's converter does: transformers
//! rotates the two halves of each head, llama.cpp (and `model`) rotates adjacent pairs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use serde::Deserialize;

use super::lora::permute_rows;
use super::model::{LlamaConfig, Source};

/// Whether `dir` looks like a Hugging Face Llama-family folder.
pub fn is_model_dir(dir: &Path) -> bool {
    dir.join("config.json").is_file() && !safetensors_files(dir).unwrap_or_default().is_empty()
}

/// The fields of transformers' `LlamaConfig` the model needs.
#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: f64,
    max_position_embeddings: usize,
    rope_theta: Option<f32>,
    /// transformers 5 keeps `rope_theta` here, with the scaling type.
    rope_parameters: Option<RopeParameters>,
    /// transformers 4's name for the scaling.
    rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    hidden_act: Option<String>,
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f32>,
    rope_type: Option<String>,
}

/// What a folder's `config.json` says, checked to be a model `model` can run.
pub struct FolderConfig {
    pub llama: LlamaConfig,
    pub tied_embeddings: bool,
}

pub fn read_config(dir: &Path) -> Result<FolderConfig> {
    let path = dir.join("config.json");
    let c: HfConfig =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("parsing {}", path.display()))?;
    if !matches!(c.model_type.as_str(), "llama" | "mistral") {
        bail!(
            "unsupported model_type {:?} (Llama-family models: llama, mistral)",
            c.model_type
        );
    }
    if c.attention_bias || c.mlp_bias {
        bail!("models with attention or MLP biases are not supported");
    }
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        bail!("unsupported hidden_act {act:?} (silu)");
    }
    // Either place may name a scaling; both are checked.
    let scalings = [c.rope_parameters.as_ref(), c.rope_scaling.as_ref()];
    if let Some(kind) = scalings
        .iter()
        .flatten()
        .filter_map(|s| s.rope_type.as_deref())
        .find(|t| *t != "default")
    {
        bail!("unsupported rope scaling {kind:?}");
    }
    let head_dim = c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads);
    if head_dim * c.num_attention_heads != c.hidden_size {
        bail!("head_dim × num_attention_heads must equal hidden_size");
    }
    let rope_theta = c
        .rope_theta
        .or(c.rope_parameters.as_ref().and_then(|p| p.rope_theta))
        .unwrap_or(10_000.0);
    Ok(FolderConfig {
        llama: LlamaConfig {
            vocab: c.vocab_size,
            hidden: c.hidden_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim,
            ffn: c.intermediate_size,
            rms_eps: c.rms_norm_eps,
            rope_theta,
            context: c.max_position_embeddings,
        },
        tied_embeddings: c.tie_word_embeddings,
    })
}

/// Every `*.safetensors` file in `dir` (one, or the shards of a large model), sorted.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}

/// A folder's tensors, asked for by GGUF name.
pub struct Tensors {
    files: MmapedSafetensors,
    heads: usize,
    kv_heads: usize,
    tied_embeddings: bool,
}

impl Tensors {
    pub fn open(dir: &Path, cfg: &FolderConfig) -> Result<Tensors> {
        let files = safetensors_files(dir)?;
        anyhow::ensure!(!files.is_empty(), "{} holds no .safetensors file", dir.display());
        // Safety: the files are only read, and the model folder is not rewritten while served.
        let files = unsafe { MmapedSafetensors::multi(&files) }.context("reading safetensors")?;
        Ok(Tensors {
            files,
            heads: cfg.llama.heads,
            kv_heads: cfg.llama.kv_heads,
            tied_embeddings: cfg.tied_embeddings,
        })
    }
}

/// transformers' name for a GGUF tensor name, and the heads its rows are permuted by (q, k).
fn hf_name(gguf: &str, heads: usize, kv_heads: usize) -> Result<(String, Option<usize>)> {
    let whole = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = whole {
        return Ok((name.to_string(), None));
    }
    let rest = gguf.strip_prefix("blk.").context("unknown tensor")?;
    let (layer, part) = rest.split_once('.').context("unknown tensor")?;
    let (name, permute) = match part.strip_suffix(".weight").context("unknown tensor")? {
        "attn_q" => ("self_attn.q_proj", Some(heads)),
        "attn_k" => ("self_attn.k_proj", Some(kv_heads)),
        "attn_v" => ("self_attn.v_proj", None),
        "attn_output" => ("self_attn.o_proj", None),
        "ffn_gate" => ("mlp.gate_proj", None),
        "ffn_up" => ("mlp.up_proj", None),
        "ffn_down" => ("mlp.down_proj", None),
        "attn_norm" => ("input_layernorm", None),
        "ffn_norm" => ("post_attention_layernorm", None),
        other => bail!("unknown tensor {other}"),
    };
    Ok((format!("model.layers.{layer}.{name}.weight"), permute))
}

impl Source for Tensors {
    fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        let (hf, permute) = hf_name(name, self.heads, self.kv_heads)?;
        let w = self
            .files
            .load(&hf, device)
            .with_context(|| format!("loading {hf}"))?
            .to_dtype(DType::F32)?;
        let w = match permute {
            Some(heads) => permute_rows(&w, heads)?,
            None => w,
        };
        Ok(QTensor::quantize(&w, GgmlDType::F32)?)
    }

    fn has(&self, name: &str) -> bool {
        if name == "output.weight" && self.tied_embeddings {
            return false;
        }
        hf_name(name, self.heads, self.kv_heads).is_ok_and(|(hf, _)| self.files.get(&hf).is_ok())
    }
}

/// The strings `tokenizer_config.json` names (`"<s>"` or `{"content": "<s>"}`), and the chat
/// template, which transformers 5 writes beside it as `chat_template.jinja`.
pub struct TokenizerConfig {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub chat_template: Option<String>,
}

pub fn read_tokenizer_config(dir: &Path) -> Result<TokenizerConfig> {
    let path = dir.join("tokenizer_config.json");
    let json: serde_json::Value = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?,
        Err(_) => serde_json::Value::Null,
    };
    let token = |k: &str| match &json[k] {
        serde_json::Value::String(s) => Some(s.clone()),
        v => v["content"].as_str().map(str::to_string),
    };
    let chat_template = match json["chat_template"].as_str() {
        Some(t) => Some(t.to_string()),
        None => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
    };
    Ok(TokenizerConfig {
        bos: token("bos_token"),
        eos: token("eos_token"),
        chat_template,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_transformers_names_with_q_and_k_permuted() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight", 9, 3).unwrap(),
            ("model.layers.3.self_attn.q_proj.weight".into(), Some(9))
        );
        assert_eq!(
            hf_name("blk.0.attn_k.weight", 9, 3).unwrap(),
            ("model.layers.0.self_attn.k_proj.weight".into(), Some(3))
        );
        assert_eq!(
            hf_name("blk.12.ffn_norm.weight", 9, 3).unwrap(),
            ("model.layers.12.post_attention_layernorm.weight".into(), None)
        );
        assert_eq!(hf_name("output.weight", 9, 3).unwrap().0, "lm_head.weight");
        assert!(hf_name("blk.0.attn_qkv.weight", 9, 3).is_err());
    }

    /// `config.json` for a small Llama, with `extra` fields set over it.
    fn config_with(extra: serde_json::Value) -> Result<FolderConfig> {
        let mut c = serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 100, "rms_norm_eps": 1e-5, "max_position_embeddings": 256,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
        read_config(dir.path())
    }

    #[test]
    fn a_config_is_read_with_transformers_4_and_5_names() {
        let c = config_with(serde_json::json!({})).unwrap();
        assert_eq!(
            (c.llama.head_dim, c.llama.kv_heads, c.llama.rope_theta),
            (16, 2, 500000.0)
        );
        let c = config_with(serde_json::json!({"rope_theta": 10000.0, "rope_parameters": null})).unwrap();
        assert_eq!(c.llama.rope_theta, 10000.0);
    }

    #[test]
    fn what_the_model_cannot_run_is_refused_with_the_reason() {
        for (extra, reason) in [
            (serde_json::json!({"model_type": "qwen2"}), "model_type"),
            (serde_json::json!({"attention_bias": true}), "biases"),
            (serde_json::json!({"hidden_act": "gelu"}), "hidden_act"),
            (
                serde_json::json!({"rope_scaling": {"rope_type": "llama3"}}),
                "rope scaling",
            ),
            (serde_json::json!({"head_dim": 32}), "head_dim"),
        ] {
            let err = config_with(extra.clone())
                .err()
                .unwrap_or_else(|| panic!("{extra} accepted"));
            assert!(err.to_string().contains(reason), "{extra}: {err}");
        }
    }
}
