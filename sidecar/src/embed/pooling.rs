//! From token states to one vector per input, as the model's sentence-transformers folder says:
//! `1_Pooling/config.json` picks the pooling, a `Normalize` module in `modules.json` turns on
//! L2 normalisation.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Tensor;
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of every token's state.
    Mean,
    /// The first token's (`[CLS]`) state.
    Cls,
    /// The element-wise maximum over tokens.
    Max,
    /// The sum divided by the square root of the length.
    MeanSqrtLen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolingConfig {
    pub pooling: Pooling,
    pub normalize: bool,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

impl PoolingConfig {
    /// Reads a sentence-transformers folder. Without `modules.json` the model is taken as a
    /// plain encoder: mean pooling, normalised, as OpenAI's embeddings are.
    pub fn read(dir: &Path) -> Result<PoolingConfig> {
        let modules_path = dir.join("modules.json");
        let Ok(text) = std::fs::read(&modules_path) else {
            return Ok(PoolingConfig {
                pooling: Pooling::Mean,
                normalize: true,
            });
        };
        let modules: Vec<Module> =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", modules_path.display()))?;
        let mut pooling = Pooling::Mean;
        for m in &modules {
            if m.kind.ends_with(".Pooling") {
                let path = dir.join(&m.path).join("config.json");
                let file: PoolingFile = serde_json::from_slice(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("parsing {}", path.display()))?;
                pooling = file.pooling()?;
            } else if !m.kind.ends_with(".Transformer") && !m.kind.ends_with(".Normalize") {
                anyhow::bail!("sentence-transformers module {} is not supported", m.kind);
            }
        }
        Ok(PoolingConfig {
            pooling,
            normalize: modules.iter().any(|m| m.kind.ends_with(".Normalize")),
        })
    }

    /// One vector from a sequence's token states `[n, hidden]`.
    pub fn pool(&self, states: &Tensor) -> Result<Vec<f32>> {
        let n = states.dim(0)? as f64;
        let v = match self.pooling {
            Pooling::Mean => states.mean(0)?,
            Pooling::Cls => states.get(0)?,
            Pooling::Max => states.max(0)?,
            Pooling::MeanSqrtLen => (states.sum(0)? / n.sqrt())?,
        };
        let mut v = v.to_vec1::<f32>()?;
        if self.normalize {
            l2_normalize(&mut v);
        }
        Ok(v)
    }
}

impl PoolingFile {
    fn pooling(&self) -> Result<Pooling> {
        let modes = [
            (self.pooling_mode_mean_tokens, Pooling::Mean),
            (self.pooling_mode_cls_token, Pooling::Cls),
            (self.pooling_mode_max_tokens, Pooling::Max),
            (self.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
        ];
        let on: Vec<Pooling> = modes.iter().filter(|(on, _)| *on).map(|(_, p)| *p).collect();
        match on.as_slice() {
            [one] => Ok(*one),
            [] => anyhow::bail!("the pooling config turns on no pooling mode"),
            _ => anyhow::bail!("pooling modes combined ({on:?}) are not supported"),
        }
    }
}

/// Scales `v` to unit length, as torch's `normalize` does (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn states() -> Tensor {
        Tensor::new(&[[1f32, -2.0], [3.0, 4.0]], &Device::Cpu).unwrap()
    }

    fn pooled(pooling: Pooling) -> Vec<f32> {
        PoolingConfig {
            pooling,
            normalize: false,
        }
        .pool(&states())
        .unwrap()
    }

    #[test]
    fn each_pooling_mode_reduces_tokens_as_sentence_transformers_does() {
        assert_eq!(pooled(Pooling::Mean), vec![2.0, 1.0]);
        assert_eq!(pooled(Pooling::Cls), vec![1.0, -2.0]);
        assert_eq!(pooled(Pooling::Max), vec![3.0, 4.0]);
        let s = 2f32.sqrt();
        assert_eq!(pooled(Pooling::MeanSqrtLen), vec![4.0 / s, 2.0 / s]);
    }

    #[test]
    fn normalised_vectors_have_unit_length_and_zero_stays_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn combined_or_missing_pooling_modes_are_refused() {
        let file = |mean, cls| PoolingFile {
            pooling_mode_cls_token: cls,
            pooling_mode_mean_tokens: mean,
            pooling_mode_max_tokens: false,
            pooling_mode_mean_sqrt_len_tokens: false,
        };
        assert!(file(true, true).pooling().is_err());
        assert!(file(false, false).pooling().is_err());
        assert_eq!(file(false, true).pooling().unwrap(), Pooling::Cls);
    }
}
