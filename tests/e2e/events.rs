//! Every sample event in events/ goes through the Lambda adapter: deserialised as an API
//! Gateway HTTP API v2 event, run through that route's handler, and its response checked.

use std::path::PathBuf;

use axum::body::Body;
use http_body_util::BodyExt;
use maas_functions::config::ApiConfig;
use maas_functions::{routes, AppState};
use maas_sidecar::{Sidecar, SidecarConfig};
use maas_sidecar_client::SidecarClient;
use maas_store::{StoreConfig, Stores};
use serde_json::{json, Value};
use tower::ServiceExt;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("events")
}

/// What each sample event must answer, in replay order.
fn expected(name: &str) -> Value {
    match name {
        "sgt-check-auth-token" => json!(true),
        "sgt-list-model-type" => json!(["std"]),
        "sgt-read-my-models" | "sgt-read-public-models" => json!([{
            "user_unique_id": "demo-user", "name": "demo-model", "client_data": "updated", "app_name": "demo-app",
            "model_type": "std", "in_size": 4, "out_size": 2, "is_public": true
        }]),
        _ => Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_runs_through_the_lambda_adapter_and_its_handler() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig::Embedded {
        dir: dir.path().to_path_buf(),
    };
    let stores = Stores::open(&store).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut sidecar_config = SidecarConfig::new("events-secret");
    sidecar_config.models_dir = Some(crate::openai::models_dir());
    let sidecar = Sidecar::start(&stores, Some(listener), sidecar_config).await.unwrap();
    crate::openai::wait_for_models(&sidecar.compute.llm).await;
    // The OAuth sample signs in through a provider served here, with the event's code.
    let provider = crate::oauth_provider::FakeProvider::start().await;
    provider.code_named(
        "demo-authorization-code",
        json!({"sub": "demo-sub", "email": "oauth-demo@example.com", "preferred_username": "oauth-demo"}),
    );
    let config = ApiConfig {
        store,
        sidecar: SidecarClient::new(&format!("http://{}", sidecar.addr.unwrap()), "events-secret"),
        system_key: "demo-system-key".into(),
        body_limit: 1 << 20,
        identity: maas_functions::config::IdentityArgs {
            jwt_keys: Some(maas_functions::v1::tokens::TokenKeys::generate_spec()),
            access_ttl: 900,
            rate_auth: "100/60".parse().unwrap(),
            admin_username: "demo".into(),
            admin_email: Some("demo@example.com".into()),
            admin_password: Some("Sample-Passw0rd!x".into()),
            oauth_providers: Some(provider.config("demo")),
            ..Default::default()
        },
    };
    let state = AppState::new(&stores, &config).await.unwrap();
    let order = std::fs::read_to_string(events_dir().join("ORDER")).unwrap();
    let names: Vec<&str> = order
        .lines()
        .map(|l| l.trim().trim_end_matches(".json"))
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(names.len(), routes::ROUTES.len());
    let mut ids = std::collections::HashMap::<&str, String>::new();
    ids.insert("EMBED_DEPLOYMENT_ID", embedding_deployment(&state).await);
    for name in names {
        let route = routes::find(name).unwrap_or_else(|| panic!("event {name} names no route"));
        let mut raw = std::fs::read_to_string(events_dir().join(format!("{name}.json"))).unwrap();
        if name.starts_with("v1-") || name.starts_with("openai-") {
            raw = fill_placeholders(&state, raw, &ids).await;
        }
        let request =
            lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{name}: not an API Gateway event: {e}"));
        let route_key = format!("{} {}", request.method(), route.path);
        assert_eq!(route_key, format!("{} {}", route.method, route.path), "{name}");
        assert_eq!(
            request.uri().path().split('/').count(),
            route.path.split('/').count(),
            "{name}"
        );
        let app = routes::router(state.clone(), [route]);
        let response = app.oneshot(request.map(|b| Body::from(b.to_vec()))).await.unwrap();
        let status = response.status();
        if name == "v1-models-versions-download" {
            let to = response.headers()["location"].to_str().unwrap().to_string();
            assert!(status == 302 && to.contains("/blobs/"), "{name}: {status} {to}");
            continue;
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap();
        if name.starts_with("openai-") {
            assert_eq!(status, 200, "{name}: {value}");
            let object = match name {
                "openai-models-list" | "openai-embeddings" => "list",
                "openai-models-get" => "model",
                "openai-chat-completions" => "chat.completion",
                _ => "text_completion",
            };
            assert_eq!(value["object"], object, "{name}: {value}");
            continue;
        }
        if name.starts_with("v1-") {
            assert!(status == 200 || status == 201, "{name}: {status} {value}");
            if name != "v1-openapi" {
                assert_eq!(value["success"], true, "{name}: {value}");
            }
            match name {
                "v1-api-keys-create" => drop(ids.insert("KEY_ID", value["data"]["id"].as_str().unwrap().into())),
                "v1-users-create" => drop(ids.insert("ID", value["data"]["user_id"].as_str().unwrap().into())),
                "v1-projects-create" => drop(ids.insert("PROJECT_ID", value["data"]["id"].as_str().unwrap().into())),
                "v1-datasets-upload" => drop(ids.insert("FINANCE_ID", value["data"]["id"].as_str().unwrap().into())),
                "v1-datasets-versions-create" => {
                    drop(ids.insert("VERSION_ID", value["data"]["id"].as_str().unwrap().into()))
                }
                "v1-datasets-create" => {
                    ids.insert("DATASET_ID", value["data"]["id"].as_str().unwrap().into());
                    let (dataset, etag) = uploading_dataset(&state).await;
                    ids.insert("UPLOAD_DATASET_ID", dataset);
                    ids.insert("DATASET_ETAG", etag);
                    ids.insert("TASK_ID", finished_task(&state).await);
                }
                "v1-models-create" => {
                    let model = value["data"]["id"].as_str().unwrap().to_string();
                    ids.insert("ETAG", uploading_version(&state, &model).await);
                    ids.insert("MODEL_ID", model);
                }
                "v1-inference-deployments-create" => {
                    drop(ids.insert("DEPLOYMENT_ID", value["data"]["id"].as_str().unwrap().into()))
                }
                _ => {}
            }
            continue;
        }
        assert_eq!(status, 200, "{name}: {value}");
        if name == "sgt-run-model" {
            let out: Vec<Vec<f32>> = serde_json::from_value(value).unwrap();
            assert!(out.len() == 2 && out.iter().all(|r| r.len() == 2), "{name}: {out:?}");
        } else {
            assert_eq!(value, expected(name), "{name}");
        }
    }
    sidecar.stop();
}

/// The sample completion event finishes an upload of version 2.0.0 whose one part is already up,
/// as a client would have PUT it; returns the part's ETag.
async fn uploading_version(state: &AppState, model: &str) -> String {
    use maas_functions::registry::uploads::{self, DeclaredFile};
    use sha2::Digest;
    let bytes = std::fs::read(events_dir().join("v1-models-create.json")).unwrap();
    let event: Value = serde_json::from_slice(&bytes).unwrap();
    let form = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        event["body"].as_str().unwrap(),
    )
    .unwrap();
    // The sample form's file: from `GGUF` to the closing boundary.
    let start = form.windows(5).position(|w| w == b"GGUF\x03").unwrap();
    let end = start + form[start..].windows(4).position(|w| w == b"\r\n--").unwrap();
    let gguf = bytes::Bytes::copy_from_slice(&form[start..end]);
    let declared = DeclaredFile {
        field: "model_file".into(),
        size: gguf.len() as u64,
        sha256: sha2::Sha256::digest(&gguf).iter().map(|b| format!("{b:02x}")).collect(),
        format: Some("gguf".into()),
    };
    let (v, _) = uploads::start(state, model, "2.0.0", String::new(), &[declared])
        .await
        .unwrap();
    state.registry.repo.start_version(&v).await.unwrap();
    let f = &v.files[0];
    let blobs = &state.registry.blobs;
    let etag = blobs
        .put_part(&f.blob, f.upload.as_ref().unwrap(), 1, gguf)
        .await
        .unwrap();
    // Unquoted, as it sits inside the event's JSON body; both stores take it either way.
    etag.trim_matches('"').to_string()
}

/// The sample completion event finishes a dataset upload whose one part is already up;
/// returns the dataset's id and the part's ETag.
async fn uploading_dataset(state: &AppState) -> (String, String) {
    use maas_store::records::datasets::Dataset;
    use sha2::Digest;
    let bytes = bytes::Bytes::from_static(b"{\"text\": \"a first sample\"}\n{\"text\": \"a second one\"}\n");
    let id = uuid::Uuid::now_v7().to_string();
    let blob = format!("datasets/{id}/data.jsonl");
    let started = maas_functions::registry::uploads::start_blob(state, &blob, bytes.len() as u64)
        .await
        .unwrap();
    let now = maas_store::now_millis();
    let d = Dataset {
        dataset_id: id.clone(),
        owner: demo_id(state).await,
        name: "uploaded".into(),
        description: String::new(),
        kind: "text".into(),
        format: "jsonl".into(),
        status: "uploading".into(),
        blob: blob.clone(),
        size: bytes.len() as u64,
        sha256: sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        upload: Some(started.upload.clone()),
        part_size: started.part_size,
        samples_count: 0,
        fields: vec![],
        errors: vec![],
        error_count: 0,
        error: None,
        preview: vec![],
        project_id: None,
        task_id: None,
        created_at: now,
        updated_at: now,
        expires_at: Some(maas_store::now_secs() + 3600),
        ttl: None,
        ver: 0,
    };
    state.datasets.create(&d, vec![]).await.unwrap();
    let etag = state
        .registry
        .blobs
        .put_part(&blob, &started.upload, 1, bytes)
        .await
        .unwrap();
    (id, etag.trim_matches('"').to_string())
}

/// The task events need a finished task (only a finished one can be deleted).
async fn finished_task(state: &AppState) -> String {
    use maas_store::records::tasks::{Task, TaskStatus};
    let mut t = Task::new(
        &demo_id(state).await,
        "dataset_validation",
        "validate sample",
        json!({}),
    );
    t.status = TaskStatus::Completed;
    t.progress = 100.0;
    t.result = Some(json!({"samples_count": 3}));
    state.tasks.create(&t).await.unwrap();
    t.task_id
}

async fn demo_id(state: &AppState) -> String {
    use maas_store::records::identity::Unique;
    state
        .v1
        .repo
        .user_by(Unique::Username, "demo")
        .await
        .unwrap()
        .unwrap()
        .user_id
}

/// The sample embedding event needs a deployment of the embedding model; the one create event
/// deploys the chat model, so this one is written directly.
async fn embedding_deployment(state: &AppState) -> String {
    use maas_store::records::identity::Unique;
    use maas_store::records::inference::Deployment;
    let demo = state.v1.repo.user_by(Unique::Username, "demo").await.unwrap().unwrap();
    let d = Deployment {
        deployment_id: uuid::Uuid::new_v4().to_string(),
        owner: demo.user_id,
        name: "embeddings".into(),
        model_id: crate::openai::EMBEDDER.into(),
        model_version: None,
        engine_model: None,
        config: json!({}),
        project_id: None,
        slot: 0,
        created_at: maas_store::now_secs(),
        updated_at: maas_store::now_secs(),
        ver: 0,
    };
    let Ok(d) = state.inference.repo.create(d).await else {
        panic!("deployment not created")
    };
    d.deployment_id
}

/// Events carry `{{ACCESS_TOKEN}}`-style placeholders: tokens expire, and ids are only known
/// once an earlier event has created their resource. Each event gets a fresh session.
async fn fill_placeholders(state: &AppState, raw: String, ids: &std::collections::HashMap<&str, String>) -> String {
    use maas_store::records::identity::Unique;
    let demo = state
        .v1
        .repo
        .user_by(Unique::Username, "demo")
        .await
        .unwrap()
        .expect("the configured admin exists");
    let tokens = maas_functions::v1::accounts::start_session(state, &demo).await.unwrap();
    let mut raw = raw
        .replace("{{ACCESS_TOKEN}}", &tokens.access_token)
        .replace("{{REFRESH_TOKEN}}", &tokens.refresh_token);
    for (k, v) in ids {
        raw = raw.replace(&format!("{{{{{k}}}}}"), v);
    }
    raw
}
