//! Language models: one Llama-family implementation of our own on candle.
//!
//! - `tokenizer`: text to ids and back, from GGUF metadata; UTF-8-safe streaming decode.
//! - `model`: the forward pass over a packed batch of sequences at different positions.
//! - `kv`: each sequence's key/value cache.
//! - `weights`: opening a model folder or file.

pub mod kv;
pub mod model;
pub mod tokenizer;
pub mod weights;

pub use kv::SeqCache;
pub use model::{Llama, LlamaConfig, Repack, SeqStep};
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use weights::LoadedModel;
