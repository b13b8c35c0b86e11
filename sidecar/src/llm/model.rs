//! The Llama forward pass over a packed batch: the new tokens of any number of sequences, each
//! at its own position with its own KV cache, go through every matmul together (the weights
//! are read once per step for the whole batch); only attention runs per sequence.

use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::kv::SeqCache;
use super::lora::{apply_spans, Adapter, Target};
use super::q8::{self, Q8Matrix};

/// A Llama-family architecture's sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
    /// Longest sequence (prompt + generated tokens) the model was trained for.
    pub context: usize,
}

impl LlamaConfig {
    pub fn from_gguf(ct: &Content) -> Result<LlamaConfig> {
        let arch = ct
            .metadata
            .get("general.architecture")
            .context("GGUF has no general.architecture")?
            .to_string()?
            .clone();
        let md = |k: &str| {
            let key = format!("{arch}.{k}");
            ct.metadata.get(&key).with_context(|| format!("GGUF has no {key}"))
        };
        let heads = md("attention.head_count")?.to_u64()? as usize;
        let hidden = md("embedding_length")?.to_u64()? as usize;
        let vocab = match ct.metadata.get(&format!("{arch}.vocab_size")) {
            Some(v) => v.to_u64()? as usize,
            None => ct
                .metadata
                .get("tokenizer.ggml.tokens")
                .context("no vocabulary")?
                .to_vec()?
                .len(),
        };
        Ok(LlamaConfig {
            vocab,
            hidden,
            layers: md("block_count")?.to_u64()? as usize,
            heads,
            kv_heads: md("attention.head_count_kv")
                .and_then(|v| Ok(v.to_u64()?))
                .unwrap_or(heads as u64) as usize,
            head_dim: hidden / heads,
            ffn: md("feed_forward_length")?.to_u64()? as usize,
            rms_eps: md("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
            rope_theta: md("rope.freq_base").and_then(|v| Ok(v.to_f32()?)).unwrap_or(10_000.0),
            context: md("context_length")?.to_u64()? as usize,
        })
    }
}

/// A matmul weight: quantized for generated tokens and, with [`Repack::Mixed`], also dense f32
/// for prompt tokens, whose many rows a dense GEMM computes far faster.
///
/// The kernels run single-threaded (candle's quantized matmul always does; its GEMM does in the
/// sidecar, see `single_threaded_kernels`), so the work is split across the engine's threads
/// here: the quantized weight into parts by output rows, each part one thread's; the prompt
/// rows into one block per thread. Every output element is computed by the same kernel over the
/// same weights in the same order either way, so the split changes no result.
struct Linear {
    quant: Quant,
    dense: Option<Tensor>,
}

/// A weight held for quantized matmuls: by candle's kernels (split into one part per thread),
/// or by our own int8 kernel (`q8`), which splits its work itself.
enum Quant {
    Candle(Vec<QMatMul>),
    Int8(Q8Matrix),
}

impl Linear {
    /// `x @ Wᵀ` for rows `x`, of which the first `prompt_rows` are prompt tokens. Each row takes
    /// the same path whatever else is in the batch, so batching never changes a result.
    fn forward(&self, x: &Tensor, prompt_rows: usize) -> candle_core::Result<Tensor> {
        let Some(w) = self.dense.as_ref().filter(|_| prompt_rows > 0) else {
            return self.quantized(x);
        };
        let total = x.dim(0)?;
        let dense = dense_rows(&x.narrow(0, 0, prompt_rows)?, w)?;
        if prompt_rows == total {
            return Ok(dense);
        }
        let generated = self.quantized(&x.narrow(0, prompt_rows, total - prompt_rows)?)?;
        Tensor::cat(&[dense, generated], 0)
    }

    /// `x @ Wᵀ` through the quantized parts, in parallel.
    fn quantized(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use rayon::prelude::*;
        let parts = match &self.quant {
            Quant::Int8(q) => return q.matmul(x),
            Quant::Candle(parts) => parts,
        };
        if let [one] = parts.as_slice() {
            return one.forward(x);
        }
        let parts = parts
            .par_iter()
            .map(|q| q.forward(x))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&parts, 1)
    }
}

