//! OpenAI's API at `/v1` on `maas` serving the built-in SmolLM2 model, over HTTP on both
//! backends: models, chat and completions (whole and streamed), and the errors in OpenAI's
//! shape. Needs `scripts/fetch-models`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use maas_sidecar::llm::service::{LlmService, ModelStatus};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{spawn_with, Backend, TestApp};

pub const MODEL: &str = "smollm2-135m-instruct";

on_both_backends!(
    the_served_models_are_listed_and_an_unknown_one_is_404,
    a_chat_completion_names_the_capital_of_france_and_counts_its_tokens,
    a_streamed_chat_joins_to_the_same_text_and_ends_with_usage_then_done,
    completions_continue_a_prompt_whole_and_streamed,
    n_seeded_choices_differ_from_each_other_and_repeat,
    bad_requests_get_openai_errors_that_name_the_parameter,
    embeddings_equal_sentence_transformers_as_floats_and_as_base64_and_count_tokens,
    bad_embedding_requests_get_openai_errors_that_name_the_parameter,
);

pub const EMBEDDER: &str = "all-minilm-l6-v2";

pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("MAAS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".maas/models"));
    assert!(
        dir.join(MODEL).join("model.gguf").exists(),
        "{}: run scripts/fetch-models first",
        dir.display()
    );
    dir
}

