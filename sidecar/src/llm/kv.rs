//! One sequence's key/value cache: per layer, keys and values of every position so far, in a
//! buffer that grows by doubling so appending a token copies only that token.

use candle_core::{DType, Device, Result, Tensor};

use super::model::LlamaConfig;

pub struct SeqCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Positions stored (the same in every layer once a forward pass is over).
    len: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// Room the first append reserves, in positions.
const FIRST_CAPACITY: usize = 64;

impl SeqCache {
    pub fn new(cfg: &LlamaConfig) -> SeqCache {
        SeqCache {
            layers: (0..cfg.layers).map(|_| None).collect(),
            len: 0,
            capacity: 0,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k` and `v` (`[kv_heads, n, head_dim]`) to `layer` after the cached positions and
    /// returns every position's keys and values so far (`[kv_heads, len + n, head_dim]`).
    /// [`SeqCache::advance`] moves `len` once every layer has its `n` new positions.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        let need = self.len + n;
        if need > self.capacity {
            self.grow(need.next_power_of_two().max(FIRST_CAPACITY), k.device())?;
        }
        let (kb, vb) = self.layers[layer].as_mut().expect("grow allocates every layer");
        kb.slice_set(&k.contiguous()?, 1, self.len)?;
        vb.slice_set(&v.contiguous()?, 1, self.len)?;
        Ok((kb.narrow(1, 0, need)?, vb.narrow(1, 0, need)?))
    }

    /// Marks `n` more positions as cached, after all layers appended them.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    fn grow(&mut self, capacity: usize, device: &Device) -> Result<()> {
        let shape = (self.kv_heads, capacity, self.head_dim);
        for layer in self.layers.iter_mut() {
            let (k, v) = (
                Tensor::zeros(shape, DType::F32, device)?,
                Tensor::zeros(shape, DType::F32, device)?,
            );
            if let Some((old_k, old_v)) = layer.take() {
                if self.len > 0 {
                    k.slice_set(&old_k.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                    v.slice_set(&old_v.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
            }
            *layer = Some((k, v));
        }
        self.capacity = capacity;
        Ok(())
    }
}
