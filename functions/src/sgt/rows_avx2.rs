//! `data` rows read with AVX2, for CPUs that have it; [`super::rows`] keeps the portable reader,
//! which also words every error.
//!
//! The portable reader walks the text one byte at a time, so each number can only start once the
//! one before it has ended: at 65,536 numbers a request, that chain was half of a run request's
//! CPU. Here the number starts are found first, 64 bytes at a time (a digit or `-` whose previous
//! byte is not part of a number), and each number is read from its own start in a few vector
//! steps. No number waits on the one before it, so the CPU reads several at once. Each number's
//! digits are then left to [`DigitBatch`], which turns them into values eight at a time.
//!
//! This reader only says yes: anything it does not expect (empty rows, `null`, a number longer
//! than 19 digits, a number out of `f32`'s range, a bad width) makes it give up with `None`,
//! and the portable reader reads the text again and words the error. A body is never accepted
//! here that the portable reader would refuse; `tests` checks that on many mutated texts.

use std::arch::x86_64::*;

use super::digit_batch::DigitBatch;
use super::number::{exponent, parse_f32};
use super::rows::{close_row, skip_ws, At, Piece, RowsSoFar};

/// The rows array at the start of `json` and the bytes it used, when it is well formed and every
/// row is `width` wide (or, with `None`, as wide as the first); `None` otherwise, or when this CPU
/// lacks AVX2 or BMI1. What the tests compare with the portable reader, once with AVX-512 when
/// `wide` and the CPU has it, and once without.
#[cfg(test)]
pub(super) fn parse_rows_prefix(
    json: &[u8],
    width: Option<usize>,
    max_values: usize,
    wide: bool,
) -> Option<(super::rows::Rows, usize)> {
    if !available() {
        return None;
    }
    let mut acc = RowsSoFar::new(width, json.len(), max_values);
    // SAFETY: the CPU has the features `read` is compiled for, and AVX-512 where `wide` asks.
    match unsafe { read(json, At::Open, &mut acc, max_values, wide && wide_available()) }? {
        Piece::Ended(used) => Some((acc.into_rows(), used)),
        Piece::Continue => None,
    }
}

/// One piece of a rows array read into `acc`, as [`super::rows::read_piece`] reads it, when it is
/// well formed; `None` otherwise (with `acc` part-way), or when this CPU lacks AVX2 or BMI1.
pub(super) fn read_piece(json: &[u8], at: At, acc: &mut RowsSoFar, max_values: usize) -> Option<Piece> {
    if !available() {
        return None;
    }
    // SAFETY: the CPU has both features `read` is compiled for.
    unsafe { read(json, at, acc, max_values, wide_available()) }
}

/// Whether this CPU has what [`read`] is compiled for. Elsewhere the portable reader reads
/// every body, so this reader's tests have nothing to check there.
fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("bmi1")
}

/// Whether this CPU has what [`DigitBatch`] converts eight numbers at once with.
fn wide_available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512dq")
}

/// What follows a number.
enum Gap {
    /// The next number of the row starts here.
    Next(usize),
    /// The row ended and the next row's first number starts here.
    Row(usize),
    /// The row and the whole array ended; the array's text ends here.
    End(usize),
    /// The row ended, and so did the text: the piece ended after a row.
    Edge,
}

/// Reads a piece; `wide` only where the CPU has AVX-512 F, BW and DQ.
#[target_feature(enable = "avx2,bmi1")]
unsafe fn read(s: &[u8], at: At, acc: &mut RowsSoFar, max_values: usize, wide: bool) -> Option<Piece> {
    let mut expect = match at {
        At::Open => open(s)?,
        At::AfterRow => match after_row(s, 0)? {
            Gap::Row(i) => i,
            Gap::End(i) => return Some(Piece::Ended(i)),
            _ => return Some(Piece::Continue),
        },
    };
    let RowsSoFar {
        values: out,
        rows,
        width,
    } = acc;
    let mut row_start = out.len();
    let mut carry = 0;
    let mut batch = DigitBatch::new(wide);
    for block in (0..s.len()).step_by(64) {
        let (start_chars, number_chars) = classify(s, block);
        let mut starts = start_chars & !((number_chars << 1) | carry);
        carry = number_chars >> 63;
        while starts != 0 {
            let p = block + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            // A number where the JSON around the last one did not lead.
            if p != expect {
                return None;
            }
            let end = match number(s, p)? {
                (Number::Value(v), end) => {
                    batch.flush(s, out)?;
                    out.push(v);
                    end
                }
                (Number::Digits(digits), end) => {
                    batch.push(digits, p, s, out)?;
                    end
                }
            };
            let gap = gap(s, end)?;
            if let Gap::Next(i) = gap {
                expect = i;
                continue;
            }
            batch.flush(s, out)?;
            close_row(out, row_start, *rows, width, max_values).ok()?;
            (*rows, row_start) = (*rows + 1, out.len());
            match gap {
                Gap::Row(i) => expect = i,
                Gap::End(i) => return Some(Piece::Ended(i)),
                _ => return Some(Piece::Continue),
            }
        }
    }
    None
}

