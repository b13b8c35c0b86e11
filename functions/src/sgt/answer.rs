//! `run_sgt_model`'s answer, `[[y, ...], ...]`, written straight into one buffer. Through
//! serde_json it was 13% of a 2-decimal run request's CPU: every one of a 1024-row answer's
//! 8,192 numbers went through its writer and a libc `memcpy` call of a dozen bytes, and zmij,
//! serde_json's formatter, takes 17.6 ns per f32 here against ryu's 12.4 (`--bench rows`).
//! Numbers between 1e-4 and 1e9, which is every output of a tanh-bounded model but the
//! smallest, are written with nine significant digits by [`nine_digits`] (enough for any f32
//! to read back exactly) instead of ryu's shortest form; ryu writes the rest. A 1024x8 answer
//! took 135 µs this way against 176 µs with ryu for every number, in one run of
//! `--bench rows` (figures in BENCHMARKS.md).

/// 10^k for k in 0..=12, padded to 16 so that a masked index needs no bounds check: exact,
/// and any f32 times one of them is exact in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 0.0, 0.0, 0.0,
];
/// 10^j for j in -4..=9, the decade bounds of what [`nine_digits`] writes, padded to 16. No
/// f32 lies between a negative power of ten and its nearest f64 (that f64 would have to fit
/// in 24 bits), so comparing an f32 with these decides its decade exactly; the test walks
/// every f32 near each bound.
const TEN_TO: [f64; 16] = [
    1e-4,
    1e-3,
    1e-2,
    1e-1,
    1e0,
    1e1,
    1e2,
    1e3,
    1e4,
    1e5,
    1e6,
    1e7,
    1e8,
    1e9,
    f64::INFINITY,
    f64::INFINITY,
];

/// The rows of `values`, `width` to a row, as a JSON array of arrays; numbers in a form that
/// reads back as the same f32, and `null` for non-finite ones as serde_json writes them.
pub fn rows_json(values: &[f32], width: usize) -> Vec<u8> {
    if values.is_empty() {
        return b"[]".to_vec();
    }
    let width = width.max(1);
    let rows = values.len().div_ceil(width);
    // A number and its comma take at most 17 bytes, and each number is written through a
    // window of `WINDOW` bytes, so the buffer is sized once and cut back at the end.
    let mut out = vec![0u8; values.len() * 17 + rows * 3 + 2 + WINDOW];
    let mut text = ryu::Buffer::new();
    out[0] = b'[';
    let mut at = 1;
    for row in values.chunks(width) {
        // Every number, and the row, is followed by a comma; the last one of each is then
        // written over by its closing bracket.
        out[at] = b'[';
        at += 1;
        for v in row {
            let window: &mut [u8; WINDOW] = (&mut out[at..at + WINDOW]).try_into().unwrap();
            let n = write_number(window, *v, &mut text);
            window[n] = b',';
            at += n + 1;
        }
        out[at - 1] = b']';
        out[at] = b',';
        at += 1;
    }
    out[at - 1] = b']';
    out.truncate(at);
    out
}

/// How many bytes a number may touch: whole 8- and 16-byte stores past its end are cheaper
/// than stores cut to its length.
const WINDOW: usize = 32;

/// Writes `v` at the start of `window` and says how many bytes it takes (at most 16).
#[inline(always)]
fn write_number(window: &mut [u8; WINDOW], v: f32, text: &mut ryu::Buffer) -> usize {
    if let Some(n) = nine_digits(v, window) {
        n
    } else if v.is_finite() {
        let s = text.format_finite(v).as_bytes();
        window[..s.len()].copy_from_slice(s);
        s.len()
    } else {
        window[..4].copy_from_slice(b"null");
        4
    }
}