/// Waits until both built-in models are ready.
pub async fn wait_for_models(llm: &LlmService) {
    let start = Instant::now();
    for id in [MODEL, EMBEDDER] {
        while llm.status(id) != Some(ModelStatus::Ready) {
            assert!(start.elapsed() < Duration::from_secs(60), "{id}: {:?}", llm.status(id));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `maas` serving the built-in models, and a signed-up user's access token.
pub async fn llm_app(b: Backend) -> (TestApp, String) {
    llm_app_with(b, |_| {}).await
}

/// [`llm_app`], with the configuration changed first.
pub async fn llm_app_with(b: Backend, tweak: impl FnOnce(&mut maas::Config)) -> (TestApp, String) {
    let app = spawn_with(b, |c| {
        c.llm.models_dir = Some(models_dir());
        tweak(c);
    })
    .await;
    let (tokens, _) = app.signed_up().await;
    let token = tokens["access_token"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let (s, v, _) = app.call(Method::GET, "/v1/models", Some(&token), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let listed = |id: &str| v["data"].as_array().unwrap().iter().any(|m| m["id"] == id);
        if listed(MODEL) && listed(EMBEDDER) {
            return (app, token);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the models never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn france(extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        "max_tokens": 32,
        "temperature": 0,
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

/// The `data:` payloads of an SSE response, in order.
pub async fn sse(app: &TestApp, path: &str, token: &str, body: Value) -> Vec<String> {
    let r = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_string()
        })
        .collect()
}

/// Asserts an OpenAI error answer and returns its `error` object.
fn openai_error(status: StatusCode, v: &Value, want: StatusCode) -> Value {
    assert_eq!(status, want, "{v}");
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    assert!(
        e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code"),
        "{v}"
    );
    e.clone()
}

async fn the_served_models_are_listed_and_an_unknown_one_is_404(b: Backend) {
    let (app, token) = llm_app(b).await;
    let (s, v, _) = app.call(Method::GET, "/v1/models", Some(&token), None).await;
    assert_eq!((s, &v["object"]), (StatusCode::OK, &json!("list")));
    let model = v["data"].as_array().unwrap().iter().find(|m| m["id"] == MODEL).unwrap();
    assert_eq!(
        (&model["object"], &model["owned_by"]),
        (&json!("model"), &json!("maas"))
    );
    let (s, v, _) = app
        .call(Method::GET, &format!("/v1/models/{MODEL}"), Some(&token), None)
        .await;
    assert_eq!((s, &v["id"]), (StatusCode::OK, &json!(MODEL)));
    let (s, v, _) = app.call(Method::GET, "/v1/models/gpt-17", Some(&token), None).await;
    assert_eq!(openai_error(s, &v, StatusCode::NOT_FOUND)["code"], "model_not_found");
    let (s, v, _) = app.call(Method::GET, "/v1/models", None, None).await;
    assert_eq!(openai_error(s, &v, StatusCode::UNAUTHORIZED)["code"], "invalid_api_key");
    let (s, v, _) = app.call(Method::GET, "/v1/no-such-thing", Some(&token), None).await;
    openai_error(s, &v, StatusCode::NOT_FOUND);
}

async fn a_chat_completion_names_the_capital_of_france_and_counts_its_tokens(b: Backend) {
    let (app, token) = llm_app(b).await;
    let (s, v, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(france(json!({}))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((&v["object"], &v["model"]), (&json!("chat.completion"), &json!(MODEL)));
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(
        (&choice["message"]["role"], &choice["finish_reason"]),
        (&json!("assistant"), &json!("stop"))
    );
    assert!(choice["message"]["content"].as_str().unwrap().contains("Paris"), "{v}");
    let u = &v["usage"];
    assert!(
        u["prompt_tokens"].as_u64().unwrap() > 20 && u["completion_tokens"].as_u64().unwrap() > 2,
        "{v}"
    );
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
    // max_tokens cuts the answer short: finish_reason "length".
    let (_, v, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(france(json!({"max_completion_tokens": 2}))),
        )
        .await;
    assert_eq!(
        (&v["choices"][0]["finish_reason"], &v["usage"]["completion_tokens"]),
        (&json!("length"), &json!(2))
    );
    // Log-probabilities with alternatives, best first.
    let (_, v, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(france(json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 3}))),
        )
        .await;
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 3, "{v}");
    let top = content[0]["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["token"], content[0]["token"], "greedy picks the best");
    assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
}

async fn a_streamed_chat_joins_to_the_same_text_and_ends_with_usage_then_done(b: Backend) {
    let (app, token) = llm_app(b).await;
    let (_, whole, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(france(json!({}))),
        )
        .await;
    let events = sse(
        &app,
        "/v1/chat/completions",
        &token,
        france(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, whole["choices"][0]["message"]["content"].as_str().unwrap());
    let usage = chunks.last().unwrap();
    assert_eq!(
        usage["choices"],
        json!([]),
        "the usage chunk comes last, with no choices"
    );
    assert_eq!(usage["usage"], whole["usage"]);
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], "stop");
    // Without include_usage there is no usage chunk.
    let events = sse(&app, "/v1/chat/completions", &token, france(json!({"stream": true}))).await;
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last.get("usage").is_none());
}

async fn completions_continue_a_prompt_whole_and_streamed(b: Backend) {
    let (app, token) = llm_app(b).await;
    let body = json!({"model": MODEL, "prompt": "The capital of Germany is", "max_tokens": 4, "temperature": 0});
    let (s, v, _) = app
        .call(Method::POST, "/v1/completions", Some(&token), Some(body.clone()))
        .await;
    assert_eq!((s, &v["object"]), (StatusCode::OK, &json!("text_completion")), "{v}");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Berlin"), "{v}");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = sse(&app, "/v1/completions", &token, streamed).await;
    let joined: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(joined, text);
    // Two prompts, one choice each, in order.
    let two = json!({"model": MODEL, "prompt": ["The capital of Germany is", "The capital of Italy is"], "max_tokens": 3, "temperature": 0});
    let (_, v, _) = app.call(Method::POST, "/v1/completions", Some(&token), Some(two)).await;
    let texts: Vec<&str> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert!(texts[0].contains("Berlin") && texts[1].contains("Rome"), "{v}");
}

async fn n_seeded_choices_differ_from_each_other_and_repeat(b: Backend) {
    let (app, token) = llm_app(b).await;
    let body = json!({
        "model": MODEL, "messages": [{"role": "user", "content": "Tell me a story about a dragon."}],
        "n": 3, "seed": 42, "temperature": 1.0, "max_tokens": 12,
    });
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"]["content"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, a, _) = app
        .call(Method::POST, "/v1/chat/completions", Some(&token), Some(body.clone()))
        .await;
    let (_, b2, _) = app
        .call(Method::POST, "/v1/chat/completions", Some(&token), Some(body))
        .await;
    assert_eq!(texts(&a), texts(&b2), "the same seed gives the same choices");
    let t = texts(&a);
    assert!(t[0] != t[1] || t[1] != t[2], "choices drew from different seeds: {t:?}");
    assert_eq!(a["usage"]["completion_tokens"], 36, "{a}");
}

async fn bad_requests_get_openai_errors_that_name_the_parameter(b: Backend) {
    let (app, token) = llm_app(b).await;
    let cases = [
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            "messages[0].role",
        ),
        (json!({"messages": [{"role": "user"}]}), "messages[0].content"),
        (json!({"messages": "hi"}), "messages"),
        (json!({"n": 0}), "n"),
        (json!({"n": 100}), "n"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"temperature": -0.5}), "temperature"),
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"top_p": 1.5}), "top_p"),
        (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"top_logprobs": 2}), "top_logprobs"),
    ];
    for (extra, param) in cases {
        let (s, v, _) = app
            .call(
                Method::POST,
                "/v1/chat/completions",
                Some(&token),
                Some(france(extra.clone())),
            )
            .await;
        let e = openai_error(s, &v, StatusCode::BAD_REQUEST);
        assert_eq!(
            (e["type"].as_str(), e["param"].as_str()),
            (Some("invalid_request_error"), Some(param)),
            "{extra}: {v}"
        );
    }
    let completion = |extra: Value| {
        let mut body = json!({"model": MODEL, "prompt": "Hello", "max_tokens": 2});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, param) in [
        (json!({"prompt": []}), "prompt"),
        (json!({"prompt": vec!["a"; 17]}), "prompt"),
        (json!({"prompt": 5}), "prompt"),
        (json!({"echo": true}), "echo"),
        (json!({"logprobs": 6}), "logprobs"),
    ] {
        let (s, v, _) = app
            .call(
                Method::POST,
                "/v1/completions",
                Some(&token),
                Some(completion(extra.clone())),
            )
            .await;
        let e = openai_error(s, &v, StatusCode::BAD_REQUEST);
        assert_eq!(e["param"].as_str(), Some(param), "{extra}: {v}");
    }
    let mut no_model = france(json!({}));
    no_model.as_object_mut().unwrap().remove("model");
    let (s, v, _) = app
        .call(Method::POST, "/v1/chat/completions", Some(&token), Some(no_model))
        .await;
    assert!(
        openai_error(s, &v, StatusCode::BAD_REQUEST)["message"]
            .as_str()
            .unwrap()
            .contains("model"),
        "{v}"
    );
    let (s, v, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(france(json!({"model": "gpt-17"}))),
        )
        .await;
    assert_eq!(openai_error(s, &v, StatusCode::NOT_FOUND)["code"], "model_not_found");
    // A prompt longer than the context: 400, naming both counts.
    let long = "word ".repeat(9000);
    let (s, v, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(france(json!({"messages": [{"role": "user", "content": long}]}))),
        )
        .await;
    let e = openai_error(s, &v, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "context_length_exceeded");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("8192") && message.contains("9"), "{message}");
    // A body over the limit.
    let huge = "x".repeat(2 << 20);
    let (s, v, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(france(json!({"messages": [{"role": "user", "content": huge}]}))),
        )
        .await;
    openai_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE);
    // No credentials, or a wrong one.
    let (s, v, _) = app
        .call(Method::POST, "/v1/chat/completions", None, Some(france(json!({}))))
        .await;
    openai_error(s, &v, StatusCode::UNAUTHORIZED);
    let (s, v, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some("mk_nope.nope"),
            Some(france(json!({}))),
        )
        .await;
    openai_error(s, &v, StatusCode::UNAUTHORIZED);
}

