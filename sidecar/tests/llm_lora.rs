//! LoRA adapters in PEFT's format on the built-in SmolLM2: the adapted forward pass equals the
//! base model with the merged weight `W + scale·B·A`, merged here, separately; sequences with
//! and without an adapter share a batch without changing each other; and adapters are served
//! as `<model>:<adapter>`. The same adapter under PEFT itself (`bench/llm_hf_fixtures.sh`,
//! committed as `tests/fixtures/smollm2_lora_reference.json`) gives the same log-probabilities.
//! Needs the model: `scripts/fetch-models`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use maas_sidecar::llm::engine::EngineConfig;
use maas_sidecar::llm::lora::{Adapter, Target};
use maas_sidecar::llm::service::{LlmService, ModelStatus};
use maas_sidecar::llm::{model, LlamaConfig, LoadedModel, Repack, SeqCache, SeqStep};
use maas_sidecar_client::llm::{GenerateError, GenerateRequest, Prompt, SamplingParams};

fn gguf() -> PathBuf {
    common::built_in("smollm2-135m-instruct/model.gguf")
}

/// Deterministic values in [-0.05, 0.05): a small LCG, so the test needs no RNG crate.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

const RANK: usize = 4;
const ALPHA: f64 = 8.0;
/// The adapted modules, with their (in, out) sizes for SmolLM2-135M.
fn targets(c: &LlamaConfig) -> Vec<(Target, &'static str, usize, usize)> {
    vec![
        (Target::Q, "self_attn.q_proj", c.hidden, c.heads * c.head_dim),
        (Target::K, "self_attn.k_proj", c.hidden, c.kv_heads * c.head_dim),
        (Target::V, "self_attn.v_proj", c.hidden, c.kv_heads * c.head_dim),
        (Target::O, "self_attn.o_proj", c.heads * c.head_dim, c.hidden),
        (Target::Down, "mlp.down_proj", c.ffn, c.hidden),
    ]
}

/// A PEFT adapter folder with A and B for every target of every layer; returns the (A, B)
/// values in Hugging Face's row order, for merging by hand.
fn write_adapter(dir: &Path, c: &LlamaConfig) -> HashMap<(usize, Target), (Vec<f32>, Vec<f32>)> {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({"r": RANK, "lora_alpha": ALPHA, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"], "peft_type": "LORA"});
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    let mut tensors = HashMap::new();
    let mut kept = HashMap::new();
    for layer in 0..c.layers {
        for (k, (target, name, input, output)) in targets(c).into_iter().enumerate() {
            let seed = (layer * 16 + k) as u64;
            let (a, b) = (values(RANK * input, seed), values(output * RANK, seed + 1000));
            let prefix = format!("base_model.model.model.layers.{layer}.{name}");
            tensors.insert(
                format!("{prefix}.lora_A.weight"),
                Tensor::from_vec(a.clone(), (RANK, input), &Device::Cpu).unwrap(),
            );
            tensors.insert(
                format!("{prefix}.lora_B.weight"),
                Tensor::from_vec(b.clone(), (output, RANK), &Device::Cpu).unwrap(),
            );
            kept.insert((layer, target), (a, b));
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    kept
}

/// `scale·B·A` (`out × in`), with B's rows moved to GGUF's order for q and k: within each head,
/// Hugging Face's row `h·d + i` (first half) and `h·d + d/2 + i` (second half) become GGUF's
/// rows `h·d + 2i` and `h·d + 2i + 1`.
fn merged_delta(a: &[f32], b: &[f32], input: usize, output: usize, heads: Option<usize>) -> Tensor {
    let mut b_gguf = b.to_vec();
    if let Some(heads) = heads {
        let d = output / heads;
        for h in 0..heads {
            for i in 0..d / 2 {
                for (half, to) in [(0, 2 * i), (1, 2 * i + 1)] {
                    let from = h * d + half * d / 2 + i;
                    b_gguf[(h * d + to) * RANK..(h * d + to + 1) * RANK]
                        .copy_from_slice(&b[from * RANK..(from + 1) * RANK]);
                }
            }
        }
    }
    let scale = (ALPHA / RANK as f64) as f32;
    let mut delta = vec![0f32; output * input];
    for o in 0..output {
        for r in 0..RANK {
            let bor = b_gguf[o * RANK + r] * scale;
            for i in 0..input {
                delta[o * input + i] += bor * a[r * input + i];
            }
        }
    }
    Tensor::from_vec(delta, (output, input), &Device::Cpu).unwrap()
}

fn logits(m: &LoadedModel, ids: &[u32], adapter: Option<&Adapter>) -> Vec<f32> {
    let mut cache = SeqCache::new(&m.model.cfg);
    let out = m
        .model
        .forward(
            &mut [SeqStep {
                tokens: ids,
                cache: &mut cache,
                prompt: true,
                adapter,
            }],
            false,
        )
        .unwrap();
    model::row(&out, 0).unwrap()
}

/// The largest difference; NaN anywhere counts as infinite.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_finite() && y.is_finite() {
                (x - y).abs()
            } else {
                f32::INFINITY
            }
        })
        .fold(0.0, f32::max)
}