/// `[[` with any whitespace: where the first number must start.
fn open(s: &[u8]) -> Option<usize> {
    let i = skip_ws(s, 0);
    (s.get(i) == Some(&b'[')).then_some(())?;
    let i = skip_ws(s, i + 1);
    (s.get(i) == Some(&b'[')).then(|| skip_ws(s, i + 1))
}

/// The JSON between a number that ends at `i` and what comes next.
#[inline(always)]
fn gap(s: &[u8], i: usize) -> Option<Gap> {
    // Compact JSON first (`1,2`): a comma, then no whitespace. What follows is not looked at
    // here: the next number must start right there, or the caller gives up.
    if s.get(i) == Some(&b',') && s.get(i + 1).is_some_and(|b| *b > b' ') {
        return Some(Gap::Next(i + 1));
    }
    let i = skip_ws(s, i);
    match s.get(i)? {
        b',' => Some(Gap::Next(skip_ws(s, i + 1))),
        b']' => after_row(s, i + 1),
        _ => None,
    }
}

/// The JSON after a row that closed before `i`.
#[inline(always)]
fn after_row(s: &[u8], i: usize) -> Option<Gap> {
    let i = skip_ws(s, i);
    match s.get(i) {
        None => Some(Gap::Edge),
        Some(b',') => {
            let i = skip_ws(s, i + 1);
            (s.get(i) == Some(&b'[')).then(|| Gap::Row(skip_ws(s, i + 1)))
        }
        Some(b']') => Some(Gap::End(i + 1)),
        _ => None,
    }
}

/// For the 64 bytes at `at` (spaces past the end): which are a digit or `-` (a number may start
/// there), and which may be inside a number (`0-9 - + . e E`).
#[target_feature(enable = "avx2")]
fn classify(s: &[u8], at: usize) -> (u64, u64) {
    let mut padded = [b' '; 64];
    let block = match s.get(at..at + 64) {
        Some(block) => block,
        None => {
            padded[..s.len() - at].copy_from_slice(&s[at..]);
            &padded
        }
    };
    // SAFETY: `block` has 64 bytes.
    let (lo, hi) = unsafe { (classify32(block.as_ptr()), classify32(block.as_ptr().add(32))) };
    (lo.0 as u64 | (hi.0 as u64) << 32, lo.1 as u64 | (hi.1 as u64) << 32)
}

/// [`classify`] for 32 bytes at `p`, which must be readable.
#[target_feature(enable = "avx2")]
unsafe fn classify32(p: *const u8) -> (u32, u32) {
    let v = _mm256_loadu_si256(p.cast());
    let eq = |c: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(c as i8));
    let start = _mm256_or_si256(digit_mask(v), eq(b'-'));
    let lower = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
    let e = _mm256_cmpeq_epi8(lower, _mm256_set1_epi8(b'e' as i8));
    let inside = _mm256_or_si256(_mm256_or_si256(start, e), _mm256_or_si256(eq(b'.'), eq(b'+')));
    (_mm256_movemask_epi8(start) as u32, _mm256_movemask_epi8(inside) as u32)
}

/// 0xff where a byte is an ASCII digit.
#[inline]
#[target_feature(enable = "avx2")]
fn digit_mask(v: __m256i) -> __m256i {
    let d = _mm256_sub_epi8(v, _mm256_set1_epi8(b'0' as i8));
    _mm256_cmpeq_epi8(_mm256_min_epu8(d, _mm256_set1_epi8(9)), d)
}

/// A number as [`number`] reads it.
enum Number {
    /// Read whole, by [`parse_f32`].
    Value(f32),
    /// `±u64 * 10^q` as (digits, q, negative), the `u64` left as its digits for
    /// [`DigitBatch`].
    Digits((__m256i, i64, bool)),
}

