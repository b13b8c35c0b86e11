//! The built-in all-MiniLM-L6-v2, checked against sentence-transformers: token ids and
//! normalised embeddings recorded by `bench/embed_fixtures.sh` (sentence-transformers 6.3.0 on
//! PyTorch 2.15) into `tests/fixtures/minilm_reference.json`. Needs the model:
//! `scripts/fetch-models`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use maas_sidecar::embed::{EmbedConfig, EmbedEngine, EmbedModel};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("fixtures/minilm_reference.json")).expect("fixture parses")
}

fn model_dir() -> PathBuf {
    common::built_in("all-minilm-l6-v2")
}

fn model() -> EmbedModel {
    EmbedModel::load(&model_dir(), &Device::Cpu).expect("model loads")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn token_ids_equal_sentence_transformers_ids_including_truncation_at_the_maximum_length() {
    let (r, m) = (reference(), model());
    assert_eq!(m.max_tokens, r.max_seq_length);
    for case in &r.cases {
        let (ids, cut) = m.tokenize(&case.text).unwrap();
        assert_eq!(ids, case.ids, "{:?}", case.text);
        assert_eq!(cut, case.ids.len() == r.max_seq_length, "{:?}", case.text);
    }
}

#[test]
fn embeddings_match_sentence_transformers_to_1e_5_alone_and_packed_together() {
    let (r, m) = (reference(), model());
    let ids: Vec<Vec<u32>> = r.cases.iter().map(|c| c.ids.clone()).collect();
    let all: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let packed = m.embed_ids(&all).unwrap();
    for (i, case) in r.cases.iter().enumerate() {
        let alone = &m.embed_ids(&all[i..=i]).unwrap()[0];
        let diff = max_abs_diff(alone, &case.embedding);
        assert!(diff < 1e-5, "{:?}: max difference {diff}", case.text);
        assert_eq!(&packed[i], alone, "packing changed {:?}", case.text);
        let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_each_gets_its_own_vectors_in_order() {
    let (r, m) = (reference(), Arc::new(model()));
    let engine = EmbedEngine::start(
        m.clone(),
        EmbedConfig {
            max_batch_tokens: 64,
            max_waiting: 64,
            threads: 2,
        },
    )
    .unwrap();
    // Each request is the cases rotated, so a mix-up between requests or inputs shows.
    let pending: Vec<_> = (0..8)
        .map(|k| {
            let ids: Vec<Vec<u32>> = (0..r.cases.len())
                .map(|i| r.cases[(i + k) % r.cases.len()].ids.clone())
                .collect();
            engine.submit(ids).unwrap()
        })
        .collect();
    for (k, rx) in pending.into_iter().enumerate() {
        let vectors = rx.await.unwrap().unwrap();
        assert_eq!(vectors.len(), r.cases.len());
        for (i, v) in vectors.iter().enumerate() {
            let case = &r.cases[(i + k) % r.cases.len()];
            assert!(max_abs_diff(v, &case.embedding) < 1e-5, "request {k} input {i}");
        }
    }
}

#[test]
fn a_full_queue_refuses_new_requests() {
    let engine = EmbedEngine::start(
        Arc::new(model()),
        EmbedConfig {
            max_batch_tokens: 512,
            max_waiting: 0,
            threads: 1,
        },
    )
    .unwrap();
    let err = engine.submit(vec![vec![101, 102]]).unwrap_err();
    assert_eq!(err, maas_sidecar_client::llm::GenerateError::QueueFull);
}