/// sentence-transformers' vectors for a few texts, from the sidecar's committed fixture.
fn reference_embeddings() -> Vec<(String, usize, Vec<f32>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sidecar/tests/fixtures/minilm_reference.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let vector = c["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (
                c["text"].as_str().unwrap().to_string(),
                c["ids"].as_array().unwrap().len(),
                vector,
            )
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

async fn embeddings_equal_sentence_transformers_as_floats_and_as_base64_and_count_tokens(b: Backend) {
    use base64::Engine as _;
    let (app, token) = llm_app(b).await;
    let reference = reference_embeddings();
    let texts: Vec<&str> = reference.iter().map(|r| r.0.as_str()).collect();
    let body = json!({"model": EMBEDDER, "input": texts});
    let (s, v, _) = app.call(Method::POST, "/v1/embeddings", Some(&token), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((&v["object"], &v["model"]), (&json!("list"), &json!(EMBEDDER)));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), reference.len());
    for (i, (item, (text, _, want))) in data.iter().zip(&reference).enumerate() {
        assert_eq!((&item["object"], &item["index"]), (&json!("embedding"), &json!(i)));
        let got = floats(&item["embedding"]);
        let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-5, "{text:?}: {diff}");
    }
    // Tokens counted after truncation: the long text counts the model's 256.
    let tokens: usize = reference.iter().map(|r| r.1).sum();
    assert_eq!(v["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));

    let body = json!({"model": EMBEDDER, "input": texts[1], "encoding_format": "base64"});
    let (s, b64, _) = app.call(Method::POST, "/v1/embeddings", Some(&token), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{b64}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, floats(&data[1]["embedding"]), "base64 carries the same floats");

    // Close meanings are closer than unrelated ones.
    let body = json!({"model": EMBEDDER, "input": ["A man plays the guitar.", "Someone is playing music on a guitar.", "The stock market fell today."]});
    let (_, v, _) = app.call(Method::POST, "/v1/embeddings", Some(&token), Some(body)).await;
    let e: Vec<Vec<f32>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect();
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(
        cos(&e[0], &e[1]) > cos(&e[0], &e[2]) + 0.3,
        "{} vs {}",
        cos(&e[0], &e[1]),
        cos(&e[0], &e[2])
    );
}

async fn bad_embedding_requests_get_openai_errors_that_name_the_parameter(b: Backend) {
    let (app, token) = llm_app(b).await;
    let cases = [
        (json!({"model": EMBEDDER}), StatusCode::BAD_REQUEST, "input"),
        (json!({"input": "hi"}), StatusCode::BAD_REQUEST, "model"),
        (
            json!({"model": EMBEDDER, "input": []}),
            StatusCode::BAD_REQUEST,
            "input",
        ),
        (
            json!({"model": EMBEDDER, "input": ""}),
            StatusCode::BAD_REQUEST,
            "input",
        ),
        (
            json!({"model": EMBEDDER, "input": ["a", 7]}),
            StatusCode::BAD_REQUEST,
            "input[1]",
        ),
        (
            json!({"model": EMBEDDER, "input": [[1, 2, 3]]}),
            StatusCode::BAD_REQUEST,
            "input[0]",
        ),
        (
            json!({"model": EMBEDDER, "input": vec!["x"; 2049]}),
            StatusCode::BAD_REQUEST,
            "input",
        ),
        (
            json!({"model": EMBEDDER, "input": "hi", "encoding_format": "int8"}),
            StatusCode::BAD_REQUEST,
            "encoding_format",
        ),
        (
            json!({"model": EMBEDDER, "input": "hi", "dimensions": 128}),
            StatusCode::BAD_REQUEST,
            "dimensions",
        ),
        (
            json!({"model": EMBEDDER, "input": "hi", "dimensions": "big"}),
            StatusCode::BAD_REQUEST,
            "dimensions",
        ),
        (json!({"model": MODEL, "input": "hi"}), StatusCode::BAD_REQUEST, "model"),
        (
            json!({"model": "text-embedding-3-small", "input": "hi"}),
            StatusCode::NOT_FOUND,
            "model",
        ),
    ];
    for (body, status, param) in cases {
        let (s, v, _) = app
            .call(Method::POST, "/v1/embeddings", Some(&token), Some(body.clone()))
            .await;
        let e = openai_error(s, &v, status);
        assert_eq!(e["param"], param, "{body}: {v}");
    }
    // The right dimensions are accepted; an embedding model cannot chat.
    let body = json!({"model": EMBEDDER, "input": "hi", "dimensions": 384});
    let (s, v, _) = app.call(Method::POST, "/v1/embeddings", Some(&token), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body = json!({"model": EMBEDDER, "messages": [{"role": "user", "content": "hi"}]});
    let (s, v, _) = app
        .call(Method::POST, "/v1/chat/completions", Some(&token), Some(body))
        .await;
    openai_error(s, &v, StatusCode::BAD_REQUEST);
    // Over the body limit.
    let body = json!({"model": EMBEDDER, "input": "word ".repeat(300_000)});
    let (s, v, _) = app.call(Method::POST, "/v1/embeddings", Some(&token), Some(body)).await;
    openai_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, v, _) = app
        .call(
            Method::POST,
            "/v1/embeddings",
            None,
            Some(json!({"model": EMBEDDER, "input": "hi"})),
        )
        .await;
    openai_error(s, &v, StatusCode::UNAUTHORIZED);
}
