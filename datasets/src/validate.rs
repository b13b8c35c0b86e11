//! A file summed up as it streams past: what the registry records about a dataset.

use std::collections::HashSet;
use std::io::Read;

use crate::{rows, Format, Item, Record, RowError, Tally};

/// Errors kept per file (all are counted).
pub const MAX_ERRORS: usize = 100;
/// Field names kept per file.
pub const MAX_FIELDS: usize = 1000;
/// Records kept for the preview.
pub const PREVIEW_ROWS: usize = 5;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub samples: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Every field name seen, in the order first seen (at most [`MAX_FIELDS`]): a CSV
    /// header's order; within a JSON record, by name.
    pub fields: Vec<String>,
    /// The first [`MAX_ERRORS`] errors.
    pub errors: Vec<RowError>,
    pub error_count: u64,
    pub preview: Vec<Record>,
}

impl Summary {
    /// Whether the file is a dataset: readable throughout, with at least one record.
    pub fn is_valid(&self) -> bool {
        self.error_count == 0 && self.samples > 0
    }

    /// Why it is not, in one line.
    pub fn problem(&self) -> Option<String> {
        if self.error_count > 0 {
            let first = &self.errors[0];
            return Some(format!("{} invalid record(s); the first: {first}", self.error_count));
        }
        (self.samples == 0).then(|| "the file holds no records".to_string())
    }
}

/// Reads all of `input` as `format` and sums it up. `progress` is told the bytes read so far
/// from time to time; an `Err` is the reader's own failure.
pub fn validate<R: Read>(format: Format, input: R, progress: &mut dyn FnMut(u64)) -> std::io::Result<Summary> {
    let mut tally = Tally::new(input);
    let mut s = Summary::default();
    let mut known: HashSet<String> = HashSet::new();
    let mut since_report = 0u64;
    {
        let reader = Progress {
            inner: &mut tally,
            read: 0,
            each: &mut |n| {
                since_report += 1;
                if since_report.is_multiple_of(16) {
                    progress(n);
                }
            },
        };
        rows(format, reader, &mut |item| {
            let mut learn = |name: &String| {
                if known.len() < MAX_FIELDS && !known.contains(name) {
                    known.insert(name.clone());
                    s.fields.push(name.clone());
                }
            };
            match item {
                Item::Fields(names) => names.iter().for_each(learn),
                Item::Row(_, record) => {
                    record.keys().for_each(&mut learn);
                    s.samples += 1;
                    if s.preview.len() < PREVIEW_ROWS {
                        s.preview.push(record);
                    }
                }
                Item::Error(e) => {
                    s.error_count += 1;
                    if s.errors.len() < MAX_ERRORS {
                        s.errors.push(e);
                    }
                }
            }
            true
        })?;
    }
    (s.bytes, s.sha256) = tally.finish()?;
    progress(s.bytes);
    Ok(s)
}

/// Passes reads through, reporting the running total.
struct Progress<'a, R> {
    inner: R,
    read: u64,
    each: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.each)(self.read);
        Ok(n)
    }
}
