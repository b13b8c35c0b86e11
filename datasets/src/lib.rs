//! Dataset files: JSON (an array of objects), JSONL (one object a line) and CSV (with a header),
//! read as a stream of records, each with the line it starts on, so that memory stays flat
//! whatever the file's size and every error names its line.
//!
//! - [`rows`] walks a file's records and the errors between them;
//! - [`validate`] sums a file up: samples, fields, the first errors, a preview, size and sha256;
//! - [`Template`] and [`Splitter`] turn records into prompts and seeded splits.

mod csv_rows;
mod json_rows;
mod jsonl_rows;
mod process;
pub mod quality;
mod tally;
mod validate;

use std::io::Read;

use serde_json::{Map, Value};

pub use process::{split_sizes, Splitter, Template};
pub use tally::Tally;
pub use validate::{validate, Summary, MAX_ERRORS, MAX_FIELDS, PREVIEW_ROWS};

/// The most one record may take; a longer one is an error, so one bad line cannot exhaust memory.
pub const MAX_RECORD: usize = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Jsonl,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

/// One record: its fields by name.
pub type Record = Map<String, Value>;

/// Why a record (or the file from some line on) could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line the record starts on.
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What a file yields, in order: a record and the line it starts on, or an error.
pub enum Item {
    /// The field names, in the file's order, where the format has them up front (a CSV header).
    Fields(Vec<String>),
    Row(u64, Record),
    Error(RowError),
}

/// Reads `input` as `format`, calling `each` for every record and every error. Reading stops
/// after an error the file cannot be read past (an unclosed JSON array, say), or when `each`
/// answers `false`. An `Err` is the reader's own failure (the bytes could not be read).
pub fn rows<R: Read>(format: Format, input: R, each: &mut dyn FnMut(Item) -> bool) -> std::io::Result<()> {
    match format {
        Format::Jsonl => jsonl_rows::read(input, each),
        Format::Json => json_rows::read(input, each),
        Format::Csv => csv_rows::read(input, each),
    }
}

/// Skips a UTF-8 byte-order mark at the start of a file (Excel writes one into CSV files).
fn skip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// One JSON record from its bytes: an object, in UTF-8.
fn object(bytes: &[u8]) -> Result<Record, String> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(format!("not valid UTF-8 (at byte {} of the record)", e.valid_up_to()));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("a record must be a JSON object, not {}", kind(&other))),
        Err(e) if e.is_eof() => Err("the record ends before its JSON does (truncated?)".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
