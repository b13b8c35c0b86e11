//! One request in the engine: its tokens, how far its prompt is in the cache, how it samples,
//! when it stops, and the channel its events go to (closed when the caller went away).

use std::time::Instant;

use maas_sidecar_client::llm::{FinishReason, GenerateEvent, SamplingParams, TokenLogprob};
use tokio::sync::mpsc::UnboundedSender;

use super::kv::SeqCache;
use super::sampler::{Choice, Sampler};
use super::stop::{Scan, StopMatcher};
use super::tokenizer::{StreamDecoder, Tokenizer};

pub struct Sequence {
    pub user: String,
    /// Prompt and generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub max_tokens: usize,
    pub cache: SeqCache,
    sampler: Sampler,
    decoder: StreamDecoder,
    stop: StopMatcher,
    events: UnboundedSender<GenerateEvent>,
    logprobs: bool,
    submitted: Instant,
    first_token: Option<Instant>,
    adapter: Option<std::sync::Arc<super::lora::Adapter>>,
    /// The engine's in-flight count, held until this sequence is dropped.
    pub in_flight: Option<std::sync::Arc<()>>,
}

impl Sequence {
    pub fn new(
        user: String,
        prompt: Vec<u32>,
        params: SamplingParams,
        cache: SeqCache,
        events: UnboundedSender<GenerateEvent>,
        adapter: Option<std::sync::Arc<super::lora::Adapter>>,
    ) -> Sequence {
        Sequence {
            user,
            prompt_len: prompt.len(),
            max_tokens: params.max_tokens as usize,
            stop: StopMatcher::new(&params.stop),
            logprobs: params.logprobs.is_some(),
            sampler: Sampler::new(params, &prompt),
            tokens: prompt,
            cache,
            decoder: StreamDecoder::default(),
            events,
            submitted: Instant::now(),
            first_token: None,
            adapter,
            in_flight: None,
        }
    }

    /// Tokens not yet in the KV cache: the rest of the prompt, or the last sampled token.
    pub fn pending(&self) -> &[u32] {
        &self.tokens[self.cache.len()..]
    }

    /// This step's part: the next `n` pending tokens, with the cache they extend.
    pub fn step(&mut self, n: usize) -> super::model::SeqStep<'_> {
        let start = self.cache.len();
        super::model::SeqStep {
            tokens: &self.tokens[start..start + n],
            cache: &mut self.cache,
            prompt: start < self.prompt_len,
            adapter: self.adapter.as_deref(),
        }
    }

    /// Whether the prompt is through, so the step's logits are for a new token.
    pub fn decoding(&self) -> bool {
        self.cache.len() >= self.prompt_len
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// The caller stopped listening.
    pub fn cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Most positions this sequence can reach: what it reserves of the KV budget.
    pub fn reserved_tokens(&self) -> usize {
        self.prompt_len + self.max_tokens
    }

    /// Samples from this step's `logits`, sends the text, and says whether generation ended.
    pub fn advance(&mut self, logits: &mut [f32], tok: &Tokenizer) -> Option<FinishReason> {
        let choice = self.sampler.sample(logits);
        self.first_token.get_or_insert_with(Instant::now);
        self.tokens.push(choice.token);
        let (logprob, top) = self.logprobs(&choice, tok);
        if choice.token == tok.eos {
            let rest = self.decoder.finish() + &self.stop.finish();
            self.send_text(rest, logprob, top);
            return Some(FinishReason::Stop);
        }
        let delta = self.decoder.push(tok, choice.token);
        match self.stop.push(&delta) {
            Scan::Stopped(text) => {
                self.send_text(text, logprob, top);
                Some(FinishReason::Stop)
            }
            Scan::Text(text) if self.generated() >= self.max_tokens => {
                let text = text + &self.decoder.finish() + &self.stop.finish();
                self.send_text(text, logprob, top);
                Some(FinishReason::Length)
            }
            Scan::Text(text) => {
                self.send_text(text, logprob, top);
                None
            }
        }
    }

    /// Ends the stream: usage and timing, after the last token.
    pub fn finish(&self, reason: FinishReason) {
        let ttft = self
            .first_token
            .map_or(0.0, |t| t.duration_since(self.submitted).as_secs_f64() * 1000.0);
        let _ = self.events.send(GenerateEvent::Done {
            finish_reason: reason,
            prompt_tokens: self.prompt_len as u32,
            completion_tokens: self.generated() as u32,
            time_to_first_token_ms: ttft,
        });
    }

    pub fn fail(&self, message: String) {
        let _ = self.events.send(GenerateEvent::Failed { message });
    }

    fn send_text(&self, text: String, logprob: Option<TokenLogprob>, top_logprobs: Vec<TokenLogprob>) {
        let _ = self.events.send(GenerateEvent::Token {
            text,
            logprob,
            top_logprobs,
        });
    }

    fn logprobs(&self, c: &Choice, tok: &Tokenizer) -> (Option<TokenLogprob>, Vec<TokenLogprob>) {
        if !self.logprobs {
            return (None, Vec::new());
        }
        let entry = |id: u32, logprob: f32| {
            let bytes = tok.token_bytes(id).to_vec();
            TokenLogprob {
                token: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                logprob,
            }
        };
        (
            Some(entry(c.token, c.logprob)),
            c.top.iter().map(|&(id, lp)| entry(id, lp)).collect(),
        )
    }
}
