//! Training the `std` ensemble: Adam, minibatches, replacing weak members with perturbed copies
//! of the best, and stopping once the loss curve is flat.

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};

use crate::ensemble::Ensemble;

/// Adam (Kingma & Ba) over the ensemble's variables. candle-nn's AdamW cannot copy the state of
/// one ensemble member onto another, which member replacement needs.
pub struct Adam {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub t: u64,
}

const B1: f64 = 0.9;
const B2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Adam {
    pub fn new(vars: Vec<Var>) -> Result<Self> {
        let zeros = |v: &Var| v.zeros_like();
        let m = vars.iter().map(zeros).collect::<Result<_>>()?;
        let v = vars.iter().map(zeros).collect::<Result<_>>()?;
        Ok(Adam { vars, m, v, t: 0 })
    }

    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - B1.powi(self.t as i32);
        let bc2 = 1.0 - B2.powi(self.t as i32);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let g = g.detach();
            self.m[i] = ((self.m[i].affine(B1, 0.0)? + g.affine(1.0 - B1, 0.0)?)?).detach();
            self.v[i] = ((self.v[i].affine(B2, 0.0)? + g.sqr()?.affine(1.0 - B2, 0.0)?)?).detach();
            let denom = self.v[i].affine(1.0 / bc2, 0.0)?.sqrt()?.affine(1.0, EPS)?;
            let update = self.m[i].affine(lr / bc1, 0.0)?.div(&denom)?;
            var.set(&var.as_tensor().detach().sub(&update)?)?;
        }
        Ok(())
    }

    fn state(&self) -> impl Iterator<Item = (String, &Tensor)> {
        let m = self.m.iter().enumerate().map(|(i, t)| (format!("adam.m.{i}"), t));
        let v = self.v.iter().enumerate().map(|(i, t)| (format!("adam.v.{i}"), t));
        m.chain(v)
    }

    fn restore(&mut self, tensors: &HashMap<String, Tensor>, t: u64) {
        for (i, var) in self.vars.iter().enumerate() {
            let (Some(m), Some(v)) = (tensors.get(&format!("adam.m.{i}")), tensors.get(&format!("adam.v.{i}"))) else {
                return;
            };
            if m.dims() == var.dims() && v.dims() == var.dims() {
                (self.m[i], self.v[i]) = (m.clone(), v.clone());
            }
        }
        self.t = t;
    }
}

/// Replaces slot `to` of a member-stacked tensor with slot `from` (plus optional noise).
fn copy_slot(t: &Tensor, from: usize, to: usize, noise: f64) -> Result<Tensor> {
    let mut src = t.narrow(0, from, 1)?;
    if noise > 0.0 {
        src = (&src + src.randn_like(0.0, noise)?)?;
    }
    let mut ranges: Vec<Range<usize>> = t.dims().iter().map(|&d| 0..d).collect();
    ranges[0] = to..to + 1;
    t.slice_assign(&ranges, &src)
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Minibatch size; datasets at most this big train full-batch.
    pub batch: usize,
    pub lr_max: f64,
    pub lr_min: f64,
    /// Steps over which the learning rate halves.
    pub lr_half_life: f64,
    /// How often members are scored on all data (and the weakest replaced).
    pub eval_every: u64,
    /// The loss is flat when it improved by less than `min_improvement` (relative) over this many steps.
    pub window: u64,
    pub min_improvement: f64,
    pub max_steps: u64,
    /// A member is replaced when its loss is this many times the best member's.
    pub replace_ratio: f64,
    pub noise: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch: 256,
            lr_max: 1e-2,
            lr_min: 5e-4,
            lr_half_life: 1500.0,
            eval_every: 100,
            window: 1500,
            min_improvement: 0.02,
            max_steps: 40_000,
            replace_ratio: 1.5,
            noise: 0.01,
        }
    }
}

/// Where training stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub step: u64,
    pub loss: f64,
    pub flat: bool,
}

