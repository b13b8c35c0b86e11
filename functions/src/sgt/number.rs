//! One JSON number's text to the nearest `f32`, in one pass over its bytes.
//!
//! `run_sgt_model` bodies are 65,536 numbers or more, so this is the API's hottest loop. Python
//! SGT clients send either short decimals (`0.25`) or the shortest repr of a double (17
//! significant digits). Both take one pass here: the digits are read into a `u64`, and the value
//! comes from one multiplication whose rounding is provably right, or the number is handed to
//! fast-float (correctly rounded) for the rare case that is not. (Before, a 17-digit number was
//! scanned twice: a short-decimal attempt, then fast-float.)

/// 10^q for q in -22..=22, each the nearest `f64` (exact for q >= 0).
pub(super) const POW10: [f64; 45] = [
    1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6,
    1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
/// A `u64` holds any 19 decimal digits.
const MAX_DIGITS: usize = 19;

/// The number at `s[i..]`: `Some((value, end))`, or `None` when it is not a JSON number.
/// Values beyond `f32`'s range come back infinite, for the caller to refuse.
#[inline(always)]
pub fn parse_f32(s: &[u8], i: usize) -> Option<(f32, usize)> {
    let (fast, end) = scan(s, i)?;
    Some((fast.or_else(|| slow(&s[i..end]))?, end))
}

/// Walks the JSON number grammar `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` at
/// `s[i..]`, reading its digits as `w * 10^q` on the way. `None` when the text is not a JSON
/// number; otherwise where it ends, with the value when [`round`] can decide it from `(w, q)`
/// (digits that fit a `u64`, a moderate exponent) and `None` for [`slow`].
#[inline(always)]
fn scan(s: &[u8], mut i: usize) -> Option<(Option<f32>, usize)> {
    let negative = s.get(i) == Some(&b'-');
    i += negative as usize;
    let int_start = i;
    let mut w = 0u64;
    i = digits(s, i, &mut w);
    let int_len = i - int_start;
    // At least one integer digit, and no leading zero before another digit.
    if int_len == 0 || (int_len > 1 && s[int_start] == b'0') {
        return None;
    }
    let mut frac_len = 0;
    if s.get(i) == Some(&b'.') {
        let frac_start = i + 1;
        i = digits(s, frac_start, &mut w);
        frac_len = i - frac_start;
        if frac_len == 0 {
            return None;
        }
    }
    let fits = int_len + frac_len <= MAX_DIGITS || significant_digits(&s[int_start..i]) <= MAX_DIGITS;
    let mut q = -(frac_len as i64);
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let (exp, end) = exponent(s, i + 1)?;
        q += exp;
        i = end;
    }
    Some((fits.then(|| round(w, q, negative)).flatten(), i))
}

/// Reads decimal digits into `w`, a byte at a time. Eight-byte SWAR steps were tried (on every
/// chunk, on all-digit chunks only, after eight digits): none beat this loop on both short
/// decimals and 17-digit doubles in `--bench rows`, because what bounds a bytewise parse is the
/// chain from one number's end to the next number's start, and predicted branches shorten it
/// best. `rows_avx2` breaks that chain instead, by finding every number's start first.
/// Wraps on overflow; the caller discards `w` when there were more than [`MAX_DIGITS`].
fn digits(s: &[u8], mut i: usize, w: &mut u64) -> usize {
    while let Some(d) = s.get(i).map(|b| b.wrapping_sub(b'0')).filter(|d| *d < 10) {
        *w = w.wrapping_mul(10).wrapping_add(d as u64);
        i += 1;
    }
    i
}

/// The digits of `[int][.frac]` after its leading zeros, which add nothing to `w`.
fn significant_digits(text: &[u8]) -> usize {
    let zeros = text.iter().take_while(|b| matches!(b, b'0' | b'.')).count();
    text[zeros..].iter().filter(|b| b.is_ascii_digit()).count()
}

/// `[+-]digits` after an exponent marker, saturated far beyond any finite `f32`.
pub(super) fn exponent(s: &[u8], mut i: usize) -> Option<(i64, usize)> {
    let negative = s.get(i) == Some(&b'-');
    i += matches!(s.get(i), Some(b'-' | b'+')) as usize;
    let start = i;
    let mut e = 0i64;
    while let Some(d) = s.get(i).map(|b| b.wrapping_sub(b'0')).filter(|d| *d < 10) {
        e = (e * 10 + d as i64).min(100_000);
        i += 1;
    }
    (i > start).then_some((if negative { -e } else { e }, i))
}

/// The `f32` nearest `±w * 10^q`, when one multiplication decides it; `None` otherwise.
#[inline(always)]
pub(super) fn round(w: u64, q: i64, negative: bool) -> Option<f32> {
    scale(w as f64, q, negative)
}