/// The number starting at `s[p]` and where it ends, or `None` when it is not a JSON number.
///
/// The common shape, `-? int (. frac)?` with at most 19 digits in all, is read from one 32-byte
/// window that starts 5 bytes before the digits: a digit mask gives the two digit runs, the
/// fraction is moved one byte left over the dot, and the digits are left at window bytes 5..24
/// for [`DigitBatch`] to turn into one `u64`: the digits times 10^(19 - digits), so the value is
/// it times 10^(int digits - 19), rounded by the same `scale` as the portable reader. Other
/// shapes, and numbers too near either end of the text for the window, take [`parse_f32`].
#[inline]
#[target_feature(enable = "avx2,bmi1")]
fn number(s: &[u8], p: usize) -> Option<(Number, usize)> {
    let negative = s[p] == b'-';
    let base = p + negative as usize;
    let whole = |s: &[u8], p| parse_f32(s, p).map(|(v, end)| (Number::Value(v), end));
    if p < 5 || p + 29 > s.len() {
        return whole(s, p);
    }
    // Three windows at p - 5, p - 4 and p - 3: which two hold the digits depends on the sign,
    // and loading all three lets the loads start before the sign is known.
    // SAFETY: the last window ends at p + 29 <= s.len(), checked above.
    let (a, b, c) = unsafe {
        let w = s.as_ptr().add(p - 5);
        (
            _mm256_loadu_si256(w.cast()),
            _mm256_loadu_si256(w.add(1).cast()),
            _mm256_loadu_si256(w.add(2).cast()),
        )
    };
    let sign = _mm256_set1_epi8(-(negative as i8));
    let (window, shifted) = (_mm256_blendv_epi8(a, b, sign), _mm256_blendv_epi8(b, c, sign));
    // Bit j: s[base + j] is not a digit (always set from j = 27, past the window), or is a dot.
    let at_base = 5 + negative as u32;
    let not_digit = !((_mm256_movemask_epi8(digit_mask(a)) as u32) >> at_base) | 1 << 27;
    let dots = (_mm256_movemask_epi8(_mm256_cmpeq_epi8(a, _mm256_set1_epi8(b'.' as i8))) as u32) >> at_base;
    let int_len = not_digit.trailing_zeros() as usize;
    if int_len == 0 || int_len >= 27 {
        return whole(s, p);
    }
    let (mut end, mut frac_len) = (int_len, 0);
    if dots >> int_len & 1 == 1 {
        end = (not_digit & (!1u32 << int_len)).trailing_zeros() as usize;
        frac_len = end - int_len - 1;
    }
    let digits = int_len + frac_len;
    let leading_zero = int_len > 1 && s[base] == b'0';
    if leading_zero || (end > int_len && frac_len == 0) || end >= 27 || digits > 19 {
        return whole(s, p);
    }
    let digits = digit_values(window, shifted, int_len, digits);
    let (mut q, mut i) = (int_len as i64 - 19, base + end);
    if s[i] | 0x20 == b'e' {
        let (e, after) = exponent(s, i + 1)?;
        (q, i) = (q + e, after);
    }
    Some((Number::Digits((digits, q, negative)), i))
}

/// The window's digit values at bytes 5.. (zeros after the last, and before), with the fraction
/// taken from `shifted` (the window one byte on) so the dot drops out.
#[inline]
#[target_feature(enable = "avx2")]
fn digit_values(window: __m256i, shifted: __m256i, int_len: usize, digits: usize) -> __m256i {
    let zero = _mm256_set1_epi8(b'0' as i8);
    let index = _mm256_setr_epi8(
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
        30, 31,
    );
    let below = |n: usize| _mm256_cmpgt_epi8(_mm256_set1_epi8(n as i8), index);
    let joined = _mm256_blendv_epi8(shifted, window, below(5 + int_len));
    let inside = _mm256_andnot_si256(below(5), below(5 + digits));
    _mm256_and_si256(_mm256_sub_epi8(joined, zero), inside)
}