pub struct Trainer {
    pub ens: Ensemble,
    adam: Adam,
    x: Tensor,
    y: Tensor,
    pub step: u64,
    pub best_loss: f64,
    history: Vec<(u64, f64)>,
    rng: rand::rngs::StdRng,
    cfg: TrainConfig,
}

impl Trainer {
    pub fn new(ens: Ensemble, x: Tensor, y: Tensor, cfg: TrainConfig) -> Result<Self> {
        let adam = Adam::new(ens.vars())?;
        let mut t = Trainer {
            ens,
            adam,
            x,
            y,
            step: 0,
            best_loss: f64::INFINITY,
            history: Vec::new(),
            rng: rand::rngs::StdRng::from_os_rng(),
            cfg,
        };
        t.evaluate()?;
        Ok(t)
    }

    /// Resumes from checkpoint tensors (weights, optimizer state, step) and the loss history
    /// that tells when the curve is flat, so a job that gave way goes on where it stopped.
    pub fn resume(widths: &[usize], ckpt: &Checkpoint, x: Tensor, y: Tensor, cfg: TrainConfig) -> Result<Self> {
        let ens = Ensemble::from_tensors(widths, ckpt.best, &ckpt.tensors)?;
        let mut t = Trainer::new(ens, x, y, cfg)?;
        t.adam.restore(&ckpt.tensors, ckpt.step);
        t.step = ckpt.step;
        // `new` scored the members at step 0; that score belongs to this step.
        let now = (t.step, t.best_loss);
        t.history = ckpt.history.iter().copied().filter(|&(s, _)| s < t.step).collect();
        t.history.push(now);
        Ok(t)
    }

    /// New data: keep the weights, restart the flatness window.
    pub fn set_data(&mut self, x: Tensor, y: Tensor) -> Result<()> {
        (self.x, self.y) = (x, y);
        self.history.clear();
        self.evaluate()
    }

    fn lr(&self) -> f64 {
        let decay = 0.5f64.powf(self.step as f64 / self.cfg.lr_half_life);
        (self.cfg.lr_max * decay).max(self.cfg.lr_min)
    }

    fn batch(&mut self) -> Result<(Tensor, Tensor)> {
        let n = self.x.dim(0)?;
        if n <= self.cfg.batch {
            return Ok((self.x.clone(), self.y.clone()));
        }
        let idx: Vec<u32> = (0..self.cfg.batch)
            .map(|_| self.rng.random_range(0..n as u32))
            .collect();
        let idx = Tensor::from_vec(idx, self.cfg.batch, self.x.device())?;
        Ok((self.x.index_select(&idx, 0)?, self.y.index_select(&idx, 0)?))
    }

    /// One optimisation step on one minibatch, for every member at once.
    pub fn step(&mut self) -> Result<()> {
        let (bx, by) = self.batch()?;
        let grads = self.ens.member_losses(&bx, &by)?.sum_all()?.backward()?;
        self.adam.step(&grads, self.lr())?;
        self.step += 1;
        if self.step.is_multiple_of(self.cfg.eval_every) {
            self.evaluate()?;
        }
        Ok(())
    }

    /// Scores every member on all data; the best answers requests, the weakest may be replaced.
    fn evaluate(&mut self) -> Result<()> {
        let losses: Vec<f32> = self.ens.member_losses(&self.x, &self.y)?.to_vec1()?;
        let order = |a: &(usize, &f32), b: &(usize, &f32)| a.1.total_cmp(b.1);
        let best = losses.iter().enumerate().min_by(order).map_or(0, |(i, _)| i);
        let worst = losses.iter().enumerate().max_by(order).map_or(0, |(i, _)| i);
        self.ens.best = best;
        self.best_loss = losses[best] as f64;
        self.history.push((self.step, self.best_loss));
        if worst != best && losses[worst] as f64 > self.cfg.replace_ratio * self.best_loss {
            self.replace(worst, best)?;
        }
        Ok(())
    }

