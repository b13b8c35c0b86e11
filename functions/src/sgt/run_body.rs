//! A run request's body read while it arrives. [`super::rows::split_data`] reads the rows of a
//! whole body, which must first be copied out of hyper's frames into one buffer; for a 1024x64
//! request that copy (1.3 MB) cost 0.12–0.30 ms of machine time (BENCHMARKS.md, "The floor").
//! Here the whole rows in each frame are read in place as the frame arrives, and only a row cut
//! by a frame's end is copied, to be finished with the next frame's first bytes.
//!
//! Anything this does not expect (a body that is not a plain object, rows that do not read, a
//! rows array that never ends) stops the reading, and [`RunBody::whole`] gives the body to the
//! whole-body path, which words the error. Read as it came, a body gives exactly what
//! `split_data` gives the whole body: the same pieces of the same text are read with the same
//! state between them, and the tests check it on bodies cut at every kind of place.

use bytes::{Bytes, BytesMut};

use super::rows::{data_value_start, read_piece, At, Piece, Rows, RowsSoFar};
use crate::body::{Share, Sink};

/// How many bytes before the rows are looked through for `"data"`; a body whose rows start
/// later is read whole.
const MAX_HEAD: usize = 64 << 10;

/// The longest cut row kept; a longer one (over 40,000 numbers) goes to the whole-body path.
/// Kept beside the frames, which the body budget counts, this bounds what it does not count.
const MAX_CUT: usize = 1 << 20;

/// A run request's body, and its rows when they could be read as it arrived.
pub struct RunBody {
    /// Every frame as it came, for [`RunBody::whole`].
    frames: Vec<Bytes>,
    /// The body before the rows; once they end, with `null` in their place and what follows.
    rest: Vec<u8>,
    state: State,
    rows: RowsSoFar,
    /// The start of a row that a frame's end cut, waiting for the rest of it.
    cut: Vec<u8>,
    max_values: usize,
    share: Option<Share>,
}

#[derive(Clone, Copy)]
enum State {
    /// Looking for where the rows start.
    Head,
    /// Reading the rows; the next piece starts here.
    Rows(At),
    /// The rows ended; the rest of the body goes to `rest`.
    Tail,
    /// Not reading: the whole-body path will.
    Off,
}

impl RunBody {
    /// Ready for a body of about `len` bytes whose rows may hold `max_values` numbers (more is
    /// a [`super::rows::RowsError::Shape`], found by the whole-body path).
    pub fn new(len: usize, max_values: usize) -> Self {
        RunBody {
            frames: Vec::new(),
            rest: Vec::new(),
            state: State::Head,
            rows: RowsSoFar::new(None, len, max_values),
            cut: Vec::new(),
            max_values,
            share: None,
        }
    }

    /// Holds the body's share of the budget for as long as its frames.
    pub fn hold(&mut self, share: Share) {
        self.share = Some(share);
    }

    /// The rows and the body with `null` in their place, when the rows were read as the body
    /// came; taken once.
    pub fn rows_and_rest(&mut self) -> Option<(Rows, Vec<u8>)> {
        let State::Tail = self.state else {
            return None;
        };
        self.state = State::Off;
        let rows = std::mem::replace(&mut self.rows, RowsSoFar::new(None, 0, 0));
        Some((rows.into_rows(), std::mem::take(&mut self.rest)))
    }

    /// The whole body as sent, taken once: copied into one buffer unless it came in one frame,
    /// each frame let go once copied, so the body is held about once, as the budget counts it.
    pub fn whole(&mut self) -> Bytes {
        self.state = State::Off;
        let frames = std::mem::take(&mut self.frames);
        if let [one] = frames.as_slice() {
            return one.clone();
        }
        let mut body = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
        for frame in frames {
            body.extend_from_slice(&frame);
        }
        body.freeze()
    }

    fn feed(&mut self, frame: &[u8]) {
        match self.state {
            State::Head => self.head(frame),
            State::Rows(_) => self.rows_in(frame),
            State::Tail => self.rest.extend_from_slice(frame),
            State::Off => {}
        }
    }

    /// Looks for the rows' start in the bytes so far; the rows in `frame` after it are read.
    fn head(&mut self, frame: &[u8]) {
        let before = self.rest.len();
        // Usually the first frame holds the whole head, and only its head is copied.
        let start = if before == 0 {
            data_value_start(frame).filter(|&k| k < frame.len())
        } else {
            self.rest.extend_from_slice(frame);
            let k = data_value_start(&self.rest).filter(|&k| k < self.rest.len());
            self.rest.truncate(before);
            k.and_then(|k| k.checked_sub(before))
        };
        match start {
            Some(k) => {
                self.rest.extend_from_slice(&frame[..k]);
                self.state = State::Rows(At::Open);
                self.rows_in(&frame[k..]);
            }
            None if before + frame.len() <= MAX_HEAD => self.rest.extend_from_slice(frame),
            None => self.state = State::Off,
        }
    }

