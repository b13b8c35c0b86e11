//! `upload_sgt_model_train_data`'s pairs, read straight into one flat buffer.
//!
//! As `Vec<Vec<Vec<f32>>>` every pair cost three heap lists, so a 64 MiB body of short pairs
//! took over a gigabyte before any limit was checked. Here a number costs its 4 bytes, values
//! past [`MAX_TRAIN_VALUES`] are read but not kept, and the first shape problem is noted for
//! the handler to report after authentication (as `UploadDataException`). Text that is not a
//! list of pairs of lists of numbers is still a parse error, and so is a number out of `f32`'s
//! range (sonic-rs refuses it), so every value kept is finite.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use super::requests::MAX_TRAIN_VALUES;

#[derive(Debug, Default, PartialEq)]
pub struct TrainData {
    /// Each pair's input, then its label.
    pub values: Vec<f32>,
    pub pairs: u64,
    /// The first well-formed pair's input and label widths, which every pair must have.
    pub widths: Option<(usize, usize)>,
    /// The first problem found, such as "train_data[3] must be a pair [input, label]".
    pub problem: Option<String>,
}

impl TrainData {
    /// Pair `n`'s problem, if it has one: its widths, or values it could not keep.
    fn check(&mut self, n: u64, input: usize, label: usize, kept: usize) -> Option<String> {
        let (wi, wl) = *self.widths.get_or_insert((input, label));
        for (len, w, what) in [(input, wi, "input"), (label, wl, "label")] {
            if len != w {
                return Some(format!("train_data[{n}] {what} has {len} values, expected {w}"));
            }
        }
        (kept != input + label).then(|| format!("a model holds at most {MAX_TRAIN_VALUES} training values"))
    }
}

impl<'de> Deserialize<'de> for TrainData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(Pairs {
            limit: MAX_TRAIN_VALUES as usize,
        })
    }
}

/// The pairs, keeping at most `limit` values.
struct Pairs {
    limit: usize,
}

impl<'de> Visitor<'de> for Pairs {
    type Value = TrainData;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of [input, label] pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TrainData, A::Error> {
        let mut data = TrainData::default();
        while seq.next_element_seed(Pair(&mut data, self.limit))?.is_some() {}
        Ok(data)
    }
}

/// One `[input, label]`, appended while nothing is wrong yet, keeping at most `.1` values.
struct Pair<'a>(&'a mut TrainData, usize);

impl<'de> DeserializeSeed<'de> for Pair<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Pair<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pair [input, label] of lists of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Pair(data, limit) = self;
        let (n, start, keep) = (data.pairs, data.values.len(), data.problem.is_none());
        data.pairs += 1;
        let input = seq.next_element_seed(Numbers {
            out: &mut data.values,
            keep,
            limit,
        })?;
        let label = seq.next_element_seed(Numbers {
            out: &mut data.values,
            keep,
            limit,
        })?;
        let mut extra = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            extra = true;
        }
        let kept = data.values.len() - start;
        let problem = match (input, label, extra) {
            (Some(input), Some(label), false) => data.check(n, input, label, kept),
            _ => Some(format!("train_data[{n}] must be a pair [input, label]")),
        };
        if let Some(p) = problem {
            data.values.truncate(start);
            data.problem.get_or_insert(p);
        }
        Ok(())
    }
}

/// A list of numbers, appended to `out` when `keep` and while it holds fewer than `limit`.
struct Numbers<'a> {
    out: &'a mut Vec<f32>,
    keep: bool,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for Numbers<'_> {
    /// How many numbers the list held.
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Numbers<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut len = 0;
        while let Some(v) = seq.next_element::<f32>()? {
            len += 1;
            if self.keep && self.out.len() < self.limit {
                self.out.push(v);
            }
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<TrainData, String> {
        sonic_rs::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn pairs_are_flattened_input_then_label() {
        let d = read("[[[1, 2], [3]], [[4, 5.5], [-6]]]").unwrap();
        assert_eq!(d.values, [1.0, 2.0, 3.0, 4.0, 5.5, -6.0]);
        assert_eq!((d.pairs, d.widths, d.problem), (2, Some((2, 1)), None));
        assert_eq!(read("[]").unwrap(), TrainData::default());
    }

    #[test]
    fn the_first_shape_problem_is_noted_and_nothing_after_it_is_kept() {
        let cases = [
            (
                "[[[1, 2], [3]], [[4], [5]]]",
                "train_data[1] input has 1 values, expected 2",
            ),
            (
                "[[[1, 2], [3]], [[4, 5], []]]",
                "train_data[1] label has 0 values, expected 1",
            ),
            ("[[[1], [3]], [[4, 5]]]", "train_data[1] must be a pair"),
            ("[[[1], [3], [4]]]", "train_data[0] must be a pair"),
            ("[[]]", "train_data[0] must be a pair"),
            (
                "[[[1], [3]], [[4], [5, 6]], [[1, 2, 3], [1]]]",
                "train_data[1] label has 2 values",
            ),
        ];
        for (json, problem) in cases {
            let d = read(json).unwrap();
            let p = d.problem.as_deref().unwrap_or_default();
            assert!(p.starts_with(problem), "{json}: {p:?}");
            let (wi, wl) = d.widths.unwrap_or_default();
            assert!(d.values.len() <= (wi + wl), "{json}: only the first pair is kept");
        }
        // Reading goes on past a problem: the count covers every pair.
        assert_eq!(read("[[[1], [2], [3]], [[1], [2]], [[1], [2]]]").unwrap().pairs, 3);
    }

    #[test]
    fn values_past_the_limit_are_read_but_not_kept() {
        let json = "[[[1, 2], [3]], [[4, 5], [6]], [[7, 8], [9]]]";
        let mut de = sonic_rs::Deserializer::from_str(json);
        let d = de.deserialize_seq(Pairs { limit: 7 }).unwrap();
        assert_eq!(d.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(d.pairs, 3);
        assert!(d.problem.unwrap().starts_with("a model holds at most"));
    }

    #[test]
    fn text_that_is_not_pairs_of_number_lists_does_not_parse() {
        for json in [
            "[[0.1, 0.2]]",
            "\"data\"",
            "[[[\"x\"], [1]]]",
            "[[[1], [2]]",
            "{}",
            "[[[null], [1]]]",
            "[[[1e39], [1]]]",
        ] {
            assert!(read(json).is_err(), "{json}");
        }
    }
}
