//! The BERT encoder over a packed batch: every sequence's tokens share each matmul as one
//! `[total, hidden]` block, and attention runs per sequence, so no row is padding.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The sizes in a BERT `config.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_position_type() -> String {
    "absolute".into()
}

struct Layer {
    /// Query, key and value as one `[3 * hidden, hidden]` projection.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

pub struct Bert {
    pub cfg: BertConfig,
    words: Tensor,
    positions: Tensor,
    /// Token type 0's embedding: every input is one segment.
    segment: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
}

impl Bert {
    /// Reads the weights under `vb`, with or without a `bert.` prefix on their names.
    pub fn load(vb: VarBuilder, cfg: BertConfig) -> Result<Bert> {
        anyhow::ensure!(
            cfg.hidden_act == "gelu",
            "activation {:?} is not supported (only gelu)",
            cfg.hidden_act
        );
        anyhow::ensure!(
            cfg.position_embedding_type == "absolute",
            "position embeddings {:?} are not supported (only absolute)",
            cfg.position_embedding_type
        );
        anyhow::ensure!(
            cfg.hidden_size.is_multiple_of(cfg.num_attention_heads),
            "hidden size is not a multiple of the head count"
        );
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let words = e.get((cfg.vocab_size, h), "word_embeddings.weight")?;
        let positions = e.get((cfg.max_position_embeddings, h), "position_embeddings.weight")?;
        let segment = e
            .get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?
            .get(0)?;
        let embed_norm = candle_nn::layer_norm(h, cfg.layer_norm_eps, e.pp("LayerNorm"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), &cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Bert {
            device: words.device().clone(),
            words,
            positions,
            segment,
            embed_norm,
            layers,
            cfg,
        })
    }

    /// The last hidden states of every token of every sequence, packed: `[total, hidden]`,
    /// sequences in order.
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Tensor> {
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        anyhow::ensure!(lens.iter().all(|&n| n > 0), "an input has no tokens");
        let longest = lens.iter().copied().max().context("no inputs")?;
        anyhow::ensure!(
            longest <= self.cfg.max_position_embeddings,
            "an input of {longest} tokens is longer than the model's {} positions",
            self.cfg.max_position_embeddings
        );
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        let pos: Vec<u32> = lens.iter().flat_map(|&n| 0..n as u32).collect();
        let ids = Tensor::new(ids, &self.device)?;
        let pos = Tensor::new(pos, &self.device)?;
        let x = self
            .words
            .index_select(&ids, 0)?
            .add(&self.positions.index_select(&pos, 0)?)?
            .broadcast_add(&self.segment)?;
        let mut x = self.embed_norm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, &lens, &self.cfg)?;
        }
        Ok(x)
    }
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Layer> {
        let h = cfg.hidden_size;
        let a = vb.pp("attention");
        let s = a.pp("self");
        let part = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                s.get((h, h), &format!("{name}.weight"))?,
                s.get(h, &format!("{name}.bias"))?,
            ))
        };
        let (qw, qb) = part("query")?;
        let (kw, kb) = part("key")?;
        let (vw, vb_) = part("value")?;
        let qkv = Linear::new(Tensor::cat(&[qw, kw, vw], 0)?, Some(Tensor::cat(&[qb, kb, vb_], 0)?));
        Ok(Layer {
            qkv,
            attn_out: candle_nn::linear(h, h, a.pp("output.dense"))?,
            attn_norm: candle_nn::layer_norm(h, cfg.layer_norm_eps, a.pp("output.LayerNorm"))?,
            up: candle_nn::linear(h, cfg.intermediate_size, vb.pp("intermediate.dense"))?,
            down: candle_nn::linear(cfg.intermediate_size, h, vb.pp("output.dense"))?,
            out_norm: candle_nn::layer_norm(h, cfg.layer_norm_eps, vb.pp("output.LayerNorm"))?,
        })
    }

    fn forward(&self, x: &Tensor, lens: &[usize], cfg: &BertConfig) -> Result<Tensor> {
        let attn = self.attn_out.forward(&self.attention(x, lens, cfg)?)?;
        let x = self.attn_norm.forward(&(x + attn)?)?;
        let ff = self.down.forward(&self.up.forward(&x)?.gelu_erf()?)?;
        Ok(self.out_norm.forward(&(x + ff)?)?)
    }

    /// Bidirectional self-attention within each sequence of the packed `x`.
    fn attention(&self, x: &Tensor, lens: &[usize], cfg: &BertConfig) -> Result<Tensor> {
        let (total, h) = x.dims2()?;
        let heads = cfg.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f64).sqrt();
        // [total, 3h] -> three [heads, total, d].
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((total, 3, heads, d))?
            .permute((1, 2, 0, 3))?;
        let (q, k, v) = (
            (qkv.get(0)? * scale)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let mut outs = Vec::with_capacity(lens.len());
        let mut start = 0;
        for &n in lens {
            let (q, k, v) = (q.narrow(1, start, n)?, k.narrow(1, start, n)?, v.narrow(1, start, n)?);
            let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
            // [heads, n, d] -> [n, heads * d]
            outs.push(probs.matmul(&v)?.transpose(0, 1)?.reshape((n, h))?);
            start += n;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}

/// Loads `model.safetensors` (f32 or f16, computed in f32) with its `config.json`.
pub fn load(dir: &std::path::Path, device: &Device) -> Result<Bert> {
    let cfg_path = dir.join("config.json");
    let cfg: BertConfig =
        serde_json::from_slice(&std::fs::read(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?)
            .with_context(|| format!("parsing {}", cfg_path.display()))?;
    let weights = dir.join("model.safetensors");
    // SAFETY: the file is mapped read-only and the model folder is not rewritten while served.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
    Bert::load(vb, cfg).with_context(|| format!("loading {}", weights.display()))
}
