//! The built-in SmolLM2-135M-Instruct GGUF, checked against llama.cpp: token ids, logits and
//! greedy tokens recorded by `bench/llm_fixtures.sh` (llama-cpp-python 0.3.36) into
//! `tests/fixtures/smollm2_reference.json`. Needs the model: `scripts/fetch-models`.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use common::PromptLogits;
use maas_sidecar::llm::{model, LoadedModel, Repack, SeqCache, SeqStep};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    tokens: Vec<Tokens>,
    logits: Vec<PromptLogits>,
    greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
struct Tokens {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Greedy {
    ids: Vec<u32>,
    generated: Vec<u32>,
    /// llama.cpp's gap between its two best logits at each generated token.
    margins: Vec<f64>,
}

fn reference() -> Reference {
    let text = include_str!("fixtures/smollm2_reference.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn gguf() -> PathBuf {
    common::built_in("smollm2-135m-instruct/model.gguf")
}

fn loaded(repack: Repack) -> &'static LoadedModel {
    static CELLS: [OnceLock<LoadedModel>; 4] = [const { OnceLock::new() }; 4];
    let cell = &CELLS[match repack {
        Repack::AsStored => 0,
        Repack::SlowToQ8_0 => 1,
        Repack::F32 => 2,
        Repack::Mixed => 3,
    }];
    cell.get_or_init(|| LoadedModel::gguf(&gguf(), &Device::Cpu, repack, 2).expect("model loads"))
}

#[test]
fn token_ids_equal_llama_cpps_for_every_reference_text() {
    let m = loaded(Repack::AsStored);
    for t in reference().tokens {
        assert_eq!(m.tokenizer.encode(&t.text).unwrap(), t.ids, "{:?}", t.text);
        // Special tokens are left out of text; everything else reads back as it was.
        let plain = t.text.replace("<|im_start|>", "").replace("<|im_end|>", "");
        assert_eq!(m.tokenizer.decode(&t.ids), plain, "{:?}", t.text);
    }
}

/// Compares every recorded position of every prompt: the mean and the largest difference in
/// log-probability over llama.cpp's top 20 tokens. Both engines quantize activations to 8 bits
/// for their quantized matmuls, each in its own way. Measured against the same weights
/// dequantized to f32 (the tied head then still 8-bit), llama.cpp is off by mean 0.093, largest
/// 0.51, and this path by mean 0.089, largest 0.46: the bounds measure that noise, while a wrong
/// rotation, norm or mask moves log-probabilities by whole units. (Requantizing Q4_1 to int8
/// for every row, prompts included, adds more: mean 0.137, largest 0.98, since symmetric int8
/// blocks fit Q4_1's offset blocks less well; the default `mixed` does so only for generated
/// tokens.)
fn logprob_gaps(repack: Repack) -> (f64, f64) {
    let m = loaded(repack);
    let (mut sum, mut count, mut worst) = (0f64, 0f64, 0f64);
    for p in reference().logits {
        let mut cache = SeqCache::new(&m.model.cfg);
        let logits = m
            .model
            .forward(
                &mut [SeqStep {
                    tokens: &p.ids,
                    cache: &mut cache,
                    prompt: true,
                    adapter: None,
                }],
                true,
            )
            .unwrap();
        for pos in &p.positions {
            let row = model::row(&logits, pos.position).unwrap();
            let ours_lse = logsumexp(&row);
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
            // Where llama.cpp is sure of the next token, we pick the same one.
            if pos.top_logits[0] - pos.top_logits[1] > 1.0 {
                assert_eq!(
                    best, pos.top_ids[0],
                    "top token at position {} of {:?}",
                    pos.position, p.ids
                );
            }
            for (id, theirs) in pos.top_ids.iter().zip(&pos.top_logits) {
                let gap = ((row[*id as usize] as f64 - ours_lse) - (theirs - pos.logsumexp)).abs();
                (sum, count, worst) = (sum + gap, count + 1.0, worst.max(gap));
            }
        }
    }
    (sum / count, worst)
}

fn assert_close_to_llama_cpp(repack: Repack) {
    let (mean, worst) = logprob_gaps(repack);
    println!("log-probability gap to llama.cpp ({repack:?}): mean {mean:.4}, largest {worst:.4}");
    assert!(mean < 0.15 && worst < 0.75, "mean {mean}, largest {worst}");
}

fn logsumexp(row: &[f32]) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
}

