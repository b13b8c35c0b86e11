//! A fast path for the one hot input: `data` of `run_sgt_model`, a JSON array of rows of
//! numbers. Going through serde cost about 3 ms of CPU per 1024 x 64 request (one visitor call
//! and one `Vec` per row); this reads the raw JSON text straight into one row-major `Vec<f32>`,
//! checking row widths on the way. Numbers are read by [`super::number`] (correctly rounded).
//! On CPUs with AVX2, [`super::rows_avx2`] reads well-formed rows of long numbers first (1.4x
//! faster on 17-digit numbers); this reader is the reference it is tested against, and the one that
//! words every error.

use super::number::parse_f32;

/// What is wrong with a `data` array.
#[derive(Debug, PartialEq)]
pub enum RowsError {
    /// Not an array of arrays of numbers.
    Malformed(String),
    /// Well-formed, but a row has the wrong length or a number is out of range.
    Shape(String),
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

/// Where the JSON whitespace at `s[i..]` ends.
#[inline(always)]
pub(super) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\n' | b'\r' | b'\t') {
        i += 1;
    }
    i
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        self.i = skip_ws(self.s, self.i);
    }

    /// The next non-space byte, consumed.
    fn next(&mut self) -> Option<u8> {
        self.skip_ws();
        let b = self.s.get(self.i).copied();
        self.i += 1;
        b
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn malformed(&self, what: &str) -> RowsError {
        RowsError::Malformed(format!(
            "data must be an array of arrays of numbers ({what} at byte {})",
            self.i
        ))
    }

    fn number(&mut self) -> Result<f32, RowsError> {
        self.skip_ws();
        let (v, end) = parse_f32(self.s, self.i).ok_or_else(|| self.malformed("expected a number"))?;
        self.i = end;
        Ok(v)
    }
}

/// Parsed rows: row-major values, the number of rows, and their common width.
#[derive(Debug, PartialEq)]
pub struct Rows {
    pub values: Vec<f32>,
    pub rows: usize,
    pub width: usize,
}

/// Parses a whole `[[n, ...], ...]` text whose rows all have `width` numbers.
#[cfg(test)]
fn parse_rows(json: &[u8], width: usize, max_values: usize) -> Result<(Vec<f32>, usize), RowsError> {
    let (rows, used) = parse_rows_prefix(json, Some(width), max_values)?;
    let mut c = Cursor { s: json, i: used };
    if c.peek().is_some() {
        return Err(c.malformed("trailing characters"));
    }
    Ok((rows.values, rows.rows))
}

/// Where a piece of a rows array starts: at the array's `[`, or right after one of its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum At {
    Open,
    AfterRow,
}

/// How a piece of a rows array ended.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// Right after a row; the array goes on in the next piece.
    Continue,
    /// The array ended, its text at this many bytes into the piece.
    Ended(usize),
}

/// The rows read so far from the pieces of one array.
#[derive(Debug)]
pub struct RowsSoFar {
    pub values: Vec<f32>,
    pub rows: usize,
    /// Every row's width: given, or the first row's.
    pub width: Option<usize>,
}

impl RowsSoFar {
    /// Room for the numbers a text of `text_len` bytes can hold, up to `max_values`.
    pub fn new(width: Option<usize>, text_len: usize, max_values: usize) -> Self {
        RowsSoFar {
            values: Vec::with_capacity((text_len / 8).min(max_values)),
            rows: 0,
            width,
        }
    }

    pub fn into_rows(self) -> Rows {
        Rows {
            values: self.values,
            rows: self.rows,
            width: self.width.unwrap_or(0),
        }
    }
}

/// Parses one rows array at the start of `json` and says how many bytes it used. With
/// `width: None` every row must be as wide as the first.
pub fn parse_rows_prefix(json: &[u8], width: Option<usize>, max_values: usize) -> Result<(Rows, usize), RowsError> {
    read_whole(json, width, max_values, read_piece)
}

/// A reader of one piece of a rows array: [`read_piece`] or [`read_portably`].
type PieceReader = fn(&[u8], At, &mut RowsSoFar, usize, bool) -> Result<Piece, RowsError>;

