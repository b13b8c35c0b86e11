//! Quality checks (seed 002 质量检查): what is wrong with a dataset's records, and what they
//! look like, read as a stream. For each record: is it readable, does it have what its type
//! needs (OpenAI's chat fine-tuning rules for `conversation`), is it a duplicate (exact, or
//! after folding case and whitespace), is it in more than one split; and the token lengths
//! and the label or role counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::Serialize;
use serde_json::Value;

use crate::{Item, Record, RowError, MAX_ERRORS};

/// Token-length histogram buckets: a sample falls in the first bucket whose bound it does not
/// pass; longer ones go in the last (`null` bound).
const BUCKETS: [u64; 10] = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];

/// Lines with a problem, the first [`MAX_ERRORS`] kept.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Findings {
    pub count: u64,
    pub lines: Vec<LineIssue>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LineIssue {
    /// The split the line is in, for a processed version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    pub line: u64,
    pub message: String,
}

impl Findings {
    fn add(&mut self, split: Option<&str>, line: u64, message: String) {
        self.count += 1;
        if self.lines.len() < MAX_ERRORS {
            self.lines.push(LineIssue {
                split: split.map(str::to_string),
                line,
                message,
            });
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bucket {
    /// The most tokens in this bucket; `null` for the last.
    pub up_to: Option<u64>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TokenLengths {
    pub model: String,
    pub context: u64,
    pub histogram: Vec<Bucket>,
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    /// Samples longer than the model's context.
    pub over_context: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub samples_checked: u64,
    /// Whether only the first records were read (`quick`).
    pub sampled: bool,
    /// Records that could not be read.
    pub invalid: Findings,
    /// Records missing what their dataset's type needs.
    pub missing_fields: Findings,
    pub exact_duplicates: Findings,
    /// Duplicates once case and whitespace are folded (exact ones not counted again).
    pub near_duplicates: Findings,
    /// Records found in more than one split (a processed version only).
    pub cross_split: Findings,
    pub token_lengths: Option<TokenLengths>,
    /// `label` values (classification) or message roles (conversation), with their counts.
    pub labels: BTreeMap<String, u64>,
    /// The share of samples with no finding, 0 to 100.
    pub score: f64,
}

/// Counts a text's tokens, and the model's context, when the caller named a model.
pub struct Tokens<'a> {
    pub model: String,
    pub context: u64,
    pub count: &'a mut dyn FnMut(&str) -> u64,
}

/// Checks records as they stream past; feed it each file's items, then [`Checker::report`].
pub struct Checker<'a> {
    kind: String,
    tokens: Option<Tokens<'a>>,
    report: Report,
    exact: HashMap<u64, (Option<String>, u64)>,
    near: HashMap<u64, u64>,
    /// Which splits each record's hash was seen in (a bit per split).
    splits_seen: HashMap<u64, u8>,
    lengths: Vec<u64>,
    /// Samples with at least one finding.
    flagged: HashSet<(u8, u64)>,
}

impl<'a> Checker<'a> {
    pub fn new(kind: &str, tokens: Option<Tokens<'a>>) -> Checker<'a> {
        Checker {
            kind: kind.into(),
            tokens,
            report: Report {
                samples_checked: 0,
                sampled: false,
                invalid: Findings::default(),
                missing_fields: Findings::default(),
                exact_duplicates: Findings::default(),
                near_duplicates: Findings::default(),
                cross_split: Findings::default(),
                token_lengths: None,
                labels: BTreeMap::new(),
                score: 100.0,
            },
            exact: HashMap::new(),
            near: HashMap::new(),
            splits_seen: HashMap::new(),
            lengths: Vec::new(),
            flagged: HashSet::new(),
        }
    }

    /// Takes one item of split `split` (index 0 to 7; `name` for the findings, `None` for a
    /// dataset that is one file).
    pub fn feed(&mut self, split: (u8, Option<&str>), item: Item) {
        let (index, name) = split;
        match item {
            Item::Fields(_) => {}
            Item::Error(RowError { line, message }) => {
                self.report.invalid.add(name, line, message);
                self.flagged.insert((index, line));
            }
            Item::Row(line, record) => self.record(index, name, line, &record),
        }
    }

    fn record(&mut self, index: u8, name: Option<&str>, line: u64, record: &Record) {
        self.report.samples_checked += 1;
        let mut flag = false;
        for problem in required(&self.kind, record) {
            self.report.missing_fields.add(name, line, problem);
            flag = true;
        }
        let canonical = serde_json::to_string(record).unwrap_or_default();
        let exact = hash(&canonical);
        let seen = self.splits_seen.entry(exact).or_insert(0);
        if *seen & !(1 << index) != 0 && *seen & (1 << index) == 0 {
            self.report
                .cross_split
                .add(name, line, "the same record is in another split".into());
            flag = true;
        }
        *seen |= 1 << index;
        match self.exact.get(&exact) {
            Some((first_split, first)) if first_split.as_deref() == name => {
                self.report
                    .exact_duplicates
                    .add(name, line, format!("a duplicate of line {first}"));
                flag = true;
            }
            Some(_) => {}
            None => {
                self.exact.insert(exact, (name.map(str::to_string), line));
                let folded = fold(&text_of(record));
                match self.near.get(&hash(&folded)) {
                    Some(first) if !folded.is_empty() => {
                        self.report
                            .near_duplicates
                            .add(name, line, format!("nearly the same as line {first}"));
                        flag = true;
                    }
                    _ => drop(self.near.insert(hash(&folded), line)),
                }
            }
        }
        self.count_labels(record);
        if let Some(t) = self.tokens.as_mut() {
            self.lengths.push((t.count)(&text_of(record)));
        }
        if flag {
            self.flagged.insert((index, line));
        }
    }

    fn count_labels(&mut self, record: &Record) {
        let labels = &mut self.report.labels;
        match self.kind.as_str() {
            "classification" => {
                if let Some(l) = record.get("label") {
                    let l = l.as_str().map_or_else(|| l.to_string(), str::to_string);
                    *labels.entry(l).or_default() += 1;
                }
            }
            "conversation" => {
                for m in record.get("messages").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(role) = m.get("role").and_then(Value::as_str) {
                        *labels.entry(role.to_string()).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// Marks the report as made from the first records only.
    pub fn sampled(&mut self) {
        self.report.sampled = true;
    }

    pub fn report(mut self) -> Report {
        let r = &mut self.report;
        if let Some(t) = &self.tokens {
            r.token_lengths = Some(histogram(&self.lengths, t));
        }
        let total = r.samples_checked + r.invalid.count;
        let clean = total.saturating_sub(self.flagged.len() as u64);
        r.score = if total == 0 {
            0.0
        } else {
            (clean as f64 * 1000.0 / total as f64).round() / 10.0
        };
        self.report
    }
}

fn histogram(lengths: &[u64], t: &Tokens) -> TokenLengths {
    let mut histogram: Vec<Bucket> = BUCKETS
        .iter()
        .map(|&b| Bucket {
            up_to: Some(b),
            count: 0,
        })
        .chain([Bucket { up_to: None, count: 0 }])
        .collect();
    for &n in lengths {
        let i = BUCKETS.iter().position(|&b| n <= b).unwrap_or(BUCKETS.len());
        histogram[i].count += 1;
    }
    let sum: u64 = lengths.iter().sum();
    TokenLengths {
        model: t.model.clone(),
        context: t.context,
        histogram,
        min: lengths.iter().copied().min().unwrap_or(0),
        max: lengths.iter().copied().max().unwrap_or(0),
        mean: if lengths.is_empty() {
            0.0
        } else {
            (sum as f64 / lengths.len() as f64 * 10.0).round() / 10.0
        },
        over_context: lengths.iter().filter(|&&n| n > t.context).count() as u64,
    }
}

fn hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Lower case, with runs of whitespace as one space.
fn fold(s: &str) -> String {
    s.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text a record holds: its string values (message contents for a conversation), in field
/// order, a line each. This is what the token lengths count.
pub fn text_of(record: &Record) -> String {
    let mut out = Vec::new();
    for v in record.values() {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => {
                for m in items {
                    if let Some(c) = m.get("content").and_then(Value::as_str) {
                        out.push(c.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    out.join("\n")
}

fn non_empty(record: &Record, field: &str) -> Option<String> {
    match record.get(field) {
        None | Some(Value::Null) => Some(format!("{field} is missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Some(format!("{field} is empty")),
        Some(Value::String(_)) => None,
        Some(_) => Some(format!("{field} must be a string")),
    }
}

/// What a record of `kind` lacks, one message per problem.
pub fn required(kind: &str, record: &Record) -> Vec<String> {
    let fields: &[&str] = match kind {
        "instruction" => &["instruction", "response"],
        "text" => &["text"],
        "classification" => &["text", "label"],
        "preference" => &["prompt", "chosen", "rejected"],
        "conversation" => return conversation(record),
        _ => &[],
    };
    fields
        .iter()
        .filter(|f| !(kind == "classification" && **f == "label" && record.get("label").is_some_and(|v| !v.is_null())))
        .filter_map(|f| non_empty(record, f))
        .collect()
}

/// OpenAI's chat fine-tuning rules: `messages` is a non-empty list of objects with a known
/// `role` and string `content` (an assistant's may be empty when it calls tools), no other
/// keys but `name`, `weight`, `tool_calls` and `function_call`, and at least one assistant
/// message to learn from.
fn conversation(record: &Record) -> Vec<String> {
    let Some(messages) = record.get("messages") else {
        return vec!["messages is missing".into()];
    };
    let Some(messages) = messages.as_array().filter(|m| !m.is_empty()) else {
        return vec!["messages must be a non-empty list".into()];
    };
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Some(m) = m.as_object() else {
            out.push(format!("messages[{i}] must be an object"));
            continue;
        };
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("system" | "user" | "assistant" | "tool" | "function")) {
            out.push(format!(
                "messages[{i}].role must be system, user, assistant, tool or function"
            ));
        }
        let calls = m.contains_key("tool_calls") || m.contains_key("function_call");
        match m.get("content") {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ if role == Some("assistant") && calls => {}
            Some(Value::String(_)) | None | Some(Value::Null) => {
                out.push(format!("messages[{i}].content is missing or empty"))
            }
            Some(_) => out.push(format!("messages[{i}].content must be a string")),
        }
        if let Some(k) = m
            .keys()
            .find(|k| !["role", "content", "name", "weight", "tool_calls", "function_call"].contains(&k.as_str()))
        {
            out.push(format!("messages[{i}] has an unknown key {k:?}"));
        }
    }
    if !messages
        .iter()
        .any(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
    {
        out.push("no assistant message to learn from".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: &str, text: &str, tokens: Option<Tokens>) -> Report {
        let mut c = Checker::new(kind, tokens);
        crate::rows(crate::Format::Jsonl, text.as_bytes(), &mut |item| {
            c.feed((0, None), item);
            true
        })
        .unwrap();
        c.report()
    }

    #[test]
    fn instruction_records_need_both_fields_and_duplicates_are_found() {
        let r = check(
            "instruction",
            concat!(
                "{\"instruction\":\"Hi\",\"response\":\"Hello\"}\n",
                "{\"instruction\":\"Hi\",\"response\":\"Hello\"}\n",
                "{\"instruction\":\"  hi \",\"response\":\"HELLO\"}\n",
                "{\"instruction\":\"\",\"response\":\"x\"}\n",
                "not json\n",
            ),
            None,
        );
        assert_eq!(r.samples_checked, 4);
        assert_eq!((r.invalid.count, r.invalid.lines[0].line), (1, 5));
        assert_eq!(r.exact_duplicates.lines[0].message, "a duplicate of line 1");
        assert_eq!((r.near_duplicates.count, r.near_duplicates.lines[0].line), (1, 3));
        assert_eq!(r.missing_fields.lines[0].message, "instruction is empty");
        assert_eq!(r.score, 20.0, "only line 1 is clean");
    }

    #[test]
    fn conversations_follow_openais_chat_rules_and_roles_are_counted() {
        let ok = json_line(
            r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]}"#,
        );
        assert!(conversation(&ok).is_empty());
        let bad = json_line(r#"{"messages":[{"role":"bot","content":"Hi"},{"role":"user","content":5,"extra":1}]}"#);
        let problems = conversation(&bad);
        assert_eq!(problems.len(), 4, "{problems:?}");
        let calls = json_line(r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[]}]}"#);
        assert!(conversation(&calls).is_empty());
        let r = check(
            "conversation",
            &format!("{}\n", serde_json::to_string(&ok).unwrap()),
            None,
        );
        assert_eq!(
            r.labels,
            BTreeMap::from([("assistant".into(), 1), ("system".into(), 1), ("user".into(), 1)])
        );
    }

    #[test]
    fn token_lengths_fill_a_histogram_and_count_what_overflows_the_context() {
        let mut words = |s: &str| s.split_whitespace().count() as u64;
        let tokens = Tokens {
            model: "m".into(),
            context: 20,
            count: &mut words,
        };
        let text = format!("{{\"text\":\"a b\"}}\n{{\"text\":\"{}\"}}\n", "w ".repeat(40));
        let r = check("text", &text, Some(tokens));
        let t = r.token_lengths.unwrap();
        assert_eq!((t.min, t.max, t.over_context), (2, 40, 1));
        assert_eq!((t.histogram[0].count, t.histogram[2].count), (1, 1));
    }

    #[test]
    fn a_record_in_two_splits_is_reported_once_per_extra_split() {
        let mut c = Checker::new("text", None);
        for (i, split) in ["train", "test"].into_iter().enumerate() {
            crate::rows(
                crate::Format::Jsonl,
                &b"{\"text\":\"same\"}\n{\"text\":\"other\"}\n"[..],
                &mut |item| {
                    c.feed((i as u8, Some(split)), item);
                    true
                },
            )
            .unwrap();
        }
        let r = c.report();
        assert_eq!(r.cross_split.count, 2);
        assert_eq!(r.cross_split.lines[0].split.as_deref(), Some("test"));
        assert_eq!(
            r.exact_duplicates.count, 0,
            "across splits it is a cross-split finding only"
        );
    }

    fn json_line(s: &str) -> Record {
        serde_json::from_str(s).unwrap()
    }
}
