//! What a model file says about itself, read from its header alone: the GGUF key-value
//! metadata and tensor table, or the safetensors JSON header (with `config.json` beside it).
//! No tensor data is read, so a header of a 50 GB file is a few megabytes at most.

use serde_json::{json, Map, Value};

/// The formats the registry accepts and the engine serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gguf,
    Safetensors,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
        }
    }

    /// The file name a version stores the weights under, which is also what the engine looks
    /// for in a model's folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Gguf => "model.gguf",
            Format::Safetensors => "model.safetensors",
        }
    }

    /// Tells the format from the first bytes.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        if head.starts_with(b"GGUF") {
            return Some(Format::Gguf);
        }
        // safetensors: a little-endian header length, then a JSON object.
        (head.len() > 8 && head[8] == b'{').then_some(Format::Safetensors)
    }
}

/// What the header says.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub format: Format,
    pub parameters: u64,
    /// `llama`, `bert`, ...
    pub architecture: Option<String>,
    pub context_length: Option<u64>,
    /// Tensor types by how many parameters each holds, largest first (`Q4_1`, `F16`, ...).
    pub tensor_types: Vec<(String, u64)>,
    /// How many bytes of the file the header and tensors declare; a file shorter than this is
    /// truncated.
    pub declared_size: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeaderError {
    #[error("the file is neither GGUF nor safetensors")]
    UnknownFormat,
    #[error("the {0} header is cut short")]
    Truncated(&'static str),
    #[error("the {0} header is malformed: {1}")]
    Malformed(&'static str, String),
}

/// Limits that keep a hostile header from costing memory or time.
const MAX_ITEMS: u64 = 1 << 24;
const MAX_STRING: u64 = 1 << 24;
const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;

pub fn read(bytes: &[u8], file_size: u64) -> Result<Header, HeaderError> {
    match Format::sniff(bytes) {
        Some(Format::Gguf) => gguf(bytes),
        Some(Format::Safetensors) => safetensors(bytes, file_size),
        None => Err(HeaderError::UnknownFormat),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], HeaderError> {
        let end = (self.at as u64)
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len() as u64);
        let end = end.ok_or(HeaderError::Truncated("GGUF"))? as usize;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn count(&mut self, what: &str) -> Result<u64, HeaderError> {
        let n = self.u64()?;
        if n > MAX_ITEMS {
            return Err(HeaderError::Malformed("GGUF", format!("{n} {what} is too many")));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, HeaderError> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(HeaderError::Malformed("GGUF", format!("a string of {n} bytes")));
        }
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| HeaderError::Malformed("GGUF", "a string is not UTF-8".into()))
    }
    /// One value of GGUF type `t`: scalars and strings are kept, arrays are passed over.
    fn value(&mut self, t: u32) -> Result<Value, HeaderError> {
        Ok(match t {
            0 => json!(self.take(1)?[0]),
            1 => json!(self.take(1)?[0] as i8),
            2 => json!(u16::from_le_bytes(self.take(2)?.try_into().expect("2"))),
            3 => json!(i16::from_le_bytes(self.take(2)?.try_into().expect("2"))),
            4 => json!(self.u32()?),
            5 => json!(self.u32()? as i32),
            6 => json!(f32::from_le_bytes(self.take(4)?.try_into().expect("4"))),
            7 => json!(self.take(1)?[0] != 0),
            8 => json!(self.string()?),
            9 => {
                let (inner, n) = (self.u32()?, self.count("array items")?);
                for _ in 0..n {
                    self.value(inner)?;
                }
                Value::Null
            }
            10 => json!(self.u64()?),
            11 => json!(self.u64()? as i64),
            12 => json!(f64::from_le_bytes(self.take(8)?.try_into().expect("8"))),
            t => return Err(HeaderError::Malformed("GGUF", format!("unknown value type {t}"))),
        })
    }
}

/// GGML tensor types by id, with (block size, bytes per block), for the declared size.
fn ggml_type(t: u32) -> Option<(&'static str, u64, u64)> {
    Some(match t {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        30 => ("BF16", 1, 2),
        _ => return None,
    })
}

fn gguf(bytes: &[u8]) -> Result<Header, HeaderError> {
    let mut c = Cursor { bytes, at: 4 };
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(HeaderError::Malformed(
            "GGUF",
            format!("version {version} is not 2 or 3"),
        ));
    }
    let tensors = c.count("tensors")?;
    let kvs = c.count("metadata keys")?;
    let mut meta = Map::new();
    for _ in 0..kvs {
        let key = c.string()?;
        let t = c.u32()?;
        let v = c.value(t)?;
        if !v.is_null() {
            meta.insert(key, v);
        }
    }
    let alignment = meta
        .get("general.alignment")
        .and_then(Value::as_u64)
        .unwrap_or(32)
        .max(1);
    let (mut parameters, mut data_end) = (0u64, 0u64);
    let mut types: Vec<(String, u64)> = Vec::new();
    for _ in 0..tensors {
        c.string()?;
        let dims = c.u32()?;
        if dims > 8 {
            return Err(HeaderError::Malformed("GGUF", format!("a tensor of {dims} dimensions")));
        }
        let mut n: u64 = 1;
        for _ in 0..dims {
            n = n.saturating_mul(c.u64()?);
        }
        let t = c.u32()?;
        let offset = c.u64()?;
        let (name, block, block_bytes) =
            ggml_type(t).ok_or_else(|| HeaderError::Malformed("GGUF", format!("unknown tensor type {t}")))?;
        parameters = parameters.saturating_add(n);
        data_end = data_end.max(offset.saturating_add(n.div_ceil(block).saturating_mul(block_bytes)));
        match types.iter_mut().find(|(k, _)| k == name) {
            Some((_, count)) => *count += n,
            None => types.push((name.to_string(), n)),
        }
    }
    types.sort_by_key(|t| std::cmp::Reverse(t.1));
    let data_start = (c.at as u64).div_ceil(alignment) * alignment;
    let architecture = meta
        .get("general.architecture")
        .and_then(Value::as_str)
        .map(String::from);
    let context_length = architecture
        .as_deref()
        .and_then(|a| meta.get(&format!("{a}.context_length")))
        .and_then(Value::as_u64);
    Ok(Header {
        format: Format::Gguf,
        parameters,
        architecture,
        context_length,
        tensor_types: types,
        declared_size: Some(data_start + data_end),
    })
}

