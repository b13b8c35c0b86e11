//! CSV with a header row: each row becomes a record of strings named by the header. Quoted
//! fields may hold commas and newlines; a leading byte-order mark is skipped; a row whose field
//! count differs from the header's is an error on its line.

use std::io::Read;

use serde_json::Value;

use crate::{Item, Record, RowError, MAX_RECORD};

pub fn read<R: Read>(input: R, each: &mut dyn FnMut(Item) -> bool) -> std::io::Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(Bom::new(input));
    let mut record = csv::ByteRecord::new();
    let mut header: Option<Vec<String>> = None;
    loop {
        let more = match reader.read_byte_record(&mut record) {
            Ok(more) => more,
            Err(e) => return failed(e, each),
        };
        if !more {
            if header.is_none() {
                each(Item::Error(RowError {
                    line: 1,
                    message: "the file is empty: a CSV dataset needs a header row".into(),
                }));
            }
            return Ok(());
        }
        let line = record.position().map_or(0, |p| p.line());
        let Some(names) = &header else {
            match names(&record) {
                Ok(names) => {
                    each(Item::Fields(names.clone()));
                    header = Some(names);
                }
                Err(message) => {
                    each(Item::Error(RowError { line, message }));
                    return Ok(());
                }
            }
            continue;
        };
        if !each(row(line, names, &record)) {
            return Ok(());
        }
    }
}

/// The header's field names: UTF-8, non-empty, distinct.
fn names(record: &csv::ByteRecord) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(record.len());
    for (i, field) in record.iter().enumerate() {
        let name = std::str::from_utf8(field)
            .map_err(|_| format!("header column {} is not valid UTF-8", i + 1))?
            .trim();
        if name.is_empty() {
            return Err(format!("header column {} has no name", i + 1));
        }
        if out.iter().any(|n| n == name) {
            return Err(format!("the header names {name:?} twice"));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

fn row(line: u64, names: &[String], record: &csv::ByteRecord) -> Item {
    let error = |message: String| Item::Error(RowError { line, message });
    if record.len() != names.len() {
        // A blank line reads as one empty field.
        if record.len() == 1 && record[0].is_empty() {
            return error("blank line: every row needs its fields".into());
        }
        return error(format!(
            "the row has {} fields, the header has {}",
            record.len(),
            names.len()
        ));
    }
    if record.as_slice().len() > MAX_RECORD {
        return error(format!("the row is longer than {MAX_RECORD} bytes"));
    }
    let mut map = Record::new();
    for (name, field) in names.iter().zip(record.iter()) {
        match std::str::from_utf8(field) {
            Ok(s) => map.insert(name.clone(), Value::String(s.to_string())),
            Err(_) => return error(format!("field {name:?} is not valid UTF-8")),
        };
    }
    Item::Row(line, map)
}

/// A read error from the csv reader: the underlying reader's failure is passed on; anything
/// else ends the file with an error on its line.
fn failed(e: csv::Error, each: &mut dyn FnMut(Item) -> bool) -> std::io::Result<()> {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Err(io),
        other => {
            each(Item::Error(RowError {
                line,
                message: format!("unreadable CSV: {other:?}"),
            }));
            Ok(())
        }
    }
}

/// A reader that drops a leading UTF-8 byte-order mark.
struct Bom<R> {
    inner: R,
    head: Vec<u8>,
    checked: bool,
}

impl<R: Read> Bom<R> {
    fn new(inner: R) -> Self {
        Bom {
            inner,
            head: Vec::new(),
            checked: false,
        }
    }
}

impl<R: Read> Read for Bom<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.checked {
            self.checked = true;
            let mut head = [0u8; 3];
            let mut n = 0;
            while n < 3 {
                match self.inner.read(&mut head[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            if head[..n] != *b"\xEF\xBB\xBF" {
                self.head = head[..n].to_vec();
            }
        }
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head.drain(..n);
            return Ok(n);
        }
        self.inner.read(buf)
    }
}
