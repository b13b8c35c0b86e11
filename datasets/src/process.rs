//! Processing: prompt templates with `{field}` placeholders, and seeded train/validation/test
//! splits of exact sizes drawn while the file streams past.

use serde_json::Value;

use crate::Record;

/// A prompt template: text with `{field}` placeholders; `{{` and `}}` are literal braces.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Field(String),
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let name = name.trim();
                    if name.is_empty() || name.contains('{') {
                        return Err("a placeholder is {field}, with the field's name".into());
                    }
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                    pieces.push(Piece::Field(name.to_string()));
                }
                '}' => return Err("a } without its {; write }} for a literal brace".into()),
                c => text.push(c),
            }
        }
        if s.matches('{').count() > s.matches('}').count() {
            return Err("a { without its }; write {{ for a literal brace".into());
        }
        pieces.push(Piece::Text(text));
        Ok(Template { pieces })
    }

    /// The field names it uses, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Field(f) => Some(f.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The text for one record: strings as they are, other values as JSON, missing ones empty.
    pub fn render(&self, record: &Record) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => match record.get(f) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => {}
                    Some(v) => out.push_str(&v.to_string()),
                },
            }
        }
        out
    }
}

/// The sizes of the three splits of `n` records for ratios that sum to 1: rounded, with the
/// remainder going to the training split.
pub fn split_sizes(n: u64, ratios: [f64; 3]) -> [u64; 3] {
    let val = (n as f64 * ratios[1]).round() as u64;
    let test = ((n as f64 * ratios[2]).round() as u64).min(n - val.min(n));
    [n - val.min(n) - test, val.min(n), test]
}

/// Deals records into splits of exact sizes, uniformly at random from a seed: each record
/// goes to a split with probability (still needed there) / (records left), which draws a
/// uniformly random assignment without holding the file (selection sampling). The same seed
/// and sizes give the same assignment on every machine.
pub struct Splitter {
    left: [u64; 3],
    state: u64,
}

impl Splitter {
    pub fn new(sizes: [u64; 3], seed: u64) -> Splitter {
        Splitter {
            left: sizes,
            state: seed,
        }
    }

    /// The split of the next record (0 train, 1 validation, 2 test); `None` once all are dealt.
    pub fn next_split(&mut self) -> Option<usize> {
        let total: u64 = self.left.iter().sum();
        if total == 0 {
            return None;
        }
        let mut pick = self.next_u64() % total;
        for (i, left) in self.left.iter_mut().enumerate() {
            if pick < *left {
                *left -= 1;
                return Some(i);
            }
            pick -= *left;
        }
        unreachable!("pick < total")
    }

    /// splitmix64: small, fast, and the same everywhere.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_fields_and_keep_literal_braces() {
        let t = Template::parse("### Q:\n{instruction}\n### A: {response} {{json}} {n}").unwrap();
        assert_eq!(t.fields().collect::<Vec<_>>(), ["instruction", "response", "n"]);
        let r: Record = serde_json::from_str(r#"{"instruction": "hi", "response": "yo", "n": 3}"#).unwrap();
        assert_eq!(t.render(&r), "### Q:\nhi\n### A: yo {json} 3");
        for bad in ["{", "{}", "a}", "{a", "{ }"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn splits_have_exact_sizes_and_depend_only_on_the_seed() {
        assert_eq!(split_sizes(8000, [0.8, 0.1, 0.1]), [6400, 800, 800]);
        assert_eq!(split_sizes(3, [0.8, 0.1, 0.1]), [3, 0, 0]);
        assert_eq!(split_sizes(10, [0.0, 0.5, 0.5]), [0, 5, 5]);
        let deal = |seed| {
            let mut s = Splitter::new([6, 2, 2], seed);
            (0..10).map(|_| s.next_split().unwrap()).collect::<Vec<_>>()
        };
        let a = deal(42);
        assert_eq!(a, deal(42));
        assert_ne!(a, deal(43));
        assert_eq!(a.iter().filter(|&&s| s == 0).count(), 6);
        assert_eq!(a.iter().filter(|&&s| s == 2).count(), 2);
    }

    #[test]
    fn every_record_is_equally_likely_in_every_split() {
        // 10 records, 5 in train: over many seeds, each position lands in train about half the time.
        let mut train = [0u32; 10];
        for seed in 0..4000 {
            let mut s = Splitter::new([5, 3, 2], seed);
            for t in train.iter_mut() {
                if s.next_split() == Some(0) {
                    *t += 1;
                }
            }
        }
        for t in train {
            assert!((1800..2200).contains(&t), "{train:?}");
        }
    }
}