fn safetensors(bytes: &[u8], file_size: u64) -> Result<Header, HeaderError> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_SAFETENSORS_HEADER || n.saturating_add(8) > file_size {
        return Err(HeaderError::Malformed("safetensors", format!("a header of {n} bytes")));
    }
    let json = bytes
        .get(8..8 + n as usize)
        .ok_or(HeaderError::Truncated("safetensors"))?;
    let header: Map<String, Value> =
        serde_json::from_slice(json).map_err(|e| HeaderError::Malformed("safetensors", e.to_string()))?;
    let (mut parameters, mut data_end) = (0u64, 0u64);
    let mut types: Vec<(String, u64)> = Vec::new();
    for (name, t) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = || HeaderError::Malformed("safetensors", format!("tensor {name:?} lacks dtype, shape or offsets"));
        let dtype = t.get("dtype").and_then(Value::as_str).ok_or_else(bad)?;
        let shape = t.get("shape").and_then(Value::as_array).ok_or_else(bad)?;
        let offsets = t.get("data_offsets").and_then(Value::as_array).ok_or_else(bad)?;
        let count = shape
            .iter()
            .try_fold(1u64, |acc, d| d.as_u64().map(|d| acc.saturating_mul(d)))
            .ok_or_else(bad)?;
        let end = offsets.get(1).and_then(Value::as_u64).ok_or_else(bad)?;
        parameters = parameters.saturating_add(count);
        data_end = data_end.max(end);
        match types.iter_mut().find(|(k, _)| k == dtype) {
            Some((_, c)) => *c += count,
            None => types.push((dtype.to_string(), count)),
        }
    }
    types.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(Header {
        format: Format::Safetensors,
        parameters,
        architecture: None,
        context_length: None,
        tensor_types: types,
        declared_size: Some(8 + n + data_end),
    })
}

/// Adds what a Hugging Face `config.json` says (architecture, context) to a safetensors header.
pub fn with_config(mut h: Header, config: &Value) -> Header {
    if h.architecture.is_none() {
        h.architecture = config.get("model_type").and_then(Value::as_str).map(String::from);
    }
    if h.context_length.is_none() {
        h.context_length = config.get("max_position_embeddings").and_then(Value::as_u64);
    }
    h
}