/// Writes `v` as plain decimal text with nine significant digits, trailing zeros dropped
/// (`0.5`, `-12.25`, `0.000123456791`), at the start of `window` and says how many bytes it
/// takes; `None`, with nothing that counts written, unless 1e-4 <= |v| < 1e9. Nine
/// significant digits, correctly rounded, read back as the same f32 for every f32. The
/// rounding is exact: |v| has 24 significant bits and 10^k for k <= 12 at most 29 more
/// (5^12 < 2^28), so `|v| * 10^k` is exact in an f64, and adding 2^52 rounds it to the
/// nearest integer, ties to even, in the low bits.
#[inline(always)]
fn nine_digits(v: f32, window: &mut [u8; WINDOW]) -> Option<usize> {
    let a = v.abs() as f64;
    if !(1e-4..1e9).contains(&a) {
        return None;
    }
    // 10^e <= a < 10^(e + 1): floor(log10 2^b) from a's binary exponent b is e or e - 1.
    let b = ((a.to_bits() >> 52) as i32) - 1023;
    let mut e = (b * 1233) >> 12;
    e += i32::from(a >= TEN_TO[(e + 5) as usize & 15]);
    let scaled = a * POW10[(8 - e) as usize & 15] + 4_503_599_627_370_496.0;
    let mut m = scaled.to_bits() & ((1 << 52) - 1);
    // Rounding up may carry into a tenth digit.
    if m == 1_000_000_000 {
        (m, e) = (100_000_000, e + 1);
    }
    debug_assert!((100_000_000..1_000_000_000).contains(&m), "{v:e}: {m}");
    let tail = eight_digits((m % 100_000_000) as u32);
    let significant = 9 - tail.leading_zeros() as usize / 8;
    // Nine digit characters, then a '0' that an integer's ".0" may need.
    let first = (0x30 | (m / 100_000_000)) as u128;
    let digits = first | ((tail | 0x3030_3030_3030_3030) as u128) << 8 | 0x30 << 72;
    // The sign is always stored and then kept or written over.
    let sign = usize::from(v.is_sign_negative());
    window[0] = b'-';
    let text: &mut [u8; 26] = (&mut window[sign..sign + 26]).try_into().unwrap();
    let len = if e >= 0 {
        let point = e as usize + 1;
        text[..16].copy_from_slice(&digits.to_le_bytes());
        let rest = (digits >> (8 * point)) << 8 | b'.' as u128;
        text[point..point + 16].copy_from_slice(&rest.to_le_bytes());
        point + 1 + significant.saturating_sub(point).max(1)
    } else {
        // "0." and -e - 1 zeros, then the digits.
        let lead = 1 + (-e) as usize;
        text[..8].copy_from_slice(b"0.000000");
        text[lead..lead + 16].copy_from_slice(&digits.to_le_bytes());
        lead + significant
    };
    Some(sign + len)
}

