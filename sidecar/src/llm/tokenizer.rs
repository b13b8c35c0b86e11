//! Text to token ids and back: built from a GGUF file's metadata (BPE vocabulary and merges,
//! with the pre-tokenizer its `tokenizer.ggml.pre` names) or from a `tokenizer.json`, plus a
//! streaming decoder that never splits a UTF-8 character across two deltas.
//!
//! candle's own GGUF converter does not know SmolLM2's `smollm` pre-tokenizer and falls back to
//! one that adds a prefix space and keeps digits together: wrong ids. The split patterns here
//! are llama.cpp's for each `pre` name.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// GPT-2's pattern: contractions, letters, numbers, other symbols, whitespace.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's pattern (llama.cpp `llama-bpe`): numbers in runs of at most three digits.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pattern: every digit alone.
const QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split patterns, in order, for a GGUF `tokenizer.ggml.pre` name.
fn split_patterns(pre: &str) -> Result<&'static [&'static str]> {
    Ok(match pre {
        // SmolLM2 and StarCoder: every digit alone, then GPT-2's pattern.
        "smollm" | "starcoder" => &[r"\p{N}", GPT2],
        "gpt2" | "default" | "gpt-2" => &[GPT2],
        "llama-bpe" | "llama3" | "smaug-bpe" => &[LLAMA3],
        "qwen2" => &[QWEN2],
        other => bail!("unsupported GGUF pre-tokenizer {other:?}"),
    })
}

/// GGUF token types (`tokenizer.ggml.token_type`): normal and byte tokens are text; the others
/// (control, user-defined, unknown, unused) are matched whole, as special tokens.
const NORMAL: i32 = 1;
const BYTE: i32 = 6;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Each id's bytes when decoded as text; special tokens have none (they are not text).
    bytes: Vec<Vec<u8>>,
    pub bos: Option<u32>,
    pub eos: u32,
    /// Whether prompts start with `bos`.
    pub add_bos: bool,
}