/// The seed's `metadata` object: parameter count and format from the header, the tasks the
/// model type serves, and hardware requirements computed from the weights' size.
pub fn metadata(h: &Header, model_type: &str, weight_bytes: u64) -> Value {
    let tasks: &[&str] = match model_type {
        "embedding" => &["feature-extraction", "sentence-similarity"],
        "llm" => &["text-generation", "dialogue"],
        _ => &[],
    };
    // Weights, plus a fifth for activations and a modest KV cache; a CPU core per 2 GB of
    // weights keeps a token's matrix products from waiting on one core.
    let memory = weight_bytes + weight_bytes / 5;
    let gb = |b: u64| format!("{:.1}GB", (b as f64 / 1e9).max(0.1));
    json!({
        "parameters_count": h.parameters,
        "model_format": h.format.as_str(),
        "architecture": h.architecture,
        "context_length": h.context_length,
        "tensor_types": h.tensor_types.iter().map(|(t, n)| json!({"type": t, "parameters": n})).collect::<Vec<_>>(),
        "supported_tasks": tasks,
        "hardware_requirements": {
            "min_memory_bytes": memory,
            "min_gpu_memory": gb(memory),
            "recommended_gpu": if memory > 40_000_000_000 { "A100 80GB, H100" } else if memory > 12_000_000_000 { "A100, L40S" } else { "any CUDA GPU, or CPU" },
            "cpu_cores": (weight_bytes / 2_000_000_000 + 2).min(64),
            "ram": gb(memory + memory / 2),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf_string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// A GGUF v3 file with one string key, one array key, and two tensors.
    fn tiny_gguf() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        gguf_string(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        gguf_string(&mut b, "llama");
        gguf_string(&mut b, "llama.context_length");
        b.extend(4u32.to_le_bytes());
        b.extend(2048u32.to_le_bytes());
        gguf_string(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        gguf_string(&mut b, "a");
        gguf_string(&mut b, "b");
        for (name, dims, t, offset) in [("w", [64u64, 4], 8u32, 0u64), ("n", [64, 1], 0, 288)] {
            gguf_string(&mut b, name);
            b.extend(2u32.to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_gguf_header_gives_parameters_architecture_context_and_size() {
        let b = tiny_gguf();
        let h = read(&b, b.len() as u64).unwrap();
        assert_eq!(h.format, Format::Gguf);
        assert_eq!(h.parameters, 64 * 4 + 64);
        assert_eq!(h.architecture.as_deref(), Some("llama"));
        assert_eq!(h.context_length, Some(2048));
        assert_eq!(h.tensor_types, [("Q8_0".to_string(), 256), ("F32".to_string(), 64)]);
        let data_start = (b.len() as u64).div_ceil(32) * 32;
        assert_eq!(h.declared_size, Some(data_start + 288 + 256));
    }

    #[test]
    fn a_gguf_header_cut_anywhere_is_an_error_never_a_panic() {
        let b = tiny_gguf();
        for n in 4..b.len() {
            assert!(read(&b[..n], n as u64).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn hostile_counts_are_refused_before_any_allocation() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        assert!(matches!(read(&b, 24), Err(HeaderError::Malformed(..))));
    }

    #[test]
    fn a_safetensors_header_gives_parameters_and_dtypes() {
        let json = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]}}"#;
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend(json);
        b.extend([0u8; 28]);
        let h = read(&b, b.len() as u64).unwrap();
        assert_eq!(h.parameters, 10);
        assert_eq!(h.declared_size, Some(b.len() as u64));
        let h = with_config(h, &json!({"model_type": "llama", "max_position_embeddings": 8192}));
        assert_eq!(h.architecture.as_deref(), Some("llama"));
        assert_eq!(h.context_length, Some(8192));
    }

    #[test]
    fn other_files_are_not_models() {
        assert_eq!(read(b"PK\x03\x04 a zip", 12), Err(HeaderError::UnknownFormat));
        let mut liar = (1u64 << 40).to_le_bytes().to_vec();
        liar.extend(b"{}");
        assert!(read(&liar, 10).is_err());
    }
}
