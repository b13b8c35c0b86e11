//! Every sample event in events/ goes through the Lambda adapter: deserialised as an API
//! Gateway HTTP API v2 event, run through that route's handler, and its response checked.

use std::path::PathBuf;

use axum::body::Body;
use http_body_util::BodyExt;
use maas_functions::config::ApiConfig;
use maas_functions::{routes, AppState};
use maas_sidecar::{Sidecar, SidecarConfig};
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
    let sidecar = Sidecar::start(&stores, listener, SidecarConfig::new("events-secret"))
        .await
        .unwrap();
    let config = ApiConfig {
        store,
        sidecar_url: format!("http://{}", sidecar.addr),
        sidecar_secret: "events-secret".into(),
        system_key: "demo-system-key".into(),
        body_limit: 1 << 20,
    };
    let state = AppState::new(&stores, &config);
    let order = std::fs::read_to_string(events_dir().join("ORDER")).unwrap();
    let names: Vec<&str> = order
        .lines()
        .map(|l| l.trim().trim_end_matches(".json"))
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(names.len(), routes::ROUTES.len());
    for name in names {
        let route = routes::find(name).unwrap_or_else(|| panic!("event {name} names no route"));
        let raw = std::fs::read_to_string(events_dir().join(format!("{name}.json"))).unwrap();
        let request =
            lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{name}: not an API Gateway event: {e}"));
        assert_eq!(
            (request.method().as_str(), request.uri().path()),
            (route.method, route.path),
            "{name}"
        );
        let app = routes::router(state.clone(), [route]);
        let response = app.oneshot(request.map(|b| Body::from(b.to_vec()))).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap();
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
