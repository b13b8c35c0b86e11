//! The continuous-batching engine on the built-in SmolLM2 model: answers, batching that changes
//! nothing, seeds, stop strings, cancellation and backpressure. Needs `scripts/fetch-models`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maas_sidecar::llm::engine::EngineConfig;
use maas_sidecar::llm::scheduler::SchedulerConfig;
use maas_sidecar::llm::service::{LlmService, ModelStatus};
use maas_sidecar_client::llm::{
    ChatMessage, FinishReason, GenerateError, GenerateEvent, GenerateRequest, Prompt, SamplingParams,
};
use tokio::sync::mpsc::UnboundedReceiver;

const MODEL: &str = "smollm2-135m-instruct";

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("MAAS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.maas/models"));
    assert!(
        dir.join(MODEL).join("model.gguf").exists(),
        "run scripts/fetch-models first"
    );
    dir
}

fn service(scheduler: SchedulerConfig) -> Arc<LlmService> {
    let svc = LlmService::new(EngineConfig {
        scheduler,
        ..EngineConfig::default()
    });
    svc.load(MODEL.into(), models_dir().join(MODEL).join("model.gguf"));
    let start = Instant::now();
    while svc.status(MODEL) != Some(ModelStatus::Ready) {
        assert!(start.elapsed() < Duration::from_secs(60), "{:?}", svc.status(MODEL));
        std::thread::sleep(Duration::from_millis(50));
    }
    svc
}

fn chat(text: &str, params: SamplingParams) -> GenerateRequest {
    GenerateRequest {
        model: MODEL.into(),
        prompt: Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: text.into(),
        }]),
        params,
        user: "tester".into(),
    }
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens,
        temperature: 0.0,
        ..SamplingParams::default()
    }
}

/// All text of a stream, and how it finished.
async fn collect(mut rx: UnboundedReceiver<GenerateEvent>) -> (String, FinishReason, u32) {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            GenerateEvent::Token { text: t, .. } => text.push_str(&t),
            GenerateEvent::Done {
                finish_reason,
                completion_tokens,
                ..
            } => return (text, finish_reason, completion_tokens),
            GenerateEvent::Failed { message } => panic!("failed: {message}"),
        }
    }
    panic!("stream ended without Done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_chat_knows_the_capital_of_france_and_stops_by_itself() {
    let svc = service(SchedulerConfig::default());
    let rx = svc
        .generate(chat(
            "What is the capital of France? Answer in one sentence.",
            greedy(64),
        ))
        .unwrap();
    let (text, reason, n) = collect(rx).await;
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(reason, FinishReason::Stop, "{text:?} after {n} tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_greedy_requests_each_get_their_solo_answer() {
    let svc = service(SchedulerConfig::default());
    let questions = [
        "What is the capital of Italy?",
        "Name a primary colour.",
        "What is 2 + 2?",
        "Say hello in French.",
        "What do bees make?",
        "Name a planet.",
        "What is the opposite of hot?",
        "Write one word about the sea.",
    ];
    let mut solo = Vec::new();
    for q in questions {
        solo.push(collect(svc.generate(chat(q, greedy(24))).unwrap()).await);
    }
    // Submitted a few milliseconds apart, so requests join a batch that is already running.
    let mut streams = Vec::new();
    for q in questions {
        streams.push(tokio::spawn(collect(svc.generate(chat(q, greedy(24))).unwrap())));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for (i, s) in streams.into_iter().enumerate() {
        assert_eq!(s.await.unwrap(), solo[i], "{}", questions[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_gives_the_same_sample_again_and_max_tokens_ends_with_length() {
    let svc = service(SchedulerConfig::default());
    let params = |seed| SamplingParams {
        max_tokens: 16,
        temperature: 0.9,
        top_p: 0.95,
        seed: Some(seed),
        ..SamplingParams::default()
    };
    let story = "Tell me a story about a dragon.";
    let a = collect(svc.generate(chat(story, params(11))).unwrap()).await;
    let b = collect(svc.generate(chat(story, params(11))).unwrap()).await;
    assert_eq!(a, b);
    assert_eq!((a.1, a.2), (FinishReason::Length, 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_string_ends_the_text_before_it() {
    let svc = service(SchedulerConfig::default());
    let (full, _, _) = collect(
        svc.generate(chat(
            "What is the capital of France? Answer in one sentence.",
            greedy(32),
        ))
        .unwrap(),
    )
    .await;
    let cut = full.find("Paris").expect("the greedy answer names Paris");
    let mut params = greedy(32);
    params.stop = vec!["Paris".into()];
    let (text, reason, _) = collect(
        svc.generate(chat("What is the capital of France? Answer in one sentence.", params))
            .unwrap(),
    )
    .await;
    assert_eq!((text.as_str(), reason), (&full[..cut], FinishReason::Stop));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_longer_than_the_context_is_refused_with_both_counts() {
    let svc = service(SchedulerConfig::default());
    let long = "word ".repeat(9000);
    match svc.generate(chat(&long, greedy(16))) {
        Err(GenerateError::ContextTooLong { context, prompt, .. }) => {
            assert_eq!(context, 8192);
            assert!(prompt > 9000, "{prompt}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        svc.generate(GenerateRequest {
            model: "nope".into(),
            ..chat("hi", greedy(4))
        }),
        Err(GenerateError::UnknownModel { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_frees_its_place_and_a_full_queue_refuses_more() {
    let svc = service(SchedulerConfig {
        max_batch: 1,
        max_waiting: 2,
        ..SchedulerConfig::default()
    });
    // One running, two waiting: the queue is full.
    let mut running = svc.generate(chat("Count from one to a hundred.", greedy(400))).unwrap();
    running.recv().await.expect("the first request is running");
    let waiting: Vec<_> = (0..2).map(|_| svc.generate(chat("Hi", greedy(4))).unwrap()).collect();
    assert!(matches!(
        svc.generate(chat("Hi", greedy(4))),
        Err(GenerateError::QueueFull)
    ));
    // The long one's caller leaves: within a step, the waiting ones run and finish.
    drop(running);
    for rx in waiting {
        let started = Instant::now();
        let (_, reason, _) = collect(rx).await;
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(matches!(reason, FinishReason::Stop | FinishReason::Length));
    }
    assert!(svc.generate(chat("Hi", greedy(4))).is_ok(), "room again");
}
