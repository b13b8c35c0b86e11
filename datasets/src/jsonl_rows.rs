//! JSONL: one JSON object per line. A blank line is an error (it is nobody's record, and tools
//! disagree on skipping it); a last line cut short is reported as truncated.

use std::io::{BufRead, BufReader, Read};

use crate::{Item, RowError, MAX_RECORD};

pub fn read<R: Read>(input: R, each: &mut dyn FnMut(Item) -> bool) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut buf = Vec::with_capacity(4096);
    let mut line = 0u64;
    loop {
        buf.clear();
        line += 1;
        let too_long = read_line(&mut reader, &mut buf)?;
        if buf.is_empty() && !too_long {
            return Ok(());
        }
        let item = if too_long {
            Item::Error(RowError {
                line,
                message: format!("the line is longer than {MAX_RECORD} bytes"),
            })
        } else {
            record(line, &mut buf)
        };
        if !each(item) {
            return Ok(());
        }
    }
}

fn record(line: u64, buf: &mut Vec<u8>) -> Item {
    let complete = buf.last() == Some(&b'\n');
    if complete {
        buf.pop();
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let bytes = if line == 1 { crate::skip_bom(buf) } else { &buf[..] };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Item::Error(RowError {
            line,
            message: "blank line: every line must hold one JSON object".into(),
        });
    }
    match crate::object(bytes) {
        Ok(map) => Item::Row(line, map),
        Err(message) if !complete && message.contains("truncated") => Item::Error(RowError {
            line,
            message: "the last line is cut short: the file ends mid-record".into(),
        }),
        Err(message) => Item::Error(RowError { line, message }),
    }
}

/// Reads one line, newline included, into `buf`. A line past [`MAX_RECORD`] is skipped to its
/// end and reported with `true`, so that memory stays bounded.
fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut too_long = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(too_long);
        }
        let (take, done) = match memchr(available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if !too_long && buf.len() + take <= MAX_RECORD + 2 {
            buf.extend_from_slice(&available[..take]);
        } else {
            too_long = true;
            buf.clear();
        }
        reader.consume(take);
        if done {
            return Ok(too_long);
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}
