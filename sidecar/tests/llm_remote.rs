//! A sidecar that serves the models kept in the bucket: each is copied and loaded when first
//! asked for (503-style `Loading` until then), and the least recently used idle one is
//! unloaded when the loaded weights pass the memory budget. Needs `scripts/fetch-models`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use maas_sidecar::llm::engine::EngineConfig;
use maas_sidecar::llm::remote::RemoteModels;
use maas_sidecar::llm::service::{LlmService, ModelStatus};
use maas_sidecar_client::llm::{GenerateError, GenerateEvent, GenerateRequest, Prompt, SamplingParams};
use maas_store::{StoreConfig, Stores};

fn request(model: &str) -> GenerateRequest {
    GenerateRequest {
        model: model.into(),
        prompt: Prompt::Text("The capital of Germany is".into()),
        params: SamplingParams {
            max_tokens: 4,
            temperature: 0.0,
            ..SamplingParams::default()
        },
        user: "u".into(),
    }
}

/// Asks for `model` until it is loaded, then runs one request to its end.
async fn answer(service: &Arc<LlmService>, model: &str) -> String {
    let mut asked = 0;
    let mut rx = loop {
        match service.generate(request(model)) {
            Ok(rx) => break rx,
            Err(GenerateError::Loading) => {
                asked += 1;
                assert!(asked < 1200, "{model} never loaded: {:?}", service.status(model));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{model}: {e:?}"),
        }
    };
    assert!(asked > 0, "the first request found {model} still to load");
    let mut text = String::new();
    while let Some(e) = rx.recv().await {
        if let GenerateEvent::Token { text: t, .. } = e {
            text.push_str(&t);
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_in_the_bucket_load_on_demand_and_the_least_recently_used_is_unloaded() {
    let data = tempfile::tempdir().unwrap();
    let stores = Stores::open(&StoreConfig::Embedded {
        dir: data.path().join("store"),
    })
    .await
    .unwrap();
    let gguf = bytes::Bytes::from(std::fs::read(common::built_in("smollm2-135m-instruct/model.gguf")).unwrap());
    for id in ["first", "second"] {
        stores
            .blobs
            .put(&format!("models/{id}/model.gguf"), gguf.clone())
            .await
            .unwrap();
    }
    stores
        .blobs
        .put("models/broken/model.gguf", "not a model".into())
        .await
        .unwrap();
    // Room for one model: loading another unloads the idle one.
    let remote = Arc::new(RemoteModels::new(
        stores.blobs.clone(),
        "models/",
        data.path().join("cache"),
        1,
    ));
    remote.refresh().await.unwrap();
    let service = LlmService::with_remote(EngineConfig::default(), Some(remote));

    assert_eq!(
        service.generate(request("absent")).unwrap_err(),
        GenerateError::UnknownModel { model: "absent".into() }
    );
    let first = answer(&service, "first").await;
    assert!(first.contains("Berlin"), "{first:?}");
    assert!(data.path().join("cache/first/model.gguf").is_file());
    assert_eq!(
        answer(&service, "second").await,
        first,
        "the same weights answer the same"
    );
    assert_eq!(service.status("second"), Some(ModelStatus::Ready));
    assert_eq!(service.status("first"), None, "unloaded to make room");
    // Asked for again, it comes back from the local copy.
    assert_eq!(answer(&service, "first").await, first);
    assert_eq!(service.status("second"), None);

    assert_eq!(service.generate(request("broken")).unwrap_err(), GenerateError::Loading);
    while service.status("broken") == Some(ModelStatus::Loading) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(service.status("broken"), Some(ModelStatus::Failed(_))));
    assert_eq!(
        service.generate(request("broken")).unwrap_err(),
        GenerateError::UnknownModel { model: "broken".into() }
    );
}