    /// Reads the whole rows in `piece`, the cut row first, and keeps the cut end. Every `]` in
    /// a rows array closes a row or the array, so the text up to one is read in one piece.
    fn rows_in(&mut self, mut piece: &[u8]) {
        if !self.cut.is_empty() {
            let Some(j) = piece.iter().position(|&b| b == b']') else {
                return self.keep_cut(piece);
            };
            self.keep_cut(&piece[..=j]);
            if !matches!(self.state, State::Rows(_)) {
                return;
            }
            let mut cut = std::mem::take(&mut self.cut);
            let going = self.read(&cut);
            cut.clear();
            self.cut = cut;
            piece = &piece[j + 1..];
            if !going {
                return self.after_rows(piece);
            }
        }
        match piece.iter().rposition(|&b| b == b']') {
            Some(j) if self.read(&piece[..=j]) => self.keep_cut(&piece[j + 1..]),
            Some(j) => self.after_rows(&piece[j + 1..]),
            None => self.keep_cut(piece),
        }
    }

    /// Keeps `bytes` as the cut row's, unless that makes it longer than [`MAX_CUT`].
    fn keep_cut(&mut self, bytes: &[u8]) {
        if self.cut.len() + bytes.len() > MAX_CUT {
            self.state = State::Off;
            self.cut = Vec::new();
        } else {
            self.cut.extend_from_slice(bytes);
        }
    }

    /// Reads one piece of the rows; whether the array goes on past it.
    fn read(&mut self, text: &[u8]) -> bool {
        let State::Rows(at) = self.state else {
            return false;
        };
        match read_piece(text, at, &mut self.rows, self.max_values, false) {
            Ok(Piece::Continue) => {
                self.state = State::Rows(At::AfterRow);
                return true;
            }
            Ok(Piece::Ended(used)) => {
                self.rest.extend_from_slice(b"null");
                self.rest.extend_from_slice(&text[used..]);
                self.state = State::Tail;
            }
            Err(_) => self.state = State::Off,
        }
        false
    }

    /// Bytes past the piece that ended the rows (or that did not read).
    fn after_rows(&mut self, bytes: &[u8]) {
        if let State::Tail = self.state {
            self.rest.extend_from_slice(bytes);
        }
    }
}