/// `x @ wᵀ` as dense GEMMs over blocks of `x`'s rows, one block per thread.
fn dense_rows(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let rows = x.dim(0)?;
    let per = rows.div_ceil(rayon::current_num_threads()).max(1);
    if per >= rows {
        return x.matmul(&w.t()?);
    }
    let blocks = (0..rows)
        .step_by(per)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| x.narrow(0, start, per.min(rows - start))?.matmul(&w.t()?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&blocks, 0)
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    /// `[context, head_dim / 2]` rotary tables.
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// How quantized weights are held for the matmul kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repack {
    /// As stored in the file.
    AsStored,
    /// Formats without a vectorised CPU kernel in candle (Q4_1, Q5_0, Q5_1), Q8_0 itself and
    /// the dense f32/f16/bf16 of safetensors go to our int8 kernel (`q8`): Q8_0's blocks with
    /// f32 scales, about twice the bytes of Q4_1, values within 8-bit rounding of the original.
    SlowToQ8_0,
    /// Every matmul weight dequantized to f32 (8x the bytes of Q4): exact values, and matmuls
    /// as dense GEMMs, which batch and prefill well.
    F32,
    /// Both: f32 GEMMs for prompt tokens (fast prefill), the int8 kernel for generated tokens
    /// (fast decode). Takes the memory of both.
    Mixed,
}

impl std::str::FromStr for Repack {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "as-stored" => Ok(Repack::AsStored),
            "q8_0" => Ok(Repack::SlowToQ8_0),
            "f32" => Ok(Repack::F32),
            "mixed" => Ok(Repack::Mixed),
            other => Err(format!(
                "unknown weight format {other:?}: as-stored, q8_0, f32 or mixed"
            )),
        }
    }
}

/// One sequence's part of a step: its new tokens, appended after what its cache holds.
pub struct SeqStep<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut SeqCache,
    /// Whether these are prompt tokens (a generated token otherwise).
    pub prompt: bool,
    /// The LoRA adapter the sequence runs with, if any.
    pub adapter: Option<&'a Adapter>,
}

impl Llama {
    /// Adds `delta` (`out × in`, GGUF row order) to one weight for good: a LoRA adapter merged
    /// into the model. Only for dense weights ([`Repack::F32`]); quantized blocks cannot take
    /// a small update without requantizing.
    pub fn merge(&mut self, layer: usize, target: Target, delta: &Tensor) -> Result<()> {
        let l = self.layers.get_mut(layer).context("no such layer")?;
        let linear = match target {
            Target::Q => &mut l.q,
            Target::K => &mut l.k,
            Target::V => &mut l.v,
            Target::O => &mut l.o,
            Target::Gate => &mut l.gate,
            Target::Up => &mut l.up,
            Target::Down => &mut l.down,
        };
        let parts = match &mut linear.quant {
            Quant::Candle(parts) => parts.as_mut_slice(),
            Quant::Int8(_) => &mut [],
        };
        match parts {
            [QMatMul::Tensor(w)] if linear.dense.is_none() => {
                *w = (&*w + delta)?;
                Ok(())
            }
            _ => anyhow::bail!("only dense (f32) weights can be merged into"),
        }
    }

