//! The seeds' inference API over HTTP on both backends, serving the built-in models:
//! deployments (seed 003 §6.1–6.2), calls on them (§6.3–6.6), seed 002's models, generate and
//! history, seed 004's generate, token metering, and the errors in the envelope.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::openai::{llm_app, llm_app_with, sse, EMBEDDER, MODEL};
use crate::support::{Backend, TestApp};

on_both_backends!(
    a_deployment_is_created_listed_read_updated_and_deleted_and_hidden_from_others,
    an_eleventh_deployment_is_refused_until_one_is_deleted,
    chat_on_a_deployment_starts_from_its_defaults_whole_and_streamed,
    completion_embedding_and_batch_run_on_deployments_and_its_metrics_count_them,
    history_keeps_the_callers_own_calls_newest_first,
    seed_002_and_004_generate_with_their_own_fields,
    bad_inference_requests_get_clear_errors_in_the_envelope,
    tokens_are_metered_against_the_token_window_and_the_monthly_quota,
    a_websocket_chat_streams_the_same_answer_as_http,
    a_websocket_may_authenticate_in_its_first_message_and_survives_bad_requests,
    metrics_count_calls_per_model_for_the_holder_of_the_system_key,
);

async fn create_deployment(app: &TestApp, token: &str, model: &str, config: Value) -> Value {
    let body = json!({"name": format!("{model} deployment"), "model_id": model, "config": config});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/deployments", Some(token), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["data"].clone()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

async fn other_user(app: &TestApp) -> String {
    let (tokens, _) = app.signed_up().await;
    tokens["access_token"].as_str().unwrap().to_string()
}

/// Asserts an envelope error and returns it.
fn envelope_error(s: StatusCode, v: &Value, want: StatusCode) -> Value {
    assert_eq!(s, want, "{v}");
    assert_eq!(v["success"], false, "{v}");
    v["error"].clone()
}

async fn a_deployment_is_created_listed_read_updated_and_deleted_and_hidden_from_others(b: Backend) {
    let (app, token) = llm_app(b).await;
    let config = json!({
        "replicas": 2,
        "hardware_spec": {"gpu_type": "V100", "gpu_count": 1, "cpu_cores": 8, "memory": "32GB"},
        "auto_scaling": {"enabled": true, "min_replicas": 1, "max_replicas": 5, "target_cpu_utilization": 70},
        "inference_config": {"max_tokens": 32, "temperature": 0.7, "top_p": 0.9, "stream": true},
    });
    let d = create_deployment(&app, &token, MODEL, config.clone()).await;
    assert_eq!((&d["model_id"], &d["status"]), (&json!(MODEL), &json!("ready")), "{d}");
    assert_eq!(d["config"], config, "the serving spec is kept as given");
    let path = format!("/api/v1/inference/deployments/{}", id(&d));

    let (s, v, _) = app
        .call(Method::GET, "/api/v1/inference/deployments", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"]["pagination"]["total"], 1);
    let (s, v, _) = app.call(Method::GET, &path, Some(&token), None).await;
    assert_eq!((s, &v["data"]["name"]), (StatusCode::OK, &d["name"]));
    let (s, v, _) = app
        .call(Method::GET, &format!("{path}/status"), Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["status"], "ready");
    assert_eq!(v["data"]["replicas"], json!({"desired": 2, "ready": 1}));

    let update = json!({"name": "renamed", "config": {"inference_config": {"max_tokens": 8}}});
    let (s, v, _) = app.call(Method::PUT, &path, Some(&token), Some(update)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["name"], "renamed");
    assert_eq!(v["data"]["config"]["inference_config"], json!({"max_tokens": 8}));
    assert_eq!(v["data"]["config"]["replicas"], 1, "a new config replaces the old one");

    // Another user's deployment answers exactly like a missing one.
    let stranger = other_user(&app).await;
    let missing = "/api/v1/inference/deployments/00000000-0000-0000-0000-000000000000";
    for p in [
        path.clone(),
        format!("{path}/status"),
        format!("{path}/metrics"),
        missing.to_string(),
    ] {
        let (s, v, _) = app.call(Method::GET, &p, Some(&stranger), None).await;
        assert_eq!(envelope_error(s, &v, StatusCode::NOT_FOUND)["code"], "RESOURCE_001");
    }
    let (s, v, _) = app
        .call(Method::PUT, &path, Some(&stranger), Some(json!({"name": "mine"})))
        .await;
    envelope_error(s, &v, StatusCode::NOT_FOUND);
    let (s, v, _) = app.call(Method::DELETE, &path, Some(&stranger), None).await;
    envelope_error(s, &v, StatusCode::NOT_FOUND);
    let chat = json!({"deployment_id": id(&d), "messages": [{"role": "user", "content": "hi"}]});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/chat", Some(&stranger), Some(chat))
        .await;
    envelope_error(s, &v, StatusCode::NOT_FOUND);

    let (s, v, _) = app.call(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v, _) = app.call(Method::GET, &path, Some(&token), None).await;
    envelope_error(s, &v, StatusCode::NOT_FOUND);
}

async fn an_eleventh_deployment_is_refused_until_one_is_deleted(b: Backend) {
    let (app, token) = llm_app(b).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(id(&create_deployment(&app, &token, MODEL, json!({})).await));
    }
    let body = json!({"name": "eleventh", "model_id": MODEL});
    let (s, v, _) = app
        .call(
            Method::POST,
            "/api/v1/inference/deployments",
            Some(&token),
            Some(body.clone()),
        )
        .await;
    assert_eq!(envelope_error(s, &v, StatusCode::CONFLICT)["code"], "RESOURCE_003");
    let path = format!("/api/v1/inference/deployments/{}", ids[3]);
    let (s, _, _) = app.call(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/deployments", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Another user has places of their own.
    let stranger = other_user(&app).await;
    create_deployment(&app, &stranger, MODEL, json!({})).await;
}

async fn chat_on_a_deployment_starts_from_its_defaults_whole_and_streamed(b: Backend) {
    let (app, token) = llm_app(b).await;
    let config = json!({"inference_config": {"max_tokens": 12, "temperature": 0}});
    let d = create_deployment(&app, &token, MODEL, config).await;
    let body = json!({
        "deployment_id": id(&d),
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    });
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/chat", Some(&token), Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v["data"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("Paris"), "{text}");
    let usage = &v["data"]["usage"];
    assert!(
        usage["completion_tokens"].as_u64().unwrap() <= 12,
        "the deployment's max_tokens applies: {usage}"
    );
    assert_eq!(v["data"]["deployment_id"], d["id"]);

    // A call's parameters override the defaults: streamed, the deltas join to the same text.
    let mut streamed = body.clone();
    streamed["parameters"] = json!({"stream": true});
    let events = sse(&app, "/api/v1/inference/chat", &token, streamed).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, text);
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"].is_string()));
    assert!(chunks.last().unwrap()["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

/// Polls until `check` holds: counters are written just after the answer goes.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Option<Value>) -> Value {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what} never happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn completion_embedding_and_batch_run_on_deployments_and_its_metrics_count_them(b: Backend) {
    let (app, token) = llm_app(b).await;
    let chat = create_deployment(&app, &token, MODEL, json!({"inference_config": {"temperature": 0}})).await;
    let body =
        json!({"deployment_id": id(&chat), "prompt": "The capital of Germany is", "parameters": {"max_tokens": 4}});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/completion", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["data"]["choices"][0]["text"].as_str().unwrap().contains("Berlin"),
        "{v}"
    );

    let embedder = create_deployment(&app, &token, EMBEDDER, json!({})).await;
    let body = json!({"deployment_id": id(&embedder), "texts": ["first text", "second text"]});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/embedding", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let e = v["data"]["embeddings"].as_array().unwrap();
    assert_eq!((e.len(), e[0].as_array().unwrap().len()), (2, 384));
    assert!(v["data"]["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let body = json!({"deployment_id": id(&chat), "requests": [
        {"id": "req_1", "type": "chat", "data": {"messages": [{"role": "user", "content": "Say hi."}], "parameters": {"max_tokens": 4}}},
        {"id": "req_2", "type": "completion", "data": {"prompt": "One, two,", "parameters": {"max_tokens": 4}}},
        {"id": "req_3", "type": "completion", "data": {}},
        {"type": "image", "data": {"prompt": "a cat"}},
    ]});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/batch", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = &v["data"]["results"];
    assert_eq!((&r[0]["id"], &r[0]["success"]), (&json!("req_1"), &json!(true)), "{v}");
    assert!(r[0]["data"]["choices"][0]["message"]["content"].is_string());
    assert_eq!((&r[1]["success"], &r[2]["success"]), (&json!(true), &json!(false)));
    assert_eq!(r[2]["error"]["details"][0]["field"], "requests[2].data.prompt");
    assert_eq!(
        (&r[3]["id"], &r[3]["error"]["details"][0]["field"]),
        (&json!("3"), &json!("requests[3].type"))
    );
    assert_eq!((&v["data"]["succeeded"], &v["data"]["failed"]), (&json!(2), &json!(2)));

    // One completion and two batch items on the chat deployment (bad items never started).
    let path = format!("/api/v1/inference/deployments/{}/metrics", id(&chat));
    let m = eventually("three calls counted", async || {
        let (_, v, _) = app.call(Method::GET, &path, Some(&token), None).await;
        (v["data"]["requests"] == 3).then(|| v["data"].clone())
    })
    .await;
    assert_eq!(m["errors"], 0);
    assert!(
        m["prompt_tokens"].as_u64().unwrap() > 0 && m["completion_tokens"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert!(m["latency_ms"]["p50"].as_u64().unwrap() >= m["time_to_first_token_ms"]["p50"].as_u64().unwrap());
    assert!(
        m["latency_ms"]["p99"].is_u64() && m["tokens_per_second"].as_f64().unwrap() > 0.0,
        "{m}"
    );
    let path = format!("/api/v1/inference/deployments/{}/metrics", id(&embedder));
    eventually("the embedding counted", async || {
        let (_, v, _) = app.call(Method::GET, &path, Some(&token), None).await;
        (v["data"]["requests"] == 1 && v["data"]["prompt_tokens"].as_u64() > Some(0)).then_some(v)
    })
    .await;
}

async fn history_keeps_the_callers_own_calls_newest_first(b: Backend) {
    let (app, token) = llm_app(b).await;
    for prompt in ["First prompt", "Second prompt"] {
        let body = json!({"model": MODEL, "prompt": prompt, "parameters": {"max_tokens": 2}});
        let (s, v, _) = app
            .call(Method::POST, "/api/v1/inference/generate", Some(&token), Some(body))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let body = json!({"model": "no-such-model", "prompt": "x"});
    let (s, _, _) = app
        .call(Method::POST, "/api/v1/inference/generate", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let v = eventually("three calls kept", async || {
        let (_, v, _) = app
            .call(Method::GET, "/api/v1/inference/history", Some(&token), None)
            .await;
        (v["data"]["pagination"]["total"] == 3).then_some(v)
    })
    .await;
    let items = v["data"]["items"].as_array().unwrap();
    assert_eq!(items[0]["status"], "error", "newest first: {v}");
    assert_eq!(
        (&items[1]["prompt"], &items[1]["status"]),
        (&json!("Second prompt"), &json!("success"))
    );
    assert_eq!(items[2]["prompt"], "First prompt");
    assert!(items[1]["completion_tokens"].as_u64().unwrap() > 0 && items[1]["output"].is_string());
    assert_eq!(v["data"]["retention_days"], 30);
    let (_, v, _) = app
        .call(
            Method::GET,
            "/api/v1/inference/history?status=error&limit=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(v["data"]["pagination"]["total"], 1);
    let (_, v, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/inference/history?model={MODEL}&page=2&limit=1"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (&v["data"]["pagination"]["total"], &v["data"]["items"][0]["prompt"]),
        (&json!(2), &json!("First prompt"))
    );
    let stranger = other_user(&app).await;
    let (_, v, _) = app
        .call(Method::GET, "/api/v1/inference/history", Some(&stranger), None)
        .await;
    assert_eq!(
        v["data"]["pagination"]["total"], 0,
        "another user's calls are not shown"
    );
}

async fn seed_002_and_004_generate_with_their_own_fields(b: Backend) {
    let (app, token) = llm_app(b).await;
    let (s, v, _) = app
        .call(Method::GET, "/api/v1/inference/models", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = v["data"]["items"].as_array().unwrap();
    let find = |id: &str| items.iter().find(|m| m["id"] == id).unwrap().clone();
    assert_eq!(
        (&find(MODEL)["type"], &find(MODEL)["status"]),
        (&json!("chat"), &json!("ready"))
    );
    assert_eq!(
        (&find(EMBEDDER)["type"], &find(EMBEDDER)["dimensions"]),
        (&json!("embedding"), &json!(384))
    );

    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}], "parameters": {"max_tokens": 32, "temperature": 0}});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/generate", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["data"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{v}"
    );

    let body =
        json!({"prompt": "The capital of Spain is", "max_length": 4, "temperature": 0.8, "num_return_sequences": 2});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/generate", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = &v["data"];
    assert_eq!(
        (&d["prompt"], &d["model_path"]),
        (&json!("The capital of Spain is"), &json!(MODEL))
    );
    assert_eq!(d["generated_texts"].as_array().unwrap().len(), 2);
    assert!(d["generation_time"].as_f64().unwrap() > 0.0 && d["timestamp"].is_string());

    let body = json!({"prompts": ["The capital of Spain is", "The capital of Japan is"], "max_length": 4, "model_path": MODEL});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/generate/batch", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = v["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1]["prompt"], "The capital of Japan is");
    assert_eq!(results[1]["generated_texts"].as_array().unwrap().len(), 1);
    assert!(v["data"]["total_generation_time"].as_f64().unwrap() > 0.0);
}

