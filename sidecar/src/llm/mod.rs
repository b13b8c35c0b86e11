//! Language models: one Llama-family implementation of our own on candle.
//!
//! - `tokenizer`: text to ids and back, from GGUF metadata or `tokenizer.json`; UTF-8-safe
//!   streaming decode.
//! - `model`: the forward pass over a packed batch of sequences at different positions.
//! - `q8`: int8 weights and our own kernel for their matmul (generated tokens).
//! - `kv`: each sequence's key/value cache.
//! - `lora`: PEFT LoRA adapters, applied per sequence within a batch.
//! - `weights`: opening a model file (GGUF) or folder; `hf`: Hugging Face folders.
//! - `remote`: models kept in the bucket, copied to disk when first asked for.
//! - `template`: chat templates from the model's metadata.
//! - `sampler`: logits to a token; `stop`: stop strings across token boundaries.
//! - `sequence`: one request; `scheduler`: who runs each step; `engine`: the loop.

pub mod engine;
pub mod hf;
pub mod kv;
pub mod lora;
pub mod model;
pub mod q8;
pub mod remote;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod service;
pub mod stop;
pub mod template;
pub mod tokenizer;
pub mod weights;

pub use kv::SeqCache;
pub use model::{Llama, LlamaConfig, Repack, SeqStep};
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use weights::LoadedModel;