    /// The bytes the weights take in memory, in every form they are held.
    pub fn weight_bytes(&self) -> u64 {
        let tensor = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let linear = |l: &Linear| {
            let quant: u64 = match &l.quant {
                Quant::Int8(q) => q.bytes(),
                Quant::Candle(parts) => parts
                    .iter()
                    .map(|q| match q {
                        QMatMul::QTensor(q) => q.storage_size_in_bytes() as u64,
                        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => tensor(t),
                    })
                    .sum(),
            };
            quant + l.dense.as_ref().map_or(0, tensor)
        };
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .into_iter()
                    .map(linear)
                    .sum::<u64>()
                    + tensor(&l.attn_norm)
                    + tensor(&l.ffn_norm)
            })
            .sum();
        layers + self.embed.storage_size_in_bytes() as u64 + linear(&self.lm_head) + tensor(&self.norm)
    }

    /// Loads a GGUF file's weights (llama.cpp tensor names).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &Content,
        reader: &mut R,
        device: &Device,
        repack: Repack,
        threads: usize,
    ) -> Result<Llama> {
        let cfg = LlamaConfig::from_gguf(ct)?;
        Llama::load(cfg, &mut GgufTensors { ct, reader }, device, repack, threads)
    }

    /// Loads the weights of a model of `cfg`'s sizes from `source`.
    pub(super) fn load(
        cfg: LlamaConfig,
        source: &mut dyn Source,
        device: &Device,
        repack: Repack,
        threads: usize,
    ) -> Result<Llama> {
        let mut file = Tensors {
            source,
            device,
            repack,
            parts: threads.max(1),
        };
        let embed = Arc::new(file.tensor("token_embd.weight")?);
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            layers.push(Layer {
                q: file.linear(&p("attn_q"))?,
                k: file.linear(&p("attn_k"))?,
                v: file.linear(&p("attn_v"))?,
                o: file.linear(&p("attn_output"))?,
                gate: file.linear(&p("ffn_gate"))?,
                up: file.linear(&p("ffn_up"))?,
                down: file.linear(&p("ffn_down"))?,
                attn_norm: file.dense(&p("attn_norm"))?,
                ffn_norm: file.dense(&p("ffn_norm"))?,
            });
        }
        let norm = file.dense("output_norm.weight")?;
        // Models with tied embeddings have no output.weight: the embedding is the head.
        let lm_head = Linear {
            quant: match file.source.has("output.weight") {
                true => file.matmul("output.weight")?,
                false if repack == Repack::F32 => Quant::Candle(vec![QMatMul::Tensor(embed.dequantize(device)?)]),
                false => kernel_form(embed.clone(), repack, file.parts)?,
            },
            dense: None,
        };
        let (cos, sin) = rotary_tables(&cfg, device)?;
        Ok(Llama {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// Runs one step for `batch` and returns logits `[rows, vocab]`: one row per sequence (its
    /// last new token) or, with `every_position`, one per new token in batch order. Each
    /// sequence's cache grows by its new tokens.
    pub fn forward(&self, batch: &mut [SeqStep<'_>], every_position: bool) -> Result<Tensor> {
        // Prompt tokens first, so each matmul can take them as one block (see `Linear`).
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| !batch[i].prompt);
        let lens: Vec<usize> = batch.iter().map(|s| s.tokens.len()).collect();
        // The same stable sort as `order`'s.
        let mut sorted: Vec<&mut SeqStep<'_>> = batch.iter_mut().collect();
        sorted.sort_by_key(|s| !s.prompt);
        let prompt_rows: usize = sorted.iter().filter(|s| s.prompt).map(|s| s.tokens.len()).sum();
        let ids: Vec<u32> = sorted.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let total = ids.len();
        anyhow::ensure!(total > 0, "a step needs at least one token");
        let mut positions = Vec::with_capacity(total);
        for s in sorted.iter() {
            let start = s.cache.len();
            anyhow::ensure!(
                start + s.tokens.len() <= self.cfg.context,
                "sequence of {} tokens is longer than the context of {}",
                start + s.tokens.len(),
                self.cfg.context
            );
            positions.extend((start..start + s.tokens.len()).map(|p| p as u32));
        }
        let positions = Tensor::new(positions, &self.device)?;
        let (cos, sin) = (
            self.cos.index_select(&positions, 0)?,
            self.sin.index_select(&positions, 0)?,
        );
        let mut x = self.embed.embedding(&Tensor::new(ids, &self.device)?)?;
        let mut spans = Vec::with_capacity(sorted.len());
        let mut at = 0;
        for s in sorted.iter() {
            spans.push((at, s.tokens.len(), s.adapter));
            at += s.tokens.len();
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.cfg.rms_eps as f32)?;
            let attn = self.attention(i, layer, &h, (&cos, &sin), &mut sorted, &spans, prompt_rows)?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.cfg.rms_eps as f32)?;
            let linear = |l: &Linear, t: Target, x: &Tensor| apply_spans(&spans, i, t, x, l.forward(x, prompt_rows)?);
            let gate = candle_nn::ops::silu(&linear(&layer.gate, Target::Gate, &h)?)?;
            let mlp = linear(&layer.down, Target::Down, &(gate * linear(&layer.up, Target::Up, &h)?)?)?;
            x = (x + mlp)?;
        }
        // Rows back in the caller's order of sequences.
        let mut starts = vec![0usize; lens.len()];
        let mut at = 0;
        for (s, &i) in sorted.iter_mut().zip(&order) {
            starts[i] = at;
            at += s.tokens.len();
            s.cache.advance(s.tokens.len());
        }
        let rows: Vec<u32> = lens
            .iter()
            .zip(&starts)
            .flat_map(|(&n, &start)| {
                let first = if every_position { start } else { start + n - 1 };
                (first..start + n).map(|r| r as u32)
            })
            .collect();
        let x = x.index_select(&Tensor::new(rows, &self.device)?, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.cfg.rms_eps as f32)?;
        Ok(self.lm_head.quantized(&x)?)
    }

    /// Self-attention of layer `i` for the packed hidden states `h` (`[total, hidden]`).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        i: usize,
        layer: &Layer,
        h: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        batch: &mut [&mut SeqStep<'_>],
        spans: &super::lora::Spans<'_>,
        prompt_rows: usize,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let total = h.dim(0)?;
        // [total, heads * d] -> [1, heads, total, d], rotated by each token's position.
        let split = |t: Tensor, heads: usize| -> Result<Tensor> {
            Ok(t.reshape((total, heads, c.head_dim))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?)
        };
        let linear = |l: &Linear, t: Target, x: &Tensor| apply_spans(spans, i, t, x, l.forward(x, prompt_rows)?);
        let q =
            candle_nn::rotary_emb::rope_i(&split(linear(&layer.q, Target::Q, h)?, c.heads)?, cos, sin)?.squeeze(0)?;
        let k = candle_nn::rotary_emb::rope_i(&split(linear(&layer.k, Target::K, h)?, c.kv_heads)?, cos, sin)?
            .squeeze(0)?;
        let v = split(linear(&layer.v, Target::V, h)?, c.kv_heads)?.squeeze(0)?;
        let group = c.heads / c.kv_heads;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let mut outs = Vec::with_capacity(batch.len());
        let mut start = 0;
        for s in batch.iter_mut() {
            let n = s.tokens.len();
            let past = s.cache.len();
            let (k_all, v_all) = s.cache.append(i, &k.narrow(1, start, n)?, &v.narrow(1, start, n)?)?;
            let len = past + n;
            // Query heads that share a KV head are stacked: [kv_heads, group * n, d].
            let q_s = q.narrow(1, start, n)?.reshape((c.kv_heads, group * n, c.head_dim))?;
            let mut scores = (q_s.matmul(&k_all.t()?)? * scale)?;
            if n > 1 {
                let mask = causal_mask(n, past, &self.device)?;
                scores = scores
                    .reshape((c.kv_heads, group, n, len))?
                    .broadcast_add(&mask)?
                    .reshape((c.kv_heads, group * n, len))?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let o = probs.matmul(&v_all.contiguous()?)?; // [kv_heads, group * n, d]
            let o = o
                .reshape((c.heads, n, c.head_dim))?
                .transpose(0, 1)?
                .reshape((n, c.hidden))?;
            outs.push(o);
            start += n;
        }
        Ok(linear(&layer.o, Target::O, &Tensor::cat(&outs, 0)?)?)
    }
}

