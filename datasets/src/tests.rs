use super::*;

fn summary(format: Format, bytes: &[u8]) -> Summary {
    validate(format, bytes, &mut |_| {}).unwrap()
}

/// Reads `bytes` in pieces of `piece` bytes, to cross every boundary.
struct Pieces<'a>(&'a [u8], usize);

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn lines(s: &Summary) -> Vec<u64> {
    s.errors.iter().map(|e| e.line).collect()
}

#[test]
fn jsonl_records_are_counted_with_fields_in_first_seen_order() {
    let text = b"{\"instruction\":\"a\",\"response\":\"b\"}\n{\"instruction\":\"c\",\"extra\":1}\n";
    let s = summary(Format::Jsonl, text);
    assert!(s.is_valid(), "{s:?}");
    assert_eq!(s.samples, 2);
    assert_eq!(s.fields, ["instruction", "response", "extra"]);
    assert_eq!(s.preview.len(), 2);
    assert_eq!(s.bytes, text.len() as u64);
    // sha256 of the bytes, as `sha256sum` prints it.
    assert_eq!(s.sha256.len(), 64);
}

#[test]
fn jsonl_blank_lines_non_objects_and_bad_json_are_errors_on_their_lines() {
    let s = summary(Format::Jsonl, b"{\"a\":1}\n\n[1]\n{\"a\":\n{\"a\":2}\r\n");
    assert_eq!(s.samples, 2);
    assert_eq!(lines(&s), [2, 3, 4]);
    assert!(s.errors[0].message.contains("blank line"));
    assert!(s.errors[1].message.contains("JSON object"));
    assert!(!s.is_valid());
}

#[test]
fn jsonl_last_line_cut_short_is_reported_as_truncated() {
    let s = summary(Format::Jsonl, b"{\"a\":1}\n{\"a\":\"tru");
    assert_eq!(lines(&s), [2]);
    assert!(s.errors[0].message.contains("cut short"), "{:?}", s.errors);
    // A last line without its newline is fine when it is whole.
    assert!(summary(Format::Jsonl, b"{\"a\":1}\n{\"a\":2}").is_valid());
}

#[test]
fn jsonl_invalid_utf8_is_an_error_on_its_line() {
    let s = summary(Format::Jsonl, b"{\"a\":1}\n{\"a\":\"\xff\xfe\"}\n");
    assert_eq!(lines(&s), [2]);
    assert!(s.errors[0].message.contains("UTF-8"));
}

#[test]
fn an_empty_file_is_not_a_dataset() {
    for format in [Format::Jsonl, Format::Json, Format::Csv] {
        let s = summary(format, b"");
        assert!(!s.is_valid(), "{format:?}");
        assert!(s.problem().is_some());
    }
    assert!(!summary(Format::Json, b"[]").is_valid());
    assert!(!summary(Format::Csv, b"a,b\n").is_valid());
}

#[test]
fn json_array_elements_are_read_one_by_one_with_their_starting_lines() {
    let text = b"[\n  {\"a\": 1,\n   \"b\": \"x]\\\"\"},\n  {\"a\": [1, {\"c\": 2}]},\n  3,\n  {\"a\": 4}\n]\n";
    for piece in [1, 2, 7, 1 << 20] {
        let s = validate(Format::Json, Pieces(text, piece), &mut |_| {}).unwrap();
        assert_eq!(s.samples, 3, "pieces of {piece}");
        assert_eq!(lines(&s), [5], "pieces of {piece}");
        assert_eq!(s.fields, ["a", "b"]);
        assert_eq!(s.preview[0]["b"], "x]\"");
    }
}

#[test]
fn json_that_is_not_an_array_or_is_cut_short_ends_with_an_error() {
    assert_eq!(lines(&summary(Format::Json, b"{\"a\":1}")), [1]);
    let cut = summary(Format::Json, b"[{\"a\":1},\n{\"a\":2");
    assert_eq!(cut.samples, 1);
    assert_eq!(lines(&cut), [2]);
    assert!(cut.errors[0].message.contains("truncated"));
    assert!(!summary(Format::Json, b"[{\"a\":1}] x").is_valid());
    assert!(!summary(Format::Json, b"[{\"a\":1},]").is_valid());
    assert!(
        summary(Format::Json, b"\xEF\xBB\xBF[{\"a\":1}]").is_valid(),
        "a BOM is skipped"
    );
}

#[test]
fn csv_rows_are_records_named_by_the_header() {
    let text = b"\xEF\xBB\xBFinstruction,response\n\"say \"\"hi\"\"\",\"line one\nline two\"\nb,c\n";
    for piece in [1, 3, 1 << 20] {
        let s = validate(Format::Csv, Pieces(text, piece), &mut |_| {}).unwrap();
        assert!(s.is_valid(), "{s:?}");
        assert_eq!(s.samples, 2);
        assert_eq!(s.fields, ["instruction", "response"], "the BOM is not part of the name");
        assert_eq!(s.preview[0]["instruction"], "say \"hi\"");
        assert_eq!(s.preview[0]["response"], "line one\nline two");
    }
}

#[test]
fn csv_ragged_rows_and_blank_lines_are_errors_on_their_lines() {
    let s = summary(Format::Csv, b"a,b\n1,2\n1,2,3\n\"q\nq\",2\n4\n");
    assert_eq!(s.samples, 2);
    assert_eq!(lines(&s), [3, 6]);
    assert!(s.errors[0].message.contains("3 fields"));
    let dup = summary(Format::Csv, b"a,a\n1,2\n");
    assert!(dup.errors[0].message.contains("twice"));
    let bad = summary(Format::Csv, b"a,b\n1,\xff\n");
    assert!(bad.errors[0].message.contains("UTF-8"));
}

#[test]
fn errors_past_the_first_hundred_are_counted_not_kept() {
    let text = "x\n".repeat(250);
    let s = summary(Format::Jsonl, text.as_bytes());
    assert_eq!(s.error_count, 250);
    assert_eq!(s.errors.len(), MAX_ERRORS);
}

#[test]
fn a_record_past_the_limit_is_an_error_not_a_memory_spike() {
    let mut text = b"{\"a\":\"".to_vec();
    text.resize(MAX_RECORD + 100, b'x');
    text.extend_from_slice(b"\"}\n{\"a\":1}\n");
    let s = summary(Format::Jsonl, &text);
    assert_eq!(s.samples, 1);
    assert_eq!(lines(&s), [1]);
    let mut json = b"[".to_vec();
    json.extend_from_slice(&text[..text.len() - 8]);
    json.extend_from_slice(b",{\"a\":1}]");
    let s = summary(Format::Json, &json);
    assert_eq!((s.samples, lines(&s)), (1, vec![1]));
}

#[test]
fn progress_reaches_the_file_size() {
    let text = "{\"a\":1}\n".repeat(10_000);
    let mut last = 0;
    let s = validate(Format::Jsonl, text.as_bytes(), &mut |n| last = n).unwrap();
    assert_eq!(last, text.len() as u64);
    assert_eq!(s.samples, 10_000);
}
