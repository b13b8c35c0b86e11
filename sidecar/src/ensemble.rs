//! The `std` model: an ensemble of small MLPs, stored stacked along a leading member axis so
//! the whole ensemble trains with one batched matmul per layer.
//!
//! Shape of one member: hidden widths start at `clamp(in, 32, 1024)` and halve (or double)
//! towards `clamp(2 * out, 16, 1024)`; SiLU between layers; the last block is Tanh then Linear.
//! For in=8, out=2: Linear(8,32) SiLU Linear(32,16) Tanh Linear(16,2).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use rand::{Rng, SeedableRng};

use crate::activation::{bias_activate, Activation};

/// How many members an ensemble has.
pub const MEMBERS: usize = 4;

/// Layer widths of one member, input and output included.
pub fn std_widths(in_size: usize, out_size: usize) -> Vec<usize> {
    let target = (2 * out_size).clamp(16, 1024);
    let mut h = in_size.clamp(32, 1024);
    let mut widths = vec![in_size, h];
    while h != target {
        h = if h > target {
            (h / 2).max(target)
        } else {
            (h * 2).min(target)
        };
        widths.push(h);
    }
    widths.push(out_size);
    widths
}

/// The trainable ensemble: layer `l` has weights `[K, in_l, out_l]` and biases `[K, 1, out_l]`.
pub struct Ensemble {
    pub widths: Vec<usize>,
    pub weights: Vec<Var>,
    pub biases: Vec<Var>,
    /// The member that answers inference requests.
    pub best: usize,
}

impl Ensemble {
    /// PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from a fixed seed so an
    /// untrained model answers the same way on every sidecar.
    pub fn init(widths: &[usize], members: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut uniform =
            |n: usize, bound: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for pair in widths.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let bound = 1.0 / (a as f32).sqrt();
            weights.push(Var::from_vec(uniform(members * a * b, bound), (members, a, b), device)?);
            biases.push(Var::from_vec(uniform(members * b, bound), (members, 1, b), device)?);
        }
        Ok(Ensemble {
            widths: widths.to_vec(),
            weights,
            biases,
            best: 0,
        })
    }

    pub fn members(&self) -> usize {
        self.weights[0].dim(0).unwrap_or(0)
    }

    /// Every member on the same inputs: `[B, in] -> [K, B, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, d) = x.dims2()?;
        let mut h = x.unsqueeze(0)?.broadcast_as((self.members(), b, d))?.contiguous()?;
        let n = self.weights.len();
        for (i, (w, bias)) in self.weights.iter().zip(&self.biases).enumerate() {
            h = Activation::after(i, n).apply(h.matmul(w.as_tensor())?.broadcast_add(bias.as_tensor())?)?;
        }
        Ok(h)
    }

    /// Mean squared error of each member: `[K]`.
    pub fn member_losses(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.forward(x)?
            .broadcast_sub(y)?
            .sqr()?
            .mean(D::Minus1)?
            .mean(D::Minus1)
    }

    pub fn vars(&self) -> Vec<Var> {
        self.weights.iter().chain(&self.biases).cloned().collect()
    }

    /// One member as a standalone network for inference.
    pub fn member(&self, i: usize) -> Result<Mlp> {
        let weights = self
            .weights
            .iter()
            .map(|w| w.get(i)?.contiguous())
            .collect::<Result<_>>()?;
        let biases = self
            .biases
            .iter()
            .map(|b| b.get(i)?.squeeze(0)?.contiguous())
            .collect::<Result<_>>()?;
        Ok(Mlp { weights, biases })
    }

    /// Named tensors for a checkpoint.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (l, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            out.insert(format!("layers.{l}.weight"), w.as_tensor().clone());
            out.insert(format!("layers.{l}.bias"), b.as_tensor().clone());
        }
        out
    }

    /// Rebuilds an ensemble from checkpoint tensors.
    pub fn from_tensors(widths: &[usize], best: usize, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let get = |name: String| {
            tensors
                .get(&name)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks {name}")))
        };
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for (l, pair) in widths.windows(2).enumerate() {
            let w = get(format!("layers.{l}.weight"))?.to_dtype(DType::F32)?;
            let b = get(format!("layers.{l}.bias"))?.to_dtype(DType::F32)?;
            let k = w.dim(0)?;
            if w.dims() != [k, pair[0], pair[1]] || b.dims() != [k, 1, pair[1]] {
                candle_core::bail!(
                    "layer {l} has shape {:?}, expected [K, {}, {}]",
                    w.dims(),
                    pair[0],
                    pair[1]
                );
            }
            weights.push(Var::from_tensor(&w)?);
            biases.push(Var::from_tensor(&b)?);
        }
        if best >= weights[0].dim(0)? {
            candle_core::bail!("best member {best} out of range");
        }
        Ok(Ensemble {
            widths: widths.to_vec(),
            weights,
            biases,
            best,
        })
    }
}