/// Where a model's tensors come from, each asked for by its llama.cpp (GGUF) name, in
/// llama.cpp's layout.
pub(super) trait Source {
    fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor>;
    /// Whether the model has tensor `name` (models with tied embeddings have no output.weight).
    fn has(&self, name: &str) -> bool;
}

/// A GGUF file's tensors.
struct GgufTensors<'a, R> {
    ct: &'a Content,
    reader: &'a mut R,
}

impl<R: std::io::Read + std::io::Seek> Source for GgufTensors<'_, R> {
    fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        Ok(self.ct.tensor(self.reader, name, device)?)
    }

    fn has(&self, name: &str) -> bool {
        self.ct.tensor_infos.contains_key(name)
    }
}

/// A source's tensors, in the forms the forward pass runs on.
struct Tensors<'a> {
    source: &'a mut dyn Source,
    device: &'a Device,
    repack: Repack,
    /// Parts each quantized weight is split into: the engine's threads.
    parts: usize,
}

impl Tensors<'_> {
    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        self.source
            .tensor(name, self.device)
            .with_context(|| format!("loading {name}"))
    }

    /// A weight for the matmul kernels, in the form `repack` asks for, split by rows.
    fn matmul(&mut self, name: &str) -> Result<Quant> {
        let w = self.tensor(name)?;
        if self.repack == Repack::F32 {
            return Ok(Quant::Candle(vec![QMatMul::Tensor(w.dequantize(self.device)?)]));
        }
        kernel_form(Arc::new(w), self.repack, self.parts)
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        if self.repack != Repack::Mixed {
            return Ok(Linear {
                quant: self.matmul(name)?,
                dense: None,
            });
        }
        let w = self.tensor(name)?;
        let dense = w.dequantize(self.device)?;
        Ok(Linear {
            quant: kernel_form(Arc::new(w), Repack::Mixed, self.parts)?,
            dense: Some(dense),
        })
    }

    /// A small tensor (norm weights) as plain f32.
    fn dense(&mut self, name: &str) -> Result<Tensor> {
        Ok(self.tensor(name)?.dequantize(self.device)?)
    }
}