/// [`round`] for a `w` already converted, exactly or to the nearest `f64`.
///
/// `w as f64 * 10^q` in f64 is within 1.5 ulp of the exact value: 0.5 for `w` past 2^53, 0.5
/// for 10^q when q < 0, 0.5 for the product. Rounding that to f32 is correct unless the exact
/// value and the f64 result could lie either side of an f32 rounding boundary, i.e. the 29 bits
/// that f32 drops are within a few ulp of 100...0. Those few inputs, and anything below f32's
/// normal range, go to fast-float. (A multiply, not Clinger's exact division: the division's
/// latency was a fifth of the whole parse.) The sign goes on 10^q, without a branch and off
/// the digits' critical path: client data's signs are as good as random.
#[inline(always)]
pub(super) fn scale(wide: f64, q: i64, negative: bool) -> Option<f32> {
    let p = *POW10.get(usize::try_from(q + 22).ok()?)?;
    let r = wide * f64::from_bits(p.to_bits() | (negative as u64) << 63);
    let dropped = r.to_bits() & ((1 << 29) - 1);
    if dropped.abs_diff(1 << 28) <= 4 || (r.abs() < f32::MIN_POSITIVE as f64 && wide != 0.0) {
        return None;
    }
    Some(r as f32)
}

/// A JSON number that [`scan`] could not decide: long mantissas, big exponents, subnormals,
/// values next to an f32 rounding boundary. fast-float rounds correctly; it accepts more than
/// JSON (`inf`, `+1`, `.5`), which is why it only sees text that `scan` checked.
#[cold]
#[inline(never)]
pub(super) fn slow(number: &[u8]) -> Option<f32> {
    fast_float2::parse::<f32, _>(number).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fast-float is correctly rounded and independent of this module: the reference.
    fn reference(t: &str) -> f32 {
        fast_float2::parse(t).unwrap()
    }

    fn parsed(t: &str) -> f32 {
        let (v, end) = parse_f32(t.as_bytes(), 0).unwrap_or_else(|| panic!("{t} refused"));
        assert_eq!(end, t.len(), "{t} not read to its end");
        v
    }

    fn lcg(s: &mut u64) -> u64 {
        *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *s >> 11
    }

    #[test]
    fn the_shortest_reprs_of_random_doubles_round_exactly_like_fast_float() {
        let mut s = 7;
        let mut fast = 0;
        for n in 0..400_000 {
            let x = (lcg(&mut s) as f64 / (1u64 << 53) as f64 - 0.5) * 10f64.powi((n % 13) - 6);
            // Doubles (17 digits) and f32 values widened, as numpy clients send them.
            for t in [x.to_string(), (x as f32 as f64).to_string(), format!("{x:e}")] {
                assert_eq!(parsed(&t).to_bits(), reference(&t).to_bits(), "{t}");
                fast += scan(t.as_bytes(), 0).is_some_and(|(v, _)| v.is_some()) as usize;
            }
        }
        // The rest are tiny values that Rust prints without an exponent (10^q beyond 10^-22).
        assert!(
            fast > 1_100_000,
            "almost every number takes the fast path: {fast} of 1,200,000"
        );
    }

    #[test]
    fn short_decimals_round_exactly_like_fast_float() {
        for i in 0..200_000u32 {
            for t in [
                format!("{}.{:0w$}", i % 997, i, w = (i % 5) as usize + 1),
                format!("-0.{i:06}"),
            ] {
                assert_eq!(parsed(&t).to_bits(), reference(&t).to_bits(), "{t}");
            }
        }
    }

    #[test]
    fn values_on_and_next_to_f32_rounding_boundaries_are_exact() {
        // Halfway between two f32s, and one f64 ulp either side: where a careless f64 detour
        // double-rounds. Printed with 17+ digits so scan sees them.
        let mut s = 11;
        for _ in 0..20_000 {
            let f = f32::from_bits((lcg(&mut s) as u32 % 0x7e00_0000) | 0x0080_0000);
            let mid = (f as f64 + f32::from_bits(f.to_bits() + 1) as f64) / 2.0;
            for x in [
                mid,
                f64::from_bits(mid.to_bits() - 1),
                f64::from_bits(mid.to_bits() + 1),
            ] {
                for t in [format!("{x:.17e}"), format!("{x:e}")] {
                    assert_eq!(parsed(&t).to_bits(), reference(&t).to_bits(), "{t}");
                }
            }
        }
    }

    #[test]
    fn edge_values_parse_like_fast_float() {
        for t in [
            "0",
            "-0",
            "0.0",
            "1",
            "16777216",
            "16777217",
            "9007199254740993",
            "18446744073709551615",
            "99999999999999999999",
            "1e-45",
            "1.4e-45",
            "1e-40",
            "1.17549435e-38",
            "3.4028235e38",
            "3.4028236e38",
            "1e39",
            "-1e39",
            "1E+2",
            "1e-2",
            "0.1",
            "123456789.123456789",
            "0.000000000000000000001",
            "7e22",
            "7e23",
            "1e100000000",
        ] {
            assert_eq!(parsed(t).to_bits(), reference(t).to_bits(), "{t}");
        }
        assert_eq!(parsed("-0").to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn text_that_is_not_a_json_number_is_refused() {
        for t in [
            "", "-", ".5", "+1", "01", "-01", "1.", "1.e5", "1e", "1e+", "inf", "NaN", "-inf", "x1",
        ] {
            assert!(parse_f32(t.as_bytes(), 0).is_none(), "{t:?}");
        }
        // A number ends where the JSON around it goes on.
        assert_eq!(parse_f32(b"[0.5,", 1), Some((0.5, 4)));
        assert_eq!(parse_f32(b"12345678901]", 0), Some((12345678901.0, 11)));
    }
}
