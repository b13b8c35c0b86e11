//! Logits to the next token: penalties, then greedy or temperature with top-k and top-p, drawn
//! from a per-sequence RNG so that a seed gives the same tokens again.

use std::collections::HashMap;

use maas_sidecar_client::llm::SamplingParams;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The most alternatives a token's log-probabilities report (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each token appeared in the output so far.
    counts: HashMap<u32, u32>,
    /// Tokens of the prompt and output, for the repetition penalty.
    seen: Vec<u32>,
}

/// One choice: the token, its log-probability under the final distribution, and the best
/// alternatives when asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Sampler {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let mut seen = prompt.to_vec();
        seen.sort_unstable();
        seen.dedup();
        Sampler {
            params,
            rng,
            counts: HashMap::new(),
            seen,
        }
    }

    /// Picks the next token from `logits` (one row, the vocabulary) and remembers it.
    pub fn sample(&mut self, logits: &mut [f32]) -> Choice {
        self.penalise(logits);
        let (temperature, top_k, logprobs_n) = (self.params.temperature, self.params.top_k, self.params.logprobs);
        let logprobs = log_softmax(logits, if temperature > 0.0 { temperature } else { 1.0 });
        let token = if temperature <= 0.0 || top_k == 1 {
            argmax(logits)
        } else {
            self.draw(&logprobs)
        };
        let top = match logprobs_n {
            Some(n) => top_n(&logprobs, (n as usize).min(MAX_TOP_LOGPROBS)),
            None => Vec::new(),
        };
        *self.counts.entry(token).or_default() += 1;
        if let Err(i) = self.seen.binary_search(&token) {
            self.seen.insert(i, token);
        }
        Choice {
            token,
            logprob: logprobs[token as usize],
            top,
        }
    }

    fn penalise(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for &t in &self.seen {
                let l = &mut logits[t as usize];
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &n) in &self.counts {
                logits[t as usize] -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
        }
    }

    /// Draws from the distribution cut to the top-k tokens and then to the top-p mass.
    fn draw(&mut self, logprobs: &[f32]) -> u32 {
        let p = &self.params;
        let mut order: Vec<u32> = (0..logprobs.len() as u32).collect();
        let k = if p.top_k == 0 {
            order.len()
        } else {
            (p.top_k as usize).min(order.len())
        };
        if k < order.len() {
            order.select_nth_unstable_by(k - 1, |a, b| logprobs[*b as usize].total_cmp(&logprobs[*a as usize]));
            order.truncate(k);
        }
        order.sort_unstable_by(|a, b| logprobs[*b as usize].total_cmp(&logprobs[*a as usize]).then(a.cmp(b)));
        let probs: Vec<f64> = order.iter().map(|&t| (logprobs[t as usize] as f64).exp()).collect();
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut mass = 0.0;
            for (i, q) in probs.iter().enumerate() {
                mass += q;
                if mass >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        let total: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (i, q) in probs[..keep].iter().enumerate() {
            r -= q;
            if r <= 0.0 {
                return order[i];
            }
        }
        order[keep - 1]
    }
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// `log softmax(logits / temperature)`.
fn log_softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let scaled: Vec<f32> = logits.iter().map(|l| (l - max) / temperature).collect();
    let lse = scaled.iter().map(|s| (*s as f64).exp()).sum::<f64>().ln() as f32;
    scaled.into_iter().map(|s| s - lse).collect()
}

fn top_n(logprobs: &[f32], n: usize) -> Vec<(u32, f32)> {
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<u32> = (0..logprobs.len() as u32).collect();
    let n = n.min(order.len());
    order.select_nth_unstable_by(n - 1, |a, b| logprobs[*b as usize].total_cmp(&logprobs[*a as usize]));
    order.truncate(n);
    order.sort_unstable_by(|a, b| logprobs[*b as usize].total_cmp(&logprobs[*a as usize]));
    order.into_iter().map(|t| (t, logprobs[t as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams {
            seed: Some(7),
            ..SamplingParams::default()
        };
        f(&mut p);
        p
    }

    fn draws(p: &SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p.clone(), &[]);
        (0..n).map(|_| s.sample(&mut logits.to_vec()).token).collect()
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let p = params(|p| p.temperature = 0.0);
        assert_eq!(draws(&p, &[0.1, 3.0, 2.9, -1.0], 5), vec![1; 5]);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_another_seed_does_not() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let p = params(|_| {});
        assert_eq!(draws(&p, &logits, 40), draws(&p, &logits, 40));
        let other = params(|p| p.seed = Some(8));
        assert_ne!(draws(&p, &logits, 40), draws(&other, &logits, 40));
    }

    #[test]
    fn top_k_and_top_p_keep_only_the_likely_tokens() {
        let logits = [5.0, 4.0, 3.0, 0.0, -1.0];
        let k2 = params(|p| p.top_k = 2);
        assert!(draws(&k2, &logits, 200).iter().all(|t| *t < 2));
        // softmax: 0.665, 0.245, 0.090, ...: 0.8 of the mass needs the first two.
        let p8 = params(|p| p.top_p = 0.8);
        let seen = draws(&p8, &logits, 300);
        assert!(seen.iter().all(|t| *t < 2) && seen.contains(&1), "{seen:?}");
    }

    #[test]
    fn sampled_frequencies_follow_the_softmax() {
        let logits = [1.0f32, 0.0, 2.0];
        let p = params(|p| p.temperature = 1.0);
        let seen = draws(&p, &logits, 20_000);
        let expected = log_softmax(&logits, 1.0);
        for t in 0..3u32 {
            let freq = seen.iter().filter(|x| **x == t).count() as f64 / seen.len() as f64;
            let want = (expected[t as usize] as f64).exp();
            assert!((freq - want).abs() < 0.015, "token {t}: {freq} vs {want}");
        }
    }

    #[test]
    fn penalties_push_down_tokens_already_said() {
        let mut s = Sampler::new(
            params(|p| {
                p.temperature = 0.0;
                p.frequency_penalty = 0.6;
            }),
            &[],
        );
        let logits = [1.0f32, 0.5, 0.0];
        let picks: Vec<u32> = (0..4).map(|_| s.sample(&mut logits.to_vec()).token).collect();
        // Each appearance costs 0.6: 0 (1.0), 1 (0.5 > 0.4), 0 (0.4 > 0.0 > -0.1), 2 (0.0).
        assert_eq!(picks, vec![0, 1, 0, 2]);
        let mut rep = Sampler::new(
            params(|p| {
                p.temperature = 0.0;
                p.repetition_penalty = 3.0;
            }),
            &[0],
        );
        assert_eq!(
            rep.sample(&mut [1.0f32, 0.5, 0.0].to_vec()).token,
            1,
            "the prompt's token 0 is penalised"
        );
    }

    #[test]
    fn log_probabilities_and_alternatives_are_reported_best_first() {
        let mut s = Sampler::new(
            params(|p| {
                p.temperature = 0.0;
                p.logprobs = Some(2);
            }),
            &[],
        );
        let c = s.sample(&mut [0.0f32, 2.0, 1.0].to_vec());
        assert_eq!(c.token, 1);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        let total: f32 = [0.0f32, 2.0, 1.0].iter().map(|l| l.exp()).sum();
        assert!((c.logprob - (2.0f32.exp() / total).ln()).abs() < 1e-5);
    }
}