/// One trained member: weights `[in, out]`, biases `[out]`.
pub struct Mlp {
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.weights.len();
        let mut h = x.clone();
        for (i, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            h = bias_activate(h.matmul(w)?, b, Activation::after(i, n))?;
        }
        Ok(h)
    }

    pub fn in_size(&self) -> usize {
        self.weights[0].dim(0).unwrap_or(0)
    }

    /// Multiply-adds one input row costs.
    pub fn macs_per_row(&self) -> usize {
        self.weights.iter().map(|w| w.elem_count()).sum()
    }

    pub fn out_size(&self) -> usize {
        self.weights.last().and_then(|w| w.dim(1).ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_halve_or_double_towards_the_output() {
        assert_eq!(std_widths(8, 2), [8, 32, 16, 2]);
        assert_eq!(std_widths(64, 8), [64, 64, 32, 16, 8]);
        assert_eq!(std_widths(2048, 2), [2048, 1024, 512, 256, 128, 64, 32, 16, 2]);
        assert_eq!(std_widths(2, 64), [2, 32, 64, 128, 64]);
        assert_eq!(std_widths(16, 8), [16, 32, 16, 8]);
    }

    /// An independent f64 reference: plain loops, no candle.
    fn reference_forward(ws: &[Vec<Vec<f32>>], bs: &[Vec<f32>], x: &[f32]) -> Vec<f64> {
        let n = ws.len();
        let mut h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for (i, (w, b)) in ws.iter().zip(bs).enumerate() {
            let mut next: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            for (a, row) in w.iter().enumerate() {
                for (j, &wij) in row.iter().enumerate() {
                    next[j] += h[a] * wij as f64;
                }
            }
            if i + 1 < n {
                let act = |v: f64| if i + 2 == n { v.tanh() } else { v / (1.0 + (-v).exp()) };
                next = next.into_iter().map(act).collect();
            }
            h = next;
        }
        h
    }

    #[test]
    fn the_batched_forward_matches_an_independent_reference_for_every_member() {
        let dev = Device::Cpu;
        let widths = std_widths(5, 3);
        let ens = Ensemble::init(&widths, 3, 11, &dev).unwrap();
        let x: Vec<f32> = (0..4 * 5).map(|i| ((i * 37 % 17) as f32 / 8.0) - 1.0).collect();
        let xt = Tensor::from_vec(x.clone(), (4, 5), &dev).unwrap();
        let out: Vec<Vec<Vec<f32>>> = ens.forward(&xt).unwrap().to_vec3().unwrap();
        for (k, batched) in out.iter().enumerate() {
            let ws: Vec<Vec<Vec<f32>>> = ens
                .weights
                .iter()
                .map(|w| w.get(k).unwrap().to_vec2().unwrap())
                .collect();
            let bs: Vec<Vec<f32>> = ens
                .biases
                .iter()
                .map(|b| b.get(k).unwrap().flatten_all().unwrap().to_vec1().unwrap())
                .collect();
            let single = ens.member(k).unwrap().forward(&xt).unwrap().to_vec2::<f32>().unwrap();
            for r in 0..4 {
                let expected = reference_forward(&ws, &bs, &x[r * 5..r * 5 + 5]);
                for j in 0..3 {
                    assert!((batched[r][j] as f64 - expected[j]).abs() < 1e-5, "member {k} row {r}");
                    assert!(
                        (single[r][j] as f64 - expected[j]).abs() < 1e-5,
                        "single member {k} row {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_model() {
        let dev = Device::Cpu;
        let a = Ensemble::init(&[3, 32, 16, 1], 2, 5, &dev).unwrap();
        let b = Ensemble::init(&[3, 32, 16, 1], 2, 5, &dev).unwrap();
        let c = Ensemble::init(&[3, 32, 16, 1], 2, 6, &dev).unwrap();
        let flat = |e: &Ensemble| e.weights[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(flat(&a), flat(&c));
    }

    #[test]
    fn checkpoint_tensors_round_trip_and_shapes_are_checked() {
        let dev = Device::Cpu;
        let widths = std_widths(4, 2);
        let ens = Ensemble::init(&widths, 2, 1, &dev).unwrap();
        let back = Ensemble::from_tensors(&widths, 1, &ens.tensors()).unwrap();
        assert_eq!(back.best, 1);
        let x = Tensor::ones((2, 4), DType::F32, &dev).unwrap();
        let d = (ens.forward(&x).unwrap() - back.forward(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        assert!(Ensemble::from_tensors(&std_widths(5, 2), 0, &ens.tensors()).is_err());
        assert!(Ensemble::from_tensors(&widths, 2, &ens.tensors()).is_err());
    }
}