    fn replace(&mut self, worst: usize, best: usize) -> Result<()> {
        for var in self.ens.vars() {
            var.set(&copy_slot(var.as_tensor(), best, worst, self.cfg.noise)?)?;
        }
        for states in [&mut self.adam.m, &mut self.adam.v] {
            for s in states.iter_mut() {
                *s = copy_slot(s, best, worst, 0.0)?;
            }
        }
        Ok(())
    }

    pub fn progress(&self) -> Progress {
        Progress {
            step: self.step,
            loss: self.best_loss,
            flat: self.is_flat(),
        }
    }

    /// True when more steps would not help: the loss stopped improving, is negligible, or the
    /// step budget is spent.
    pub fn is_flat(&self) -> bool {
        if self.step >= self.cfg.max_steps || self.best_loss < 1e-7 || !self.best_loss.is_finite() {
            return true;
        }
        let Some(&(last_step, last)) = self.history.last() else {
            return false;
        };
        let Some(&(_, before)) = self
            .history
            .iter()
            .rev()
            .find(|(s, _)| last_step - s >= self.cfg.window)
        else {
            return false;
        };
        (before - last) / before < self.cfg.min_improvement
    }

    /// Trains until `budget` has passed or the loss is flat.
    pub fn train_for(&mut self, budget: Duration) -> Result<Progress> {
        let start = Instant::now();
        while start.elapsed() < budget && !self.is_flat() {
            self.step()?;
        }
        Ok(self.progress())
    }

    /// The checkpoint to write now.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let mut tensors = self.ens.tensors();
        for (name, t) in self.adam.state() {
            tensors.insert(name, t.clone());
        }
        // Only the part of the history that the flatness test can still look at.
        let horizon = self
            .step
            .saturating_sub(self.cfg.window.saturating_add(self.cfg.eval_every));
        let meta = CheckpointMeta {
            widths: self.ens.widths.clone(),
            best: self.ens.best,
            step: self.step,
            loss: self.best_loss,
            history: self.history.iter().copied().filter(|&(s, _)| s >= horizon).collect(),
        };
        encode_checkpoint(&tensors, &meta)
    }
}

/// What a checkpoint says about itself (safetensors metadata).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub widths: Vec<usize>,
    pub best: usize,
    pub step: u64,
    pub loss: f64,
    /// Recent `(step, best loss)` evaluations.
    pub history: Vec<(u64, f64)>,
}

/// A decoded checkpoint.
pub struct Checkpoint {
    pub widths: Vec<usize>,
    pub best: usize,
    pub step: u64,
    /// Empty in checkpoints written before the history was kept.
    pub history: Vec<(u64, f64)>,
    pub tensors: HashMap<String, Tensor>,
}

const FORMAT: &str = "maas-sgt-std/1";

pub fn encode_checkpoint(tensors: &HashMap<String, Tensor>, meta: &CheckpointMeta) -> Result<Vec<u8>> {
    let widths = meta.widths.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let info = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("widths".to_string(), widths),
        ("best".to_string(), meta.best.to_string()),
        ("step".to_string(), meta.step.to_string()),
        ("loss".to_string(), meta.loss.to_string()),
        ("history".to_string(), encode_history(&meta.history)),
    ]);
    let mut named: Vec<(&String, &Tensor)> = tensors.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::serialize(named, Some(info)).map_err(|e| candle_core::Error::Msg(e.to_string()))
}

pub fn decode_checkpoint(bytes: &[u8], device: &Device) -> Result<Checkpoint> {
    let bad = |m: &str| candle_core::Error::Msg(format!("bad checkpoint: {m}"));
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(&e.to_string()))?;
    let info = header.metadata().clone().ok_or_else(|| bad("no metadata"))?;
    if info.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad("unknown format"));
    }
    let field = |k: &str| info.get(k).cloned().ok_or_else(|| bad(k));
    let widths = field("widths")?
        .split(',')
        .map(|w| w.parse::<usize>().map_err(|_| bad("widths")))
        .collect::<Result<Vec<_>>>()?;
    let best = field("best")?.parse().map_err(|_| bad("best"))?;
    let step = field("step")?.parse().map_err(|_| bad("step"))?;
    let history = match info.get("history") {
        Some(h) => decode_history(h).ok_or_else(|| bad("history"))?,
        None => Vec::new(),
    };
    let tensors = candle_core::safetensors::load_buffer(bytes, device)?
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    Ok(Checkpoint {
        widths,
        best,
        step,
        history,
        tensors,
    })
}