/// The rows of a whole array at the start of `json`, read by `read` as one piece.
fn read_whole(
    json: &[u8],
    width: Option<usize>,
    max_values: usize,
    read: PieceReader,
) -> Result<(Rows, usize), RowsError> {
    let mut acc = RowsSoFar::new(width, json.len(), max_values);
    match read(json, At::Open, &mut acc, max_values, true)? {
        Piece::Ended(used) => Ok((acc.into_rows(), used)),
        Piece::Continue => unreachable!("a whole piece never ends after a row"),
    }
}

/// Reads the rows in `json`, one piece of an array that starts `at`, into `acc`. A piece that is
/// not `whole` may end right after any row ([`Piece::Continue`]); a whole one must hold the
/// array's end. Read piece by piece, an array gives what it gives read whole.
pub fn read_piece(
    json: &[u8],
    at: At,
    acc: &mut RowsSoFar,
    max_values: usize,
    whole: bool,
) -> Result<Piece, RowsError> {
    #[cfg(target_arch = "x86_64")]
    if numbers_are_long(json) {
        let (len, rows, width) = (acc.values.len(), acc.rows, acc.width);
        match super::rows_avx2::read_piece(json, at, acc, max_values) {
            Some(Piece::Continue) if whole => {}
            Some(piece) => return Ok(piece),
            None => {}
        }
        // The portable reader starts the piece again, and words what is wrong.
        acc.values.truncate(len);
        (acc.rows, acc.width) = (rows, width);
    }
    read_portably(json, at, acc, max_values, whole)
}

/// Whether the numbers at the start of `json` average 10 bytes or more. The AVX2 reader costs
/// the same for every number (10 ns on the benchmark machine); the bytewise one grows with the
/// digits (7 ns for 2-decimal numbers, 16 ns for 17 digits). They break even near 10 bytes.
fn numbers_are_long(json: &[u8]) -> bool {
    let head = &json[..json.len().min(1024)];
    let numbers = 1 + head.iter().filter(|b| **b == b',').count();
    head.len() >= 10 * numbers
}

/// [`parse_rows_prefix`] a byte at a time, on any CPU; the one that words errors. Public for
/// `--bench rows`, which measures it against the AVX2 reader.
pub fn parse_rows_portably(json: &[u8], width: Option<usize>, max_values: usize) -> Result<(Rows, usize), RowsError> {
    read_whole(json, width, max_values, read_portably)
}

/// [`read_piece`] a byte at a time.
fn read_portably(json: &[u8], at: At, acc: &mut RowsSoFar, max_values: usize, whole: bool) -> Result<Piece, RowsError> {
    let mut c = Cursor { s: json, i: 0 };
    let mut after_row = at == At::AfterRow;
    if !after_row {
        if c.next() != Some(b'[') {
            return Err(c.malformed("expected '['"));
        }
        if c.peek() == Some(b']') {
            c.i += 1;
            return Ok(Piece::Ended(c.i));
        }
    }
    let out = &mut acc.values;
    loop {
        if after_row {
            match c.next() {
                Some(b',') => {}
                Some(b']') => return Ok(Piece::Ended(c.i)),
                None if !whole => return Ok(Piece::Continue),
                _ => return Err(c.malformed("expected ',' or ']'")),
            }
        }
        after_row = true;
        if c.next() != Some(b'[') {
            return Err(c.malformed("expected a row"));
        }
        let start = out.len();
        if c.peek() == Some(b']') {
            c.i += 1;
        } else {
            loop {
                out.push(c.number()?);
                match c.next() {
                    Some(b',') => continue,
                    Some(b']') => break,
                    _ => return Err(c.malformed("expected ',' or ']'")),
                }
            }
        }
        close_row(out, start, acc.rows, &mut acc.width, max_values)?;
        acc.rows += 1;
    }
}