impl Tokenizer {
    /// From a GGUF file's `tokenizer.ggml.*` metadata (model `gpt2`, byte-level BPE).
    pub fn from_gguf(ct: &Content) -> Result<Tokenizer> {
        let md = |k: &str| ct.metadata.get(k).with_context(|| format!("GGUF has no {k}"));
        let model = md("tokenizer.ggml.model")?.to_string()?;
        if model != "gpt2" {
            bail!("unsupported GGUF tokenizer model {model:?} (only byte-level BPE, \"gpt2\")");
        }
        let pre = match ct.metadata.get("tokenizer.ggml.pre") {
            Some(v) => v.to_string()?.clone(),
            None => "default".to_string(),
        };
        let tokens: Vec<String> = strings(md("tokenizer.ggml.tokens")?)?;
        let merges = strings(md("tokenizer.ggml.merges")?)?
            .into_iter()
            .map(|m| match m.split_once(' ') {
                Some((a, b)) => Ok((a.to_string(), b.to_string())),
                None => bail!("bad BPE merge {m:?}"),
            })
            .collect::<Result<Vec<_>>>()?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()?
                .iter()
                .map(|t| t.to_i32())
                .collect::<candle_core::Result<_>>()?,
            None => vec![NORMAL; tokens.len()],
        };
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(anyhow::Error::msg)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let mut pre_tokenizers = split_patterns(&pre)?
            .iter()
            .map(|p| {
                let split = Split::new(
                    SplitPattern::Regex((*p).into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(anyhow::Error::msg)?;
                Ok(PreTokenizerWrapper::Split(split))
            })
            .collect::<Result<Vec<_>>>()?;
        pre_tokenizers.push(ByteLevel::new(false, false, false).into());
        inner.with_pre_tokenizer(Some(Sequence::new(pre_tokenizers)));
        inner.with_decoder(Some(ByteLevel::default()));
        let special: Vec<bool> = (0..tokens.len())
            .map(|i| !matches!(types.get(i).copied().unwrap_or(NORMAL), NORMAL | BYTE))
            .collect();
        let specials = tokens
            .iter()
            .zip(&special)
            .filter(|(_, s)| **s)
            .map(|(t, _)| AddedToken::from(t.clone(), true));
        inner.add_special_tokens(specials).map_err(anyhow::Error::msg)?;
        let id = |k: &str| ct.metadata.get(k).map(Value::to_u32).transpose();
        let eos = id("tokenizer.ggml.eos_token_id")?.context("GGUF has no eos token id")?;
        let add_bos = match ct.metadata.get("tokenizer.ggml.add_bos_token") {
            Some(v) => v.to_bool()?,
            None => false,
        };
        let bytes = tokens
            .iter()
            .zip(&special)
            .map(|(t, s)| if *s { Vec::new() } else { byte_level_bytes(t) })
            .collect();
        Ok(Tokenizer {
            inner,
            bytes,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos,
            add_bos,
        })
    }

    /// From a Hugging Face `tokenizer.json`, with the `bos` and `eos` strings its
    /// `tokenizer_config.json` names. Byte-level BPE and SentencePiece-style vocabularies
    /// (`▁` for spaces, `<0x0A>` byte tokens) both decode to bytes.
    pub fn from_hf(path: &Path, bos: Option<&str>, eos: Option<&str>) -> Result<Tokenizer> {
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let byte_level = matches!(inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
        let added = inner.get_added_tokens_decoder();
        let bytes = (0..inner.get_vocab_size(true) as u32)
            .map(|id| match (added.get(&id), inner.id_to_token(id)) {
                (Some(t), _) if t.special => Vec::new(),
                (Some(t), _) => t.content.clone().into_bytes(),
                (None, Some(t)) if byte_level => byte_level_bytes(&t),
                (None, Some(t)) => sentencepiece_bytes(&t),
                (None, None) => Vec::new(),
            })
            .collect();
        let id = |t: Option<&str>, what: &str| -> Result<Option<u32>> {
            t.map(|t| {
                inner
                    .token_to_id(t)
                    .with_context(|| format!("{what} token {t:?} is not in the vocabulary"))
            })
            .transpose()
        };
        let bos = id(bos, "bos")?;
        let eos = id(eos, "eos")?.context("tokenizer_config.json names no eos_token")?;
        // The post-processor decides whether prompts start with bos (Llama's does, SmolLM's not).
        let add_bos = match bos {
            Some(b) => {
                inner
                    .encode_fast("", true)
                    .map_err(anyhow::Error::msg)?
                    .get_ids()
                    .first()
                    == Some(&b)
            }
            None => false,
        };
        Ok(Tokenizer {
            inner,
            bytes,
            bos,
            eos,
            add_bos,
        })
    }

    /// Writes this tokenizer as a Hugging Face `tokenizer.json` (a GGUF model saved in Hugging
    /// Face's layout keeps its exact tokenization).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }

    /// The written form of special token `id` (`<|im_end|>`), for chat templates.
    pub fn special_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The ids of `text`. Special tokens written in it (`<|im_start|>`) become their ids, as a
    /// rendered chat template needs; `bos` leads when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(anyhow::Error::msg)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut d = StreamDecoder::default();
        let mut out: String = ids.iter().map(|&id| d.push(self, id)).collect();
        out.push_str(&d.finish());
        out
    }

    /// The bytes `id` stands for; none for special or unknown ids.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }
}

fn strings(v: &Value) -> Result<Vec<String>> {
    Ok(v.to_vec()?
        .iter()
        .map(|s| s.to_string().cloned())
        .collect::<candle_core::Result<_>>()?)
}

/// Turns tokens into text as they come: a delta holds only whole UTF-8 characters, and the
/// bytes of a character split across tokens wait for the rest.
#[derive(Default, Debug)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// The text that `id` completes (often empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.push_bytes(tok.token_bytes(id))
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            // Bytes that can never become valid are replaced, as a lossy decode would.
            Err(e) if e.error_len().is_some() => return self.flush_lossy(),
            Err(e) => e.valid_up_to(),
        };
        let rest = self.pending.split_off(valid);
        String::from_utf8(std::mem::replace(&mut self.pending, rest)).expect("checked UTF-8")
    }

    /// What is left at the end of a stream.
    pub fn finish(&mut self) -> String {
        self.flush_lossy()
    }

    fn flush_lossy(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// GPT-2's byte-level alphabet: each byte is shown as a printable character; this inverts it.
fn byte_level_bytes(token: &str) -> Vec<u8> {
    thread_local! {
        static TO_BYTE: HashMap<char, u8> = gpt2_unicode_to_byte();
    }
    TO_BYTE.with(|m| {
        token
            .chars()
            .flat_map(|c| match m.get(&c) {
                Some(&b) => vec![b],
                // Not byte-level text: keep the character as it is.
                None => c.to_string().into_bytes(),
            })
            .collect()
    })
}

/// SentencePiece's pieces: `▁` is a space and `<0xHH>` a single byte.
fn sentencepiece_bytes(token: &str) -> Vec<u8> {
    if let Some(hex) = token.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    token.replace('\u{2581}', " ").into_bytes()
}

fn gpt2_unicode_to_byte() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut shifted = 0u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).expect("valid char")
            };
            (c, b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_level_alphabet_covers_every_byte_once() {
        let m = gpt2_unicode_to_byte();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'A'], b'A');
    }

    #[test]
    fn sentencepiece_pieces_become_their_bytes() {
        assert_eq!(sentencepiece_bytes("\u{2581}Hello"), b" Hello");
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
        assert_eq!(sentencepiece_bytes("<0xE4>"), [0xE4]);
        assert_eq!(sentencepiece_bytes("<0xZZ>"), b"<0xZZ>");
    }

    #[test]
    fn a_character_split_across_tokens_comes_out_whole_once_complete() {
        let rocket = "🚀".as_bytes();
        let mut d = StreamDecoder::default();
        assert_eq!(d.push_bytes(b"go "), "go ");
        assert_eq!(d.push_bytes(&rocket[..1]), "");
        assert_eq!(d.push_bytes(&rocket[1..3]), "");
        assert_eq!(d.push_bytes(&[rocket[3], b'!']), "🚀!");
        assert_eq!(d.push_bytes(&"é".as_bytes()[..1]), "");
        assert_eq!(d.finish(), "\u{FFFD}", "a character cut off at the end is replaced");
        assert_eq!(
            d.push_bytes(&[0xFF, b'a']),
            "\u{FFFD}a",
            "bytes that can never be text are replaced"
        );
    }
}