/// `step:loss` pairs joined by `,`; Rust's float formatting reads back exactly.
fn encode_history(history: &[(u64, f64)]) -> String {
    history
        .iter()
        .map(|(s, l)| format!("{s}:{l}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_history(text: &str) -> Option<Vec<(u64, f64)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|pair| {
            let (s, l) = pair.split_once(':')?;
            Some((s.parse().ok()?, l.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ensemble::std_widths;

    fn data(n: usize, dev: &Device) -> (Tensor, Tensor) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let x: Vec<f32> = (0..n * 3).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y: Vec<f32> = x
            .chunks(3)
            .map(|r| 0.8 * (r[0] * 1.5 - r[1] + 0.5 * r[2]).tanh())
            .collect();
        (
            Tensor::from_vec(x, (n, 3), dev).unwrap(),
            Tensor::from_vec(y, (n, 1), dev).unwrap(),
        )
    }

    #[test]
    fn every_trainable_tensor_receives_a_non_zero_gradient() {
        let dev = Device::Cpu;
        let ens = Ensemble::init(&std_widths(3, 1), 4, 2, &dev).unwrap();
        let (x, y) = data(64, &dev);
        let grads = ens
            .member_losses(&x, &y)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, var) in ens.vars().iter().enumerate() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("var {i} got no gradient"));
            // Every member of every layer must learn, not just the first.
            let per_member = g
                .abs()
                .unwrap()
                .flatten_from(1)
                .unwrap()
                .sum(1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(per_member.iter().all(|&s| s > 0.0), "var {i}: {per_member:?}");
        }
    }

    #[test]
    fn adam_matches_the_textbook_update() {
        let dev = Device::Cpu;
        let w = Var::from_vec(vec![1.0f32, -2.0], 2, &dev).unwrap();
        let mut adam = Adam::new(vec![w.clone()]).unwrap();
        let (mut m, mut v, mut expected) = ([0f64; 2], [0f64; 2], [1.0f64, -2.0]);
        for t in 1..=3 {
            // loss = sum(w^3) so the gradient 3w^2 differs per step.
            let grads = w.as_tensor().powf(3.0).unwrap().sum_all().unwrap().backward().unwrap();
            adam.step(&grads, 0.1).unwrap();
            for i in 0..2 {
                let g = 3.0 * expected[i] * expected[i];
                m[i] = B1 * m[i] + (1.0 - B1) * g;
                v[i] = B2 * v[i] + (1.0 - B2) * g * g;
                let (mh, vh) = (m[i] / (1.0 - B1.powi(t)), v[i] / (1.0 - B2.powi(t)));
                expected[i] -= 0.1 * mh / (vh.sqrt() + EPS);
            }
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - expected[i]).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn training_fits_a_smooth_function_and_then_goes_flat() {
        let dev = Device::Cpu;
        let (x, y) = data(512, &dev);
        let ens = Ensemble::init(&std_widths(3, 1), 4, 9, &dev).unwrap();
        let cfg = TrainConfig {
            max_steps: 4000,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(ens, x.clone(), y.clone(), cfg).unwrap();
        let start = t.best_loss;
        let p = t.train_for(Duration::from_secs(120)).unwrap();
        assert!(p.flat);
        assert!(p.loss < start / 100.0, "loss {} from {start}", p.loss);
        // The best member answers, and it fits: R^2 close to 1.
        let pred = t.ens.member(t.ens.best).unwrap().forward(&x).unwrap();
        let mean_square = |t: Tensor| t.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        let var = mean_square(y.broadcast_sub(&y.mean_all().unwrap()).unwrap());
        let mse = mean_square((pred - &y).unwrap());
        assert!(1.0 - mse / var > 0.99, "r2 {}", 1.0 - mse / var);
    }

    #[test]
    fn a_checkpoint_restores_weights_optimizer_state_and_step() {
        let dev = Device::Cpu;
        let (x, y) = data(64, &dev);
        let widths = std_widths(3, 1);
        let mut t = Trainer::new(
            Ensemble::init(&widths, 2, 1, &dev).unwrap(),
            x.clone(),
            y.clone(),
            TrainConfig::default(),
        )
        .unwrap();
        for _ in 0..25 {
            t.step().unwrap();
        }
        let ck = decode_checkpoint(&t.checkpoint().unwrap(), &dev).unwrap();
        assert_eq!((ck.widths.clone(), ck.step), (widths.clone(), 25));
        let mut resumed = Trainer::resume(&widths, &ck, x, y, TrainConfig::default()).unwrap();
        assert_eq!(resumed.adam.t, 25);
        let a = t.ens.forward(&Tensor::ones((1, 3), DType::F32, &dev).unwrap()).unwrap();
        let b = resumed
            .ens
            .forward(&Tensor::ones((1, 3), DType::F32, &dev).unwrap())
            .unwrap();
        assert_eq!(a.to_vec3::<f32>().unwrap(), b.to_vec3::<f32>().unwrap());
        resumed.step().unwrap();
        assert_eq!(resumed.step, 26);
        assert_eq!(
            resumed.history[..t.history.len()],
            t.history[..],
            "the loss history carries over"
        );
        assert!(decode_checkpoint(b"not a checkpoint", &dev).is_err());
    }

    #[test]
    fn a_resumed_job_judges_its_loss_curve_as_it_did_before_it_gave_way() {
        let dev = Device::Cpu;
        let (x, y) = data(256, &dev);
        let widths = std_widths(3, 1);
        let cfg = TrainConfig {
            window: 300,
            eval_every: 50,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(
            Ensemble::init(&widths, 2, 5, &dev).unwrap(),
            x.clone(),
            y.clone(),
            cfg.clone(),
        )
        .unwrap();
        let resumed = |t: &Trainer| {
            let ck = decode_checkpoint(&t.checkpoint().unwrap(), &dev).unwrap();
            Trainer::resume(&widths, &ck, x.clone(), y.clone(), cfg.clone()).unwrap()
        };
        let mut checked_unflat = false;
        while !t.is_flat() {
            t.step().unwrap();
            if t.step > cfg.window && t.step.is_multiple_of(cfg.eval_every) && !t.is_flat() {
                assert!(!resumed(&t).is_flat(), "flat after resuming at step {}", t.step);
                checked_unflat = true;
            }
        }
        assert!(
            checked_unflat && t.step < cfg.max_steps,
            "the curve went flat by itself, at step {}",
            t.step
        );
        // A checkpoint written as the curve went flat resumes flat: the window did not restart.
        assert!(resumed(&t).is_flat(), "not flat after resuming at step {}", t.step);
    }

    #[test]
    fn a_weak_member_is_replaced_by_a_copy_of_the_best() {
        let dev = Device::Cpu;
        let (x, y) = data(64, &dev);
        let ens = Ensemble::init(&std_widths(3, 1), 3, 4, &dev).unwrap();
        // Sabotage member 2 so it is far worse than the others.
        let w = &ens.weights[0];
        let big = (w.as_tensor().narrow(0, 2, 1).unwrap() * 50.0).unwrap();
        let (a, b) = (w.dim(1).unwrap(), w.dim(2).unwrap());
        w.set(&w.as_tensor().slice_assign(&[2..3, 0..a, 0..b], &big).unwrap())
            .unwrap();
        let t = Trainer::new(ens, x.clone(), y.clone(), TrainConfig::default()).unwrap();
        let losses: Vec<f32> = t.ens.member_losses(&x, &y).unwrap().to_vec1().unwrap();
        let best = losses[t.ens.best];
        assert!(losses[2] < 1.5 * best + 0.05, "member 2 was not replaced: {losses:?}");
    }
}