#[test]
fn log_probabilities_match_llama_cpps_with_weights_as_stored() {
    assert_close_to_llama_cpp(Repack::AsStored);
}

/// The serving default: prompts go through f32 GEMMs of the dequantized weights.
/// Every matmul on the int8 kernel (`q8`), prompt rows included, as generated tokens run.
#[test]
fn log_probabilities_with_int8_weights_stay_near_llama_cpps() {
    let (mean, worst) = logprob_gaps(Repack::SlowToQ8_0);
    println!("log-probability gap to llama.cpp (int8): mean {mean:.4}, largest {worst:.4}");
    assert!(mean < 0.25 && worst < 1.5, "mean {mean}, largest {worst}");
}

#[test]
fn log_probabilities_match_llama_cpps_with_mixed_weights() {
    assert_close_to_llama_cpp(Repack::Mixed);
}

/// Greedy tokens for each prompt, all prompts run together in one batch when `batched`.
fn greedy(prompts: &[Vec<u32>], steps: usize, batched: bool) -> Vec<Vec<u32>> {
    let m = &loaded(Repack::Mixed).model;
    if !batched {
        return prompts
            .iter()
            .flat_map(|p| greedy(std::slice::from_ref(p), steps, true))
            .collect();
    }
    let mut caches: Vec<SeqCache> = prompts.iter().map(|_| SeqCache::new(&m.cfg)).collect();
    let mut next: Vec<Vec<u32>> = prompts.to_vec();
    let mut out = vec![Vec::new(); prompts.len()];
    for _ in 0..steps {
        let mut batch: Vec<SeqStep> = next
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, cache)| SeqStep {
                prompt: cache.is_empty(),
                tokens: t,
                cache,
                adapter: None,
            })
            .collect();
        let logits = m.forward(&mut batch, false).unwrap();
        for (i, o) in out.iter_mut().enumerate() {
            let row = model::row(&logits, i).unwrap();
            let id = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
            o.push(id);
            next[i] = vec![id];
        }
    }
    out
}

#[test]
fn greedy_answers_follow_llama_cpp_and_know_the_capital_of_france() {
    let m = loaded(Repack::Mixed);
    let reference = reference().greedy;
    let prompts: Vec<Vec<u32>> = reference.iter().map(|g| g.ids.clone()).collect();
    let ours = greedy(&prompts, 24, true);
    for (g, o) in reference.iter().zip(&ours) {
        // Two engines' greedy paths may part where llama.cpp's two best tokens are nearly
        // tied; up to the first such token they agree.
        let sure = g.margins.iter().take_while(|&&m| m > 0.5).count();
        assert_eq!(
            o[..sure],
            g.generated[..sure],
            "prompt {:?}",
            m.tokenizer.decode(&g.ids)
        );
    }
    let answer = m.tokenizer.decode(&ours[0]);
    assert!(answer.contains("Paris"), "{answer:?}");
}

#[test]
fn sequences_batched_together_give_exactly_their_solo_answers() {
    let m = loaded(Repack::Mixed);
    let texts = [
        "The capital of Germany is",
        "Write a haiku about the sea.",
        "1, 2, 3,",
        "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
        "In 1969, the first",
        "def square(x):",
        "Bonjour, je m'appelle",
        "A",
    ];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| m.tokenizer.encode(t).unwrap()).collect();
    assert_eq!(greedy(&prompts, 10, true), greedy(&prompts, 10, false));
}

/// Logits for a prompt (prefill, dense rows) and then one generated token (quantized rows).
fn prompt_then_token(m: &LoadedModel, ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut cache = SeqCache::new(&m.model.cfg);
    let mut step = |tokens: &[u32], prompt: bool| {
        let logits = m
            .model
            .forward(
                &mut [SeqStep {
                    tokens,
                    cache: &mut cache,
                    prompt,
                    adapter: None,
                }],
                false,
            )
            .unwrap();
        model::row(&logits, 0).unwrap()
    };
    (step(ids, true), step(&[ids[0]], false))
}

#[test]
fn splitting_the_matmuls_across_threads_changes_no_logit() {
    let one = LoadedModel::gguf(&gguf(), &Device::Cpu, Repack::Mixed, 1).unwrap();
    let three = LoadedModel::gguf(&gguf(), &Device::Cpu, Repack::Mixed, 3).unwrap();
    let ids = &reference().logits[0].ids;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let split = pool.install(|| prompt_then_token(&three, ids));
    assert_eq!(prompt_then_token(&one, ids), split);
}
