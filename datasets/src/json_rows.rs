//! JSON: one array of objects. A small scanner finds where each element begins and ends (depth
//! and strings only), so that elements are parsed one at a time and every error names the line
//! its element starts on; the whole file is never held at once.

use std::io::Read;

use crate::{Item, RowError, MAX_RECORD};

#[derive(Clone, Copy, PartialEq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// Inside the array, before an element (or the closing `]`).
    Before,
    /// Inside an element.
    Element,
    /// Inside an element, after it was found too large: skipped to its end.
    Skipping,
    /// After an element, before `,` or `]`.
    After,
    /// After the closing `]`.
    End,
}

struct Scanner<'a> {
    state: State,
    line: u64,
    start_line: u64,
    depth: u32,
    in_string: bool,
    escaped: bool,
    element: Vec<u8>,
    /// Elements seen, to tell `[1,]` from `[]`.
    seen_comma: bool,
    each: &'a mut dyn FnMut(Item) -> bool,
}

/// Whether to go on reading.
enum Flow {
    Go,
    Stop,
}

pub fn read<R: Read>(mut input: R, each: &mut dyn FnMut(Item) -> bool) -> std::io::Result<()> {
    let mut s = Scanner {
        state: State::Start,
        line: 1,
        start_line: 1,
        depth: 0,
        in_string: false,
        escaped: false,
        element: Vec::new(),
        seen_comma: false,
        each,
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut first = true;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            s.end();
            return Ok(());
        }
        let mut bytes = &buf[..n];
        if std::mem::take(&mut first) {
            bytes = crate::skip_bom(bytes);
        }
        if let Flow::Stop = s.feed(bytes) {
            return Ok(());
        }
    }
}

impl Scanner<'_> {
    fn fatal(&mut self, line: u64, message: impl Into<String>) -> Flow {
        (self.each)(Item::Error(RowError {
            line,
            message: message.into(),
        }));
        Flow::Stop
    }

    fn feed(&mut self, bytes: &[u8]) -> Flow {
        let mut from = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(self.state, State::Element | State::Skipping) {
                if self.scan(b) {
                    continue;
                }
                // The element ended just before `b`.
                self.take(&bytes[from..i]);
                if let Flow::Stop = self.emit() {
                    return Flow::Stop;
                }
            }
            if b == b'\n' {
                self.line += 1;
            }
            if let Flow::Stop = self.between(b) {
                return Flow::Stop;
            }
            if self.state == State::Element {
                from = i;
                self.scan(b);
            }
        }
        if matches!(self.state, State::Element | State::Skipping) {
            self.take(&bytes[from..]);
        }
        Flow::Go
    }

    /// Handles a byte outside any element.
    fn between(&mut self, b: u8) -> Flow {
        if b.is_ascii_whitespace() {
            return Flow::Go;
        }
        match (self.state, b) {
            (State::Start, b'[') => self.state = State::Before,
            (State::Start, _) => {
                return self.fatal(self.line, "a JSON dataset must be an array of objects: [{...}, ...]")
            }
            (State::Before, b']') if !self.seen_comma => self.state = State::End,
            (State::Before, b']') => return self.fatal(self.line, "a comma before the closing ]"),
            (State::Before, _) => {
                self.state = State::Element;
                self.start_line = self.line;
                self.element.clear();
            }
            (State::After, b',') => {
                self.state = State::Before;
                self.seen_comma = true;
            }
            (State::After, b']') => self.state = State::End,
            (State::After, _) => return self.fatal(self.line, "expected , or ] after an element"),
            (State::End, _) => return self.fatal(self.line, "data after the array's closing ]"),
            (State::Element | State::Skipping, _) => unreachable!("elements are scanned"),
        }
        Flow::Go
    }

    /// Scans one byte of an element; `false` when `b` is the first byte past it.
    fn scan(&mut self, b: u8) -> bool {
        if self.in_string {
            match (self.escaped, b) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => self.depth -= 1,
                b',' | b']' if self.depth == 0 => return false,
                _ => {}
            }
        }
        if b == b'\n' {
            self.line += 1;
        }
        true
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.state == State::Skipping {
            return;
        }
        if self.element.len() + bytes.len() > MAX_RECORD {
            self.state = State::Skipping;
            self.element = Vec::new();
        } else {
            self.element.extend_from_slice(bytes);
        }
    }

    fn emit(&mut self) -> Flow {
        let line = self.start_line;
        let item = if self.state == State::Skipping {
            Item::Error(RowError {
                line,
                message: format!("the record is longer than {MAX_RECORD} bytes"),
            })
        } else {
            match crate::object(self.element.trim_ascii_end()) {
                Ok(map) => Item::Row(line, map),
                Err(message) => Item::Error(RowError { line, message }),
            }
        };
        self.state = State::After;
        self.element.clear();
        match (self.each)(item) {
            true => Flow::Go,
            false => Flow::Stop,
        }
    }

    fn end(&mut self) {
        match self.state {
            State::End => {}
            State::Start => {
                self.fatal(self.line, "the file is empty: a JSON dataset is an array of objects");
            }
            _ => {
                self.fatal(self.start_line, "the file ends before the array closes (truncated?)");
            }
        }
    }
}