impl Sink for RunBody {
    fn take(&mut self, frame: Bytes) {
        self.feed(&frame);
        self.frames.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::super::rows::split_data;
    use super::*;

    const MAX: usize = 1 << 20;

    /// `body` fed in frames cut at `cuts`.
    fn streamed(body: &[u8], cuts: &[usize]) -> RunBody {
        let mut run = RunBody::new(body.len(), MAX);
        let mut from = 0;
        for &to in cuts.iter().chain([body.len()].iter()) {
            run.take(Bytes::copy_from_slice(&body[from..to]));
            from = to;
        }
        run
    }

    /// Read as it came, `body` gives what `split_data` gives it whole, or goes to the whole-body
    /// path; and the whole body is kept either way. Whether it was read as it came.
    fn agrees(body: &[u8], cuts: &[usize]) -> bool {
        let mut run = streamed(body, cuts);
        let read = run.rows_and_rest();
        assert_eq!(run.whole(), body);
        let Some((rows, rest)) = read else {
            return false;
        };
        let shown = String::from_utf8_lossy(body);
        let (whole_rows, whole_rest) = match split_data(body, MAX) {
            Some(Ok(split)) => split,
            other => panic!("read as it came, but whole: {other:?}, for {shown:?} cut at {cuts:?}"),
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&rows.values), bits(&whole_rows.values), "{shown:?} at {cuts:?}");
        assert_eq!(
            (rows.rows, rows.width),
            (whole_rows.rows, whole_rows.width),
            "{shown:?}"
        );
        assert_eq!(rest, whole_rest, "{shown:?} at {cuts:?}");
        true
    }

    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    fn run_request(r: &mut Lcg, rows: usize, width: usize) -> String {
        let number = |r: &mut Lcg| match r.below(4) {
            0 => format!("{}", (r.below(2_000_001) as f64 - 1e6) / 1e6 * 0.987654321012345),
            1 => format!("{:.2}", r.below(200) as f64 / 100.0 - 1.0),
            2 => format!("{}e-{}", r.below(1000), r.below(9)),
            _ => format!("-0.{:017}", r.below(usize::MAX)),
        };
        let (comma, row_sep) = [(",", "],["), (", ", "], ["), (" ,\n", " ]\n,\t[")][r.below(3)];
        let data: Vec<String> = (0..rows)
            .map(|_| (0..width).map(|_| number(r)).collect::<Vec<_>>().join(comma))
            .collect();
        let data = format!("[[{}]]", data.join(row_sep));
        let fields = [
            r#""secret_id": "a\"data\": ]""#.to_string(),
            r#""secret_key": "k""#.to_string(),
            r#""name": "m", "app_name": "x]""#.to_string(),
            format!(r#""data": {data}"#),
        ];
        let mut order = vec![0, 1, 2];
        order.insert(r.below(4), 3);
        let body: Vec<&str> = order.iter().map(|&i| fields[i].as_str()).collect();
        format!("{{{}}}", body.join(", "))
    }

    fn random_cuts(r: &mut Lcg, len: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..r.below(12)).map(|_| r.below(len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    #[test]
    fn rows_read_as_frames_arrive_match_the_whole_body_wherever_the_frames_are_cut() {
        let mut r = Lcg(7);
        for _ in 0..2000 {
            let (rows, width) = (1 + r.below(5), 1 + r.below(9));
            let body = run_request(&mut r, rows, width);
            let cuts = random_cuts(&mut r, body.len());
            assert!(
                agrees(body.as_bytes(), &cuts),
                "not read as it came: {body:?} at {cuts:?}"
            );
        }
    }

    #[test]
    fn a_body_cut_at_every_byte_reads_the_same() {
        let body = br#"{"secret_id": "s", "data": [[0.5, -1e-3, 2], [3, 4.25, -0.12345678901234567]], "n": 1}"#;
        for at in 0..=body.len() {
            assert!(agrees(body, &[at]), "cut at {at}");
        }
        for at in 0..body.len() {
            assert!(agrees(body, &[at, at + 1]), "one byte at {at}");
        }
    }

    #[test]
    fn damaged_bodies_are_never_read_as_they_come_where_the_whole_body_is_refused() {
        let mut r = Lcg(11);
        let (mut read, mut whole) = (0, 0);
        for _ in 0..20_000 {
            let (rows, width) = (1 + r.below(3), 1 + r.below(4));
            let body = run_request(&mut r, rows, width);
            let mut body = body.into_bytes();
            const BYTES: &[u8] = b"0123456789-+.eE,[]{} \n\":x";
            for _ in 0..1 + r.below(2) {
                let at = r.below(body.len());
                match r.below(3) {
                    0 => body[at] = BYTES[r.below(BYTES.len())],
                    1 => drop(body.remove(at)),
                    _ => body.insert(at, BYTES[r.below(BYTES.len())]),
                }
            }
            let cuts = random_cuts(&mut r, body.len());
            if agrees(&body, &cuts) {
                read += 1;
            } else {
                whole += 1;
            }
        }
        assert!(read > 2000 && whole > 2000, "{read} read as they came, {whole} whole");
    }

    #[test]
    fn bodies_it_does_not_expect_go_to_the_whole_body_path_intact() {
        for body in [
            &b""[..],
            b"[1]",
            br#"{"a": 1}"#,
            br#"{"data": [[1, 2], [3]]}"#,
            br#"{"data": [[1, 2], [3, 4]"#,
            br#"{"data": [[1, 2] [3, 4]]}"#,
            br#"{"data": "x"}"#,
        ] {
            for cuts in [vec![], vec![body.len() / 2]] {
                assert!(!agrees(body, &cuts), "{}", String::from_utf8_lossy(body));
            }
        }
        // Past MAX_HEAD bytes without the rows' start, the whole-body path reads the body.
        let long = format!(r#"{{"pad": "{}", "data": [[1]]}}"#, "p".repeat(2 * MAX_HEAD));
        assert!(!agrees(long.as_bytes(), &[10, MAX_HEAD + 10]));
        assert!(agrees(long.as_bytes(), &[10, MAX_HEAD - 10]));
        // So is a row cut by a frame's end that goes on past MAX_CUT.
        let wide = format!(r#"{{"data": [[{}1]]}}"#, "0.5, ".repeat(MAX_CUT / 5));
        assert!(!agrees(wide.as_bytes(), &[100]));
        assert!(agrees(wide.as_bytes(), &[]));
        assert!(split_data(wide.as_bytes(), MAX).unwrap().is_ok());
        assert!(split_data(long.as_bytes(), MAX).unwrap().is_ok());
    }
}