/// PEFT's answer for the formula-valued adapter of `write_adapter`, on the base weights
/// dequantized to f32 (transformers reading the GGUF): the naming, `lora_alpha / r` and the
/// q/k row order all have to agree for the gap to stay at float rounding (the base alone is
/// 7e-6 from transformers, see llm_formats.rs), while any of them wrong moves it by tenths.
#[test]
fn the_adapted_model_gives_pefts_log_probabilities() {
    #[derive(serde::Deserialize)]
    struct Fixture {
        rank: usize,
        alpha: f64,
        logits: Vec<common::PromptLogits>,
    }
    let fixture: Fixture = serde_json::from_str(include_str!("fixtures/smollm2_lora_reference.json")).unwrap();
    assert_eq!((fixture.rank, fixture.alpha), (RANK, ALPHA));
    let base = LoadedModel::gguf(&gguf(), &Device::Cpu, Repack::F32, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_adapter(dir.path(), &base.model.cfg);
    let adapter = Adapter::load("formula", dir.path(), &base.model.cfg, &Device::Cpu).unwrap();
    let (mut sum, mut count, mut worst) = (0f64, 0f64, 0f64);
    for p in &fixture.logits {
        let mut cache = SeqCache::new(&base.model.cfg);
        let step = SeqStep {
            tokens: &p.ids,
            cache: &mut cache,
            prompt: true,
            adapter: Some(&adapter),
        };
        let out = base.model.forward(&mut [step], true).unwrap();
        for pos in &p.positions {
            let row = model::row(&out, pos.position).unwrap();
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            for (id, theirs) in pos.top_ids.iter().zip(&pos.top_logits) {
                let gap = ((row[*id as usize] as f64 - lse) - (theirs - pos.logsumexp)).abs();
                (sum, count, worst) = (sum + gap, count + 1.0, worst.max(gap));
            }
        }
    }
    let mean = sum / count;
    println!("log-probability gap to PEFT: mean {mean:.6}, largest {worst:.6}");
    assert!(mean < 1e-3 && worst < 1e-2, "mean {mean}, largest {worst}");
}

#[test]
fn the_adapted_forward_pass_equals_the_model_with_the_adapter_merged_in() {
    let base = LoadedModel::gguf(&gguf(), &Device::Cpu, Repack::F32, 2).unwrap();
    let c = base.model.cfg.clone();
    let dir = tempfile::tempdir().unwrap();
    let kept = write_adapter(dir.path(), &c);
    let adapter = Adapter::load("test", dir.path(), &c, &Device::Cpu).unwrap();
    assert_eq!((adapter.rank, adapter.scale), (RANK, ALPHA / RANK as f64));

    let mut merged = LoadedModel::gguf(&gguf(), &Device::Cpu, Repack::F32, 2).unwrap();
    for ((layer, target), (a, b)) in &kept {
        let (_, _, input, output) = targets(&c).into_iter().find(|t| t.0 == *target).unwrap();
        let heads = match target {
            Target::Q => Some(c.heads),
            Target::K => Some(c.kv_heads),
            _ => None,
        };
        merged
            .model
            .merge(*layer, *target, &merged_delta(a, b, input, output, heads))
            .unwrap();
    }
    let ids = base
        .tokenizer
        .encode("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let plain = logits(&base, &ids, None);
    let adapted = logits(&base, &ids, Some(&adapter));
    let reference = logits(&merged, &ids, None);
    let (gap, effect) = (max_diff(&adapted, &reference), max_diff(&adapted, &plain));
    println!("adapted vs merged: {gap}; adapted vs base: {effect}");
    assert!(gap < 2e-3, "adapted and merged differ by {gap}");
    assert!(effect > 0.5, "the adapter should change the logits (by {effect})");
}

#[test]
fn sequences_with_and_without_an_adapter_share_a_batch_unchanged() {
    let m = LoadedModel::gguf(&gguf(), &Device::Cpu, Repack::Mixed, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_adapter(dir.path(), &m.model.cfg);
    let adapter = Adapter::load("test", dir.path(), &m.model.cfg, &Device::Cpu).unwrap();
    let (x, y) = (
        m.tokenizer.encode("The sky is").unwrap(),
        m.tokenizer.encode("One, two,").unwrap(),
    );
    let (solo_x, solo_y) = (logits(&m, &x, Some(&adapter)), logits(&m, &y, None));
    let (mut cx, mut cy) = (SeqCache::new(&m.model.cfg), SeqCache::new(&m.model.cfg));
    let mut batch = [
        SeqStep {
            tokens: &y,
            cache: &mut cy,
            prompt: true,
            adapter: None,
        },
        SeqStep {
            tokens: &x,
            cache: &mut cx,
            prompt: true,
            adapter: Some(&adapter),
        },
    ];
    let out = m.model.forward(&mut batch, false).unwrap();
    assert_eq!(model::row(&out, 0).unwrap(), solo_y);
    assert_eq!(model::row(&out, 1).unwrap(), solo_x);
}

#[tokio::test]
async fn adapters_beside_a_model_are_served_by_name_and_an_unknown_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("smol");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::os::unix::fs::symlink(gguf(), model_dir.join("model.gguf")).unwrap();
    let probe = LoadedModel::gguf(&gguf(), &Device::Cpu, Repack::AsStored, 1).unwrap();
    write_adapter(&model_dir.join("adapters/colours"), &probe.model.cfg);
    drop(probe);
    let service = LlmService::new(EngineConfig::default());
    service.load_dir(dir.path());
    while service.status("smol") == Some(ModelStatus::Loading) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = service.models().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["smol".to_string(), "smol:colours".to_string()]);
    let request = |model: &str| GenerateRequest {
        model: model.into(),
        prompt: Prompt::Text("The sky is".into()),
        params: SamplingParams {
            max_tokens: 4,
            temperature: 0.0,
            ..SamplingParams::default()
        },
        user: "u".into(),
    };
    let mut rx = service.generate(request("smol:colours")).unwrap();
    let mut done = false;
    while let Some(e) = rx.recv().await {
        done |= matches!(e, maas_sidecar_client::llm::GenerateEvent::Done { .. });
    }
    assert!(done);
    let err = service.generate(request("smol:nope")).unwrap_err();
    assert_eq!(
        err,
        GenerateError::UnknownModel {
            model: "smol:nope".into()
        }
    );
}