/// The decimal digits of `n` < 10^8 as eight bytes 0..=9, most significant first in memory
/// (little-endian): halves, quarters and digits split in parallel lanes of one u64, with
/// multiply-shift divisions exact for these ranges (x/100 = x*10486>>20 for x < 10^4,
/// x/10 = x*103>>10 for x < 100).
#[inline(always)]
fn eight_digits(n: u32) -> u64 {
    let x = (n / 10_000) as u64 | ((n % 10_000) as u64) << 32;
    let hundreds = ((x * 10486) >> 20) & 0x0000_007f_0000_007f;
    let x = hundreds | (x - hundreds * 100) << 16;
    let tens = ((x * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | (x - tens * 10) << 8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nine_digits` should write for `v`, by way of std's exact formatting: `{:.8e}` is
    /// the correctly rounded nine significant digits. Only where `|v| * 10^k` ends in exactly
    /// .5 may the two round differently (std to even, `nine_digits` up).
    fn nine_digits_agree(v: f32) {
        let mut window = [0; WINDOW];
        let n = nine_digits(v, &mut window).unwrap_or_else(|| panic!("{v:e} is in range"));
        let text = String::from_utf8(window[..n].to_vec()).unwrap();
        assert_eq!(
            text.parse::<f32>().map(f32::to_bits),
            Ok(v.to_bits()),
            "{text} for {v:e}"
        );
        assert!(text.contains('.') && !text.contains('e'), "{text}");
        assert!(
            !text.ends_with('0') || text.ends_with(".0"),
            "{text} keeps a trailing zero"
        );
        let std: f64 = format!("{:.8e}", v as f64).parse().unwrap();
        let ours: f64 = text.parse().unwrap();
        let scaled = (v.abs() as f64) * 10f64.powi(8 - (v.abs() as f64).log10().floor() as i32);
        assert!(ours == std || scaled.fract() == 0.5, "{text} against {std:e} for {v:e}");
    }

    #[test]
    fn nine_digits_are_the_correctly_rounded_significant_digits_of_every_f32_it_takes() {
        // Every f32 within 3000 steps of each decade bound, where the exponent is decided.
        for j in -4..=9 {
            let bound = 10f64.powi(j) as f32;
            let (mut up, mut down) = (bound, bound);
            for _ in 0..3000 {
                for v in [up, down, -up, -down] {
                    let a = v.abs() as f64;
                    if (1e-4..1e9).contains(&a) {
                        nine_digits_agree(v);
                    } else {
                        assert_eq!(nine_digits(v, &mut [0; WINDOW]), None, "{v:e}");
                    }
                }
                (up, down) = (f32::from_bits(up.to_bits() + 1), f32::from_bits(down.to_bits() - 1));
            }
        }
        // And half a million others across the whole range.
        let (lo, hi) = (1e-4f32.to_bits(), 1e9f32.to_bits());
        let mut s = 11u64;
        for _ in 0..500_000 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = f32::from_bits(lo + ((s >> 33) as u32) % (hi - lo));
            nine_digits_agree(if s & 1 == 0 { v } else { -v });
        }
        for v in [
            0.5,
            0.25,
            1.0,
            2.0,
            100.0,
            123_456_790.0,
            999_999_940.0,
            0.1,
            0.9,
            1e-4,
            0.000_999_999_9,
        ] {
            if (1e-4..1e9).contains(&(v as f64)) {
                nine_digits_agree(v);
            }
        }
        for v in [0.0, -0.0, 9.9e-5, 1e9, 3e38, f32::NAN, f32::INFINITY] {
            assert_eq!(nine_digits(v, &mut [0; WINDOW]), None, "{v:e}");
        }
    }

    #[test]
    fn answers_read_back_as_the_same_f32_bits_with_null_for_non_finite_values() {
        let mut s = 5u64;
        let mut values: Vec<f32> = (0..20_000)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                match i % 5 {
                    // Any bit pattern: every length from "0.0" to "-1.1754944e-38", and NaN/inf.
                    0 => f32::from_bits((s >> 32) as u32),
                    1 => ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0,
                    2 => (s >> 60) as f32,
                    3 => ((s >> 40) as f32).powi(3) * 1e-30,
                    _ => -((s >> 50) as f32) / 8.0,
                }
            })
            .collect();
        values.extend([
            0.0,
            -0.0,
            1.0,
            1e-45,
            f32::MAX,
            f32::MIN,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.1,
        ]);
        for width in [1, 3, 8, 10] {
            let text = rows_json(&values, width);
            let back: Vec<Vec<Option<f32>>> = serde_json::from_slice(&text).unwrap();
            let want: Vec<Vec<Option<u32>>> = values
                .chunks(width)
                .map(|r| r.iter().map(|v| v.is_finite().then_some(v.to_bits())).collect())
                .collect();
            let got: Vec<Vec<Option<u32>>> = back
                .iter()
                .map(|r| r.iter().map(|v| v.map(f32::to_bits)).collect())
                .collect();
            assert_eq!(got, want, "width {width}");
        }
        assert_eq!(rows_json(&[], 3), b"[]");
        assert_eq!(rows_json(&[0.5, -2.0, 1e-7], 2), b"[[0.5,-2.0],[1e-7]]");
    }
}