/// Checks row number `row`, the values from `start` on, once it has ended: as wide as the first
/// row (or `width`), finite, and within `max_values` in all. Both readers call it.
pub(super) fn close_row(
    out: &[f32],
    start: usize,
    row: usize,
    width: &mut Option<usize>,
    max_values: usize,
) -> Result<(), RowsError> {
    let n = out.len() - start;
    let w = *width.get_or_insert(n);
    if n != w {
        return Err(RowsError::Shape(format!("data row {row} has {n} values, expected {w}")));
    }
    // A fold, not `any`: without the early exit the check vectorises (1.6% of a run request's
    // CPU as `any`).
    if !out[start..].iter().fold(true, |finite, v| finite & v.is_finite()) {
        return Err(RowsError::Shape(format!("data row {row} holds a number out of range")));
    }
    if out.len() > max_values {
        return Err(RowsError::Shape(format!(
            "at most {} rows per request for this model",
            max_values / w.max(1)
        )));
    }
    Ok(())
}

/// Finds the top-level `"data": [...]` of a run request and parses it in the same pass. Returns
/// the rows and the body with that value replaced by `null`, for serde to read the small rest.
/// `None` when the body is not a plain object with a plain `"data"` key (then the caller takes
/// the general path, which reports errors precisely).
pub fn split_data(body: &[u8], max_values: usize) -> Option<Result<(Rows, Vec<u8>), RowsError>> {
    let start = data_value_start(body)?;
    Some(parse_rows_prefix(&body[start..], None, max_values).map(|(rows, used)| {
        let mut rest = Vec::with_capacity(body.len() - used + 4);
        rest.extend_from_slice(&body[..start]);
        rest.extend_from_slice(b"null");
        rest.extend_from_slice(&body[start + used..]);
        (rows, rest)
    }))
}

/// Where the value of the top-level `"data"` key of the object in `body` starts (past any
/// whitespace), when the keys before it are plain. A body cut short gives the same answer as
/// the whole body, `None`, or its own length (then the value has not begun within it).
pub fn data_value_start(body: &[u8]) -> Option<usize> {
    let mut c = Cursor { s: body, i: 0 };
    if c.next()? != b'{' {
        return None;
    }
    loop {
        if c.next()? != b'"' {
            return None;
        }
        let key_start = c.i;
        skip_string_body(&mut c)?;
        let is_data = &body[key_start..c.i - 1] == b"data";
        if c.next()? != b':' {
            return None;
        }
        if is_data {
            c.skip_ws();
            return Some(c.i);
        }
        skip_value(&mut c)?;
        match c.next()? {
            b',' => continue,
            _ => return None,
        }
    }
}

/// Skips the rest of a string whose opening quote was consumed.
fn skip_string_body(c: &mut Cursor<'_>) -> Option<()> {
    loop {
        match *c.s.get(c.i)? {
            b'\\' => c.i += 2,
            b'"' => {
                c.i += 1;
                return Some(());
            }
            _ => c.i += 1,
        }
    }
}

