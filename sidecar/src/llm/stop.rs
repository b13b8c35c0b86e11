//! Stop strings found even when they span tokens: text that could still be the start of a
//! stop string is held back until it is clear either way.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What a piece of generated text comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Text that is safe to send (possibly empty).
    Text(String),
    /// A stop string was found: the text before it, and generation ends.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, delta: &str) -> Scan {
        self.held.push_str(delta);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Scan::Stopped(text);
        }
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        Scan::Text(std::mem::replace(&mut self.held, rest))
    }

    /// The held-back text, once generation ended for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut out = String::new();
        for d in deltas {
            match m.push(d) {
                Scan::Text(t) => out.push_str(&t),
                Scan::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn a_stop_string_split_across_tokens_is_found_and_left_out() {
        assert_eq!(run(&["END"], &["one ", "E", "N", "D", " more"]), ("one ".into(), true));
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
    }

    #[test]
    fn text_that_only_looked_like_a_stop_string_is_sent_whole() {
        assert_eq!(run(&["END"], &["E", "N", "d", "!"]), ("ENd!".into(), false));
        assert_eq!(
            run(&["END"], &["the E"]),
            ("the E".into(), false),
            "held text comes out at the end"
        );
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        assert_eq!(run(&["world", "lo"], &["hello world"]), ("hel".into(), true));
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
    }
}
