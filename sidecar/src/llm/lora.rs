//! LoRA adapters in PEFT's format, applied per sequence: `adapter_config.json` (`r`,
//! `lora_alpha`, `use_rslora`) and `adapter_model.safetensors` with
//! `base_model.model.model.layers.{i}.{self_attn|mlp}.{name}.lora_A.weight` (`r × in`) and
//! `lora_B.weight` (`out × r`). A layer's output gains `scale · x·Aᵀ·Bᵀ` for the rows of the
//! sequences that use the adapter; other rows, in the same batch, are untouched.
//!
//! GGUF stores `q_proj` and `k_proj` with their output rows permuted for interleaved rotary
//! positions (llama.cpp's converter); an adapter trained on Hugging Face's weights gets its
//! `lora_B` rows permuted the same way here.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::LlamaConfig;

/// The matmuls of a layer an adapter may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The module's name under the layer in Hugging Face's Llama.
    fn peft_name(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }
}

#[derive(Deserialize)]
struct AdapterConfig {
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
}

/// One low-rank update: `Aᵀ` (`in × r`) and `Bᵀ·scale` (`r × out`), ready to multiply rows.
struct Pair {
    a_t: Tensor,
    b_t_scaled: Tensor,
}

pub struct Adapter {
    pub name: String,
    pub rank: usize,
    pub scale: f64,
    pairs: HashMap<(usize, Target), Pair>,
}

/// llama.cpp's `permute(w, heads)`: rows regrouped per head from halves to interleaved pairs.
pub fn permute_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

impl Adapter {
    /// Loads a PEFT adapter folder for a model of `cfg`'s sizes.
    pub fn load(name: &str, dir: &Path, cfg: &LlamaConfig, device: &Device) -> Result<Adapter> {
        let config_path = dir.join("adapter_config.json");
        let config: AdapterConfig = serde_json::from_slice(
            &std::fs::read(&config_path).with_context(|| format!("reading {}", config_path.display()))?,
        )
        .with_context(|| format!("parsing {}", config_path.display()))?;
        anyhow::ensure!(config.r > 0, "adapter rank must be positive");
        anyhow::ensure!(!config.fan_in_fan_out, "fan_in_fan_out adapters are not supported");
        let scale = match config.use_rslora {
            true => config.lora_alpha / (config.r as f64).sqrt(),
            false => config.lora_alpha / config.r as f64,
        };
        let weights = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&weights, device)
            .with_context(|| format!("reading {}", weights.display()))?;
        let mut pairs = HashMap::new();
        for layer in 0..cfg.layers {
            for target in Target::ALL {
                let prefix = format!("base_model.model.model.layers.{layer}.{}", target.peft_name());
                let (Some(a), Some(b)) = (
                    tensors.get(&format!("{prefix}.lora_A.weight")),
                    tensors.get(&format!("{prefix}.lora_B.weight")),
                ) else {
                    continue;
                };
                pairs.insert((layer, target), Pair::new(a, b, target, cfg, scale, &prefix)?);
            }
        }
        anyhow::ensure!(
            !pairs.is_empty(),
            "{} holds no LoRA weights for this model",
            weights.display()
        );
        Ok(Adapter {
            name: name.to_string(),
            rank: config.r,
            scale,
            pairs,
        })
    }

    /// `out` with this adapter's update for `target` of `layer` added, for input rows `x`.
    pub fn apply(&self, layer: usize, target: Target, x: &Tensor, out: Tensor) -> candle_core::Result<Tensor> {
        match self.pairs.get(&(layer, target)) {
            Some(p) => out + x.matmul(&p.a_t)?.matmul(&p.b_t_scaled)?,
            None => Ok(out),
        }
    }
}

impl Pair {
    fn new(a: &Tensor, b: &Tensor, target: Target, cfg: &LlamaConfig, scale: f64, name: &str) -> Result<Pair> {
        let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
        let (r, input) = a.dims2().with_context(|| format!("{name}.lora_A"))?;
        let (output, r_b) = b.dims2().with_context(|| format!("{name}.lora_B"))?;
        let (want_in, want_out) = sizes(target, cfg);
        anyhow::ensure!(
            r == r_b && input == want_in && output == want_out,
            "{name}: lora_A {r}×{input} and lora_B {output}×{r_b} do not fit a {want_out}×{want_in} weight"
        );
        let b = match target {
            Target::Q => permute_rows(&b, cfg.heads)?,
            Target::K => permute_rows(&b, cfg.kv_heads)?,
            _ => b,
        };
        Ok(Pair {
            a_t: a.t()?.contiguous()?,
            b_t_scaled: (b.t()? * scale)?.contiguous()?,
        })
    }
}

/// A target's (input, output) sizes.
fn sizes(target: Target, c: &LlamaConfig) -> (usize, usize) {
    match target {
        Target::Q => (c.hidden, c.heads * c.head_dim),
        Target::K | Target::V => (c.hidden, c.kv_heads * c.head_dim),
        Target::O => (c.heads * c.head_dim, c.hidden),
        Target::Gate | Target::Up => (c.hidden, c.ffn),
        Target::Down => (c.ffn, c.hidden),
    }
}

/// Which rows of a packed batch use which adapter: `(first row, rows, adapter)`.
pub type Spans<'a> = [(usize, usize, Option<&'a Adapter>)];

/// `out` (the base matmul of `x`) with each span's adapter update added to its rows.
pub fn apply_spans(
    spans: &Spans<'_>,
    layer: usize,
    target: Target,
    x: &Tensor,
    out: Tensor,
) -> candle_core::Result<Tensor> {
    if spans.iter().all(|s| s.2.is_none()) {
        return Ok(out);
    }
    let parts = spans
        .iter()
        .map(|&(start, n, adapter)| {
            let rows = out.narrow(0, start, n)?;
            match adapter {
                Some(a) => a.apply(layer, target, &x.narrow(0, start, n)?, rows),
                None => Ok(rows),
            }
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}