async fn bad_inference_requests_get_clear_errors_in_the_envelope(b: Backend) {
    let (app, token) = llm_app(b).await;
    let chat = id(&create_deployment(&app, &token, MODEL, json!({})).await);
    let embedder = id(&create_deployment(&app, &token, EMBEDDER, json!({})).await);
    let hi = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "/api/v1/inference/deployments",
            json!({"name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "model_id",
        ),
        (
            "/api/v1/inference/deployments",
            json!({"name": "x", "model_id": "gpt-17"}),
            StatusCode::NOT_FOUND,
            "model_id",
        ),
        (
            "/api/v1/inference/deployments",
            json!({"name": " ", "model_id": MODEL}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "/api/v1/inference/deployments",
            json!({"name": "x", "model_id": MODEL, "config": {"replicas": 0}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "config.replicas",
        ),
        (
            "/api/v1/inference/deployments",
            json!({"name": "x", "model_id": MODEL, "config": {"inference_config": {"temperature": 5}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "config.inference_config.temperature",
        ),
        (
            "/api/v1/inference/deployments",
            json!({"name": "x", "model_id": MODEL, "config": {"hardware_spec": {"memory": "lots"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "config.hardware_spec.memory",
        ),
        (
            "/api/v1/inference/deployments",
            json!({"name": "x", "model_id": MODEL, "config": {"replicas": "two"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "config.replicas",
        ),
        (
            "/api/v1/inference/chat",
            json!({"messages": hi}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "deployment_id",
        ),
        (
            "/api/v1/inference/chat",
            json!({"deployment_id": chat, "messages": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "messages",
        ),
        (
            "/api/v1/inference/chat",
            json!({"deployment_id": chat, "messages": [{"role": "wizard", "content": "hi"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "messages[0].role",
        ),
        (
            "/api/v1/inference/chat",
            json!({"deployment_id": chat, "messages": hi, "parameters": {"temperature": -1}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "parameters.temperature",
        ),
        (
            "/api/v1/inference/chat",
            json!({"deployment_id": chat, "messages": hi, "parameters": {"max_tokens": 0}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "parameters.max_tokens",
        ),
        (
            "/api/v1/inference/chat",
            json!({"deployment_id": chat, "messages": "hi"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "messages",
        ),
        (
            "/api/v1/inference/chat",
            json!({"deployment_id": chat, "messages": [{"role": "user", "content": "word ".repeat(9000)}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "messages",
        ),
        (
            "/api/v1/inference/chat",
            json!({"deployment_id": embedder, "messages": hi}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "messages",
        ),
        (
            "/api/v1/inference/completion",
            json!({"deployment_id": chat, "prompt": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "prompt",
        ),
        (
            "/api/v1/inference/embedding",
            json!({"deployment_id": embedder, "texts": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "texts",
        ),
        (
            "/api/v1/inference/embedding",
            json!({"deployment_id": embedder, "texts": ["a", ""]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "texts[1]",
        ),
        (
            "/api/v1/inference/embedding",
            json!({"deployment_id": chat, "texts": ["a"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "deployment_id",
        ),
        (
            "/api/v1/inference/batch",
            json!({"deployment_id": chat, "requests": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "requests",
        ),
        (
            "/api/v1/inference/generate",
            json!({"prompt": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "model",
        ),
        (
            "/api/v1/inference/generate",
            json!({"model": MODEL}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "prompt",
        ),
        (
            "/api/v1/generate",
            json!({"prompt": "x", "num_return_sequences": 9}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "num_return_sequences",
        ),
        (
            "/api/v1/generate",
            json!({"prompt": "x", "max_length": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_length",
        ),
        (
            "/api/v1/generate",
            json!({"prompt": "x", "model_path": "gpt-17"}),
            StatusCode::NOT_FOUND,
            "model_path",
        ),
        (
            "/api/v1/generate/batch",
            json!({"prompts": vec!["x"; 33]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "prompts",
        ),
    ];
    for (path, body, status, field) in cases {
        let (s, v, _) = app.call(Method::POST, path, Some(&token), Some(body.clone())).await;
        let e = envelope_error(s, &v, status);
        assert_eq!(e["details"][0]["field"], field, "{path} {body}: {v}");
    }
    // Over the body limit.
    let big = json!({"deployment_id": chat, "prompt": "x".repeat(2 << 20)});
    let (s, v, _) = app
        .call(Method::POST, "/api/v1/inference/completion", Some(&token), Some(big))
        .await;
    envelope_error(s, &v, StatusCode::BAD_REQUEST);
    // Without credentials.
    let (s, v, _) = app
        .call(
            Method::POST,
            "/api/v1/inference/chat",
            None,
            Some(json!({"deployment_id": chat, "messages": hi})),
        )
        .await;
    envelope_error(s, &v, StatusCode::UNAUTHORIZED);
}

async fn generate(app: &TestApp, token: &str, body: &Value) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    app.call(
        Method::POST,
        "/api/v1/inference/generate",
        Some(token),
        Some(body.clone()),
    )
    .await
}

async fn tokens_are_metered_against_the_token_window_and_the_monthly_quota(b: Backend) {
    let (app, token) = llm_app_with(b, |c| c.identity.rate_inference_tokens = "40/3600".parse().unwrap()).await;
    let body = json!({"model": MODEL, "prompt": "Count: one, two, three,", "parameters": {"max_tokens": 16, "temperature": 0}});
    let (s, v, _) = generate(&app, &token, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let used = v["data"]["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used < 40, "{used}");
    // Metering lands just after the answer; the window is used up once 40 tokens are counted.
    let (v, headers) = {
        let start = Instant::now();
        loop {
            let (s, v, h) = generate(&app, &token, &body).await;
            if s == StatusCode::TOO_MANY_REQUESTS {
                break (v, h);
            }
            assert_eq!(s, StatusCode::OK, "{v}");
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the token window never filled"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(v["error"]["code"], "TOO_MANY_REQUESTS", "{v}");
    assert_eq!(headers["x-ratelimit-limit"], "40");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert!(headers.contains_key("retry-after"));
    // Other routes are not token-metered.
    let (s, _, _) = app
        .call(Method::GET, "/api/v1/inference/models", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);

    let (app, token) = llm_app_with(b, |c| c.identity.monthly_tokens = 10).await;
    let (s, v, _) = generate(&app, &token, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = eventually("the monthly quota used up", async || {
        let (s, v, _) = generate(&app, &token, &body).await;
        (s == StatusCode::TOO_MANY_REQUESTS).then_some(v)
    })
    .await;
    assert_eq!(
        (&v["error"]["code"], &v["error"]["message"]),
        (&json!("RESOURCE_004"), &json!("monthly token quota used up"))
    );
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(app: &TestApp, bearer: Option<&str>) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/v1/inference/stream", app.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(t) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn ws_send(socket: &mut Socket, v: Value) {
    use futures::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
        .await
        .unwrap();
}

/// The next JSON message, or `None` once the server closed.
async fn ws_next(socket: &mut Socket) -> Option<Value> {
    use futures::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("an answer in time")?
        {
            Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Sends a chat and reads its deltas to `done`: the joined text and the `done` message.
async fn ws_chat(socket: &mut Socket, chat: Value) -> (String, Value) {
    let id = chat["id"].clone();
    ws_send(socket, chat).await;
    let mut text = String::new();
    loop {
        let m = ws_next(socket).await.expect("the socket stays open");
        assert_eq!(m["id"], id, "{m}");
        match m["type"].as_str().unwrap() {
            "delta" => text.push_str(m["content"].as_str().unwrap()),
            "done" => return (text, m),
            other => panic!("unexpected {other}: {m}"),
        }
    }
}

const FRANCE: &str = "What is the capital of France? Answer in one sentence.";

async fn a_websocket_chat_streams_the_same_answer_as_http(b: Backend) {
    let (app, token) = llm_app(b).await;
    let messages = json!([{"role": "user", "content": FRANCE}]);
    let parameters = json!({"max_tokens": 24, "temperature": 0});
    let body = json!({"model": MODEL, "messages": messages, "parameters": parameters});
    let (s, v, _) = generate(&app, &token, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let whole = v["data"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    let mut socket = ws_connect(&app, Some(&token)).await;
    assert_eq!(ws_next(&mut socket).await.unwrap()["type"], "ready");
    let chat = json!({"type": "chat", "id": "q1", "model": MODEL, "messages": messages, "parameters": parameters});
    let (text, done) = ws_chat(&mut socket, chat).await;
    assert_eq!(text, whole);
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(done["usage"], v["data"]["usage"]);
    assert!(done["finish_reason"].is_string());

    // A plain GET is told to upgrade, in the envelope.
    let (s, v, _) = app.call(Method::GET, "/v1/inference/stream", Some(&token), None).await;
    assert_eq!(
        envelope_error(s, &v, StatusCode::UPGRADE_REQUIRED)["code"],
        "VALIDATION_002"
    );
}

async fn a_websocket_may_authenticate_in_its_first_message_and_survives_bad_requests(b: Backend) {
    let (app, token) = llm_app(b).await;
    let d = id(&create_deployment(
        &app,
        &token,
        MODEL,
        json!({"inference_config": {"max_tokens": 8, "temperature": 0}}),
    )
    .await);
    let mut socket = ws_connect(&app, None).await;
    ws_send(&mut socket, json!({"type": "auth", "token": format!("Bearer {token}")})).await;
    assert_eq!(ws_next(&mut socket).await.unwrap()["type"], "ready");
    let bad =
        json!({"type": "chat", "id": "bad", "deployment_id": d, "messages": [{"role": "wizard", "content": "hi"}]});
    ws_send(&mut socket, bad).await;
    let e = ws_next(&mut socket).await.unwrap();
    assert_eq!(
        (&e["type"], &e["id"], &e["error"]["details"][0]["field"]),
        (&json!("error"), &json!("bad"), &json!("messages[0].role"))
    );
    ws_send(
        &mut socket,
        json!({"type": "chat", "id": "x", "deployment_id": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(ws_next(&mut socket).await.unwrap()["error"]["code"], "RESOURCE_001");
    ws_send(&mut socket, json!({"type": "nonsense"})).await;
    assert_eq!(ws_next(&mut socket).await.unwrap()["type"], "error");
    // Still open: a good chat on the deployment answers, within its default max_tokens.
    let chat =
        json!({"type": "chat", "id": "good", "deployment_id": d, "messages": [{"role": "user", "content": FRANCE}]});
    let (text, done) = ws_chat(&mut socket, chat).await;
    assert!(
        !text.is_empty() && done["usage"]["completion_tokens"].as_u64().unwrap() <= 8,
        "{done}"
    );

    // Wrong credentials: an error, then the server closes.
    let mut socket = ws_connect(&app, None).await;
    ws_send(&mut socket, json!({"type": "auth", "token": "Bearer not-a-token"})).await;
    assert_eq!(ws_next(&mut socket).await.unwrap()["error"]["code"], "AUTH_001");
    assert!(ws_next(&mut socket).await.is_none());
    // A chat before any credentials is refused the same way.
    let mut socket = ws_connect(&app, None).await;
    ws_send(&mut socket, json!({"type": "chat", "model": MODEL, "messages": []})).await;
    assert_eq!(ws_next(&mut socket).await.unwrap()["type"], "error");
    assert!(ws_next(&mut socket).await.is_none());
}

async fn metrics_count_calls_per_model_for_the_holder_of_the_system_key(b: Backend) {
    let (app, token) = llm_app(b).await;
    let body = json!({"model": MODEL, "prompt": "One, two,", "parameters": {"max_tokens": 3}});
    assert_eq!(generate(&app, &token, &body).await.0, StatusCode::OK);
    let scrape = |key: Option<String>| {
        let mut req = app.client.get(format!("{}/metrics", app.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let want = format!("maas_inference_requests_total{{model=\"{MODEL}\"}} 1");
    let start = Instant::now();
    let text = loop {
        let (s, text) = scrape(Some(app.system_key.clone())).await;
        assert_eq!(s, StatusCode::OK);
        if text.contains(&want) {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains(&format!("maas_inference_latency_seconds_count{{model=\"{MODEL}\"}} 1")),
        "{text}"
    );
    assert!(
        text.contains("# TYPE maas_inference_time_to_first_token_seconds histogram"),
        "{text}"
    );
    assert_eq!(scrape(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(Some(token)).await.0,
        StatusCode::UNAUTHORIZED,
        "a user's token is not the system key"
    );
}