#[cfg(test)]
mod tests {
    use super::super::rows::parse_rows_portably;
    use super::*;

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 11
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn unit(&mut self) -> f64 {
            self.next() as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    /// One number as some client might write it.
    fn number_text(r: &mut Lcg) -> String {
        let x = r.unit();
        match r.below(9) {
            0 => x.to_string(),
            1 => (x as f32 as f64).to_string(),
            2 => format!("{:.2}", x),
            3 => format!("{:e}", x * 10f64.powi(r.below(77) as i32 - 40)),
            4 => format!("{}", (x * 1e6).round() as i64),
            5 => (x * 10f64.powi(r.below(30) as i32 - 15)).to_string(),
            6 => format!("{:.25}", x / 1e3),
            7 => [
                "0",
                "-0",
                "0.0",
                "-0.0",
                "1E+2",
                "3.4028235e38",
                "1e-45",
                "123456789012345678901",
            ][r.below(8)]
            .into(),
            _ => format!("{:.1$}", x * 100.0, r.below(19)),
        }
    }

    /// A rows array of `rows` x `width` numbers with one of several separator styles.
    fn rows_text(r: &mut Lcg, rows: usize, width: usize) -> String {
        let (comma, row_sep, open, close) = [
            (",", "],[", "[[", "]]"),
            (", ", "], [", "[[", "]]"),
            (" ,\n ", "]\n,\t[ ", " [ [", "] ]"),
        ][r.below(3)];
        let rows: Vec<String> = (0..rows)
            .map(|_| (0..width).map(|_| number_text(r)).collect::<Vec<_>>().join(comma))
            .collect();
        format!("{open}{}{close}", rows.join(row_sep))
    }

    /// Replaces, inserts or deletes a few bytes, mostly with bytes that matter to the reader.
    fn mutate(r: &mut Lcg, text: &str) -> Vec<u8> {
        let mut t = text.as_bytes().to_vec();
        const BYTES: &[u8] = b"0123456789-+.eE,[] \n\"x";
        for _ in 0..1 + r.below(3) {
            let at = r.below(t.len() + 1);
            let b = BYTES[r.below(BYTES.len())];
            match (r.below(3), at < t.len()) {
                (0, true) => t[at] = b,
                (1, true) => drop(t.remove(at)),
                _ => t.insert(at, b),
            }
        }
        t
    }

    /// The same answer as the portable reader whenever this reader answers at all, and the same
    /// with AVX-512 (where the CPU has it) as without.
    fn agrees(text: &[u8], width: Option<usize>, max: usize) -> bool {
        let narrow = agrees_with(text, width, max, false);
        assert_eq!(
            agrees_with(text, width, max, true),
            narrow,
            "{:?}",
            String::from_utf8_lossy(text)
        );
        narrow
    }

    fn agrees_with(text: &[u8], width: Option<usize>, max: usize, wide: bool) -> bool {
        let Some((rows, used)) = parse_rows_prefix(text, width, max, wide) else {
            return false;
        };
        let portable = parse_rows_portably(text, width, max);
        let shown = String::from_utf8_lossy(text);
        let (expected, expected_used) = portable.unwrap_or_else(|e| panic!("accepted {shown:?}, portably {e:?}"));
        assert_eq!(
            (rows.rows, rows.width, used),
            (expected.rows, expected.width, expected_used),
            "{shown:?}"
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&rows.values), bits(&expected.values), "{shown:?}");
        true
    }

    #[test]
    fn well_formed_rows_are_read_exactly_like_the_portable_reader() {
        if !available() {
            return;
        }
        let mut r = Lcg(3);
        for _ in 0..3000 {
            let (rows, width) = (1 + r.below(6), 1 + r.below(12));
            let text = rows_text(&mut r, rows, width);
            // Trailing JSON after the array is left for the caller.
            let text = [text.as_str(), ["", "}", ", \"x\": 1}"][r.below(3)]].concat();
            let width = [None, Some(width)][r.below(2)];
            assert!(agrees(text.as_bytes(), width, 1 << 20), "refused {text:?}");
        }
    }

    #[test]
    fn damaged_rows_are_never_accepted_where_the_portable_reader_refuses_them() {
        if !available() {
            return;
        }
        let mut r = Lcg(5);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..30_000 {
            let (rows, width) = (1 + r.below(4), 1 + r.below(6));
            let text = rows_text(&mut r, rows, width);
            let text = mutate(&mut r, &text);
            let width = [None, Some(width), Some(width + 1)][r.below(3)];
            let max = [1 << 20, 6][r.below(2)];
            if agrees(&text, width, max) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both outcomes must be common, or the mutations test nothing.
        assert!(
            accepted > 3000 && refused > 3000,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn shapes_it_does_not_read_are_left_to_the_portable_reader() {
        if !available() {
            return;
        }
        for text in [
            "[]",
            "[[]]",
            "[[1,2],[]]",
            "[[1,2],[3]]",
            "[[1,null]]",
            "[[1,2]",
            "[[1e39,2]]",
            "[[01,2]]",
        ] {
            assert!(
                parse_rows_prefix(text.as_bytes(), None, 1 << 20, true).is_none(),
                "{text}"
            );
        }
        assert!(parse_rows_prefix(b"[[1,2],[3,4]]", None, 3, true).is_none());
        assert!(parse_rows_prefix(b"[[1,2],[3,4]]", Some(3), 1 << 20, true).is_none());
    }
}