/// Skips one (small) JSON value without validating it; serde validates it afterwards.
fn skip_value(c: &mut Cursor<'_>) -> Option<()> {
    let mut depth = 0usize;
    loop {
        match c.next()? {
            b'"' => skip_string_body(c)?,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            _ => {
                while c
                    .s
                    .get(c.i)
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                {
                    c.i += 1;
                }
            }
        }
        if depth == 0 {
            return Some(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str, w: usize) -> (Vec<f32>, usize) {
        parse_rows(s.as_bytes(), w, 1 << 20).unwrap()
    }

    #[test]
    fn rows_parse_exactly_like_serde_would() {
        let text = "[[0.1, -2.5e-3, 3], [1E2,-0,  7.000000001]]";
        let serde: Vec<Vec<f32>> = serde_json::from_str(text).unwrap();
        let (flat, rows) = ok(text, 3);
        assert_eq!(rows, 2);
        assert_eq!(flat, serde.concat());
        assert_eq!(ok(" [ ] ", 3), (vec![], 0));
        assert_eq!(ok("[[]]", 0), (vec![], 1));
    }

    #[test]
    fn many_random_numbers_agree_with_serde_json_bit_for_bit() {
        let mut s = 12345u64;
        let mut rows = Vec::new();
        for _ in 0..200 {
            let row: Vec<f64> = (0..7)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 10f64.powi((s % 9) as i32 - 4)
                })
                .collect();
            rows.push(row);
        }
        let text = serde_json::to_string(&rows).unwrap();
        let serde: Vec<Vec<f32>> = serde_json::from_str(&text).unwrap();
        assert_eq!(ok(&text, 7).0, serde.concat());
    }

    #[test]
    fn the_data_field_is_found_parsed_and_nulled_wherever_it_is() {
        let body = br#"{"secret_id": "a\"data\":", "data": [[1, 2], [3, 4]], "n": {"x": [1, "]"]}, "app_name": "b"}"#;
        let (rows, rest) = split_data(body, 1 << 20).unwrap().unwrap();
        assert_eq!((rows.values, rows.rows, rows.width), (vec![1.0, 2.0, 3.0, 4.0], 2, 2));
        let rest: serde_json::Value = serde_json::from_slice(&rest).unwrap();
        assert_eq!(
            rest,
            serde_json::json!({"secret_id": "a\"data\":", "data": null, "n": {"x": [1, "]"]}, "app_name": "b"})
        );
        let last = br#"{"a": 1, "data": []}"#;
        let (rows, rest) = split_data(last, 1 << 20).unwrap().unwrap();
        assert_eq!((rows.rows, rest.as_slice()), (0, &br#"{"a": 1, "data": null}"#[..]));
        // Not a plain object with a data array: the caller falls back to the general path.
        assert!(split_data(b"[1]", 10).is_none());
        assert!(split_data(br#"{"a": 1}"#, 10).is_none());
        assert!(split_data(br#"{"a": 1"#, 10).is_none());
        assert!(matches!(
            split_data(br#"{"data": [1, 2]}"#, 10),
            Some(Err(RowsError::Malformed(_)))
        ));
        assert!(matches!(
            split_data(br#"{"data": [[1, 2], [3]]}"#, 10),
            Some(Err(RowsError::Shape(_)))
        ));
    }

    #[test]
    fn only_rows_of_long_numbers_are_counted_long() {
        let text = |n: &str| format!("[{}]", vec![format!("[{}]", vec![n; 64].join(",")); 20].join(","));
        assert!(numbers_are_long(text("-0.12345678901234567").as_bytes()));
        assert!(numbers_are_long(text("0.123456789").as_bytes()));
        assert!(!numbers_are_long(text("-0.25").as_bytes()));
        assert!(!numbers_are_long(text("0.1234567").as_bytes()));
        assert!(!numbers_are_long(b"[[1]]"));
    }

    #[test]
    fn wrong_shapes_are_shape_errors() {
        let shape = |s: &str, w| matches!(parse_rows(s.as_bytes(), w, 1 << 20), Err(RowsError::Shape(_)));
        assert!(shape("[[1,2],[3]]", 2));
        assert!(shape("[[1,2,3]]", 2));
        assert!(shape("[[1e39, 0]]", 2));
        assert!(
            matches!(parse_rows(b"[[1,2],[3,4],[5,6]]", 2, 4), Err(RowsError::Shape(m)) if m.contains("at most 2 rows"))
        );
    }

    #[test]
    fn anything_but_an_array_of_number_arrays_is_malformed() {
        for bad in [
            "",
            "{}",
            "[1,2]",
            "[[1,2]",
            "[[1,,2]]",
            "[[1,2],]",
            "[[\"1\",2]]",
            "[[null,2]]",
            "[[NaN,2]]",
            "[[inf,2]]",
            "[[+1,2]]",
            "[[1,2]] x",
            "[[1 2]]",
            "[[true,2]]",
            // Numbers that fast-float takes but JSON does not.
            "[[1.,2]]",
            "[[01,2]]",
            "[[1e,2]]",
        ] {
            assert!(
                matches!(parse_rows(bad.as_bytes(), 2, 1 << 20), Err(RowsError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