/// `[n, past + n]`: 0 where query `j` (at position `past + j`) may look, minus infinity after.
fn causal_mask(n: usize, past: usize, device: &Device) -> Result<Tensor> {
    let len = past + n;
    let mask: Vec<f32> = (0..n)
        .flat_map(|j| (0..len).map(move |t| if t <= past + j { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (n, len), device)?)
}

fn rotary_tables(cfg: &LlamaConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / cfg.head_dim as f32))
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), device)?;
    let pos = Tensor::arange(0u32, cfg.context as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((cfg.context, 1))?;
    let angles = pos.broadcast_mul(&freqs)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// `w` (`[rows, cols]`) as up to `parts` weights of consecutive rows: its blocks copied as they
/// are, so each part computes exactly what the whole would for its rows.
fn split_rows(w: &Arc<QTensor>, parts: usize) -> Result<Vec<QMatMul>> {
    let (rows, cols) = w.shape().dims2()?;
    let per = rows.div_ceil(parts.clamp(1, rows.max(1)));
    if per >= rows {
        return Ok(vec![QMatMul::from_arc(w.clone())?]);
    }
    let data = w.data()?;
    let row_bytes = data.len() / rows;
    (0..rows)
        .step_by(per)
        .map(|start| {
            let n = per.min(rows - start);
            let bytes = &data[start * row_bytes..(start + n) * row_bytes];
            let part =
                candle_core::quantized::ggml_file::qtensor_from_ggml(w.dtype(), bytes, vec![n, cols], &w.device())?;
            Ok(QMatMul::from_qtensor(part)?)
        })
        .collect()
}

/// `w` in the form its matmul runs fastest in under `repack`. In the Q8 forms, formats without
/// a vectorised kernel in candle (Q4_1, Q5_0, Q5_1), Q8_0 itself and dense weights (from
/// safetensors) go to our int8 kernel, on the CPU; the others (Q4_0, the K-quants) keep
/// candle's kernel for their own format.
fn kernel_form(w: Arc<QTensor>, repack: Repack, parts: usize) -> Result<Quant> {
    let int8 = matches!(
        w.dtype(),
        GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q5_1
            | GgmlDType::Q8_0
            | GgmlDType::F32
            | GgmlDType::F16
            | GgmlDType::BF16
    );
    let cols = w.shape().dims2()?.1;
    if matches!(repack, Repack::SlowToQ8_0 | Repack::Mixed)
        && int8
        && w.device().is_cpu()
        && cols.is_multiple_of(q8::BLOCK)
    {
        return Ok(Quant::Int8(Q8Matrix::quantize(&w.dequantize(&w.device())?)?));
    }
    Ok(Quant::Candle(split_rows(&w, parts)?))
}

/// The row of `logits` (`[rows, vocab]`) as f32s.
pub fn row(logits: &Tensor, i: usize) -> Result<Vec<f32>> {
    Ok(logits.get(i)?.to_dtype(DType::F32)?.to_vec1()?)
}
