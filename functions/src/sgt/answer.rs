//! `run_sgt_model`'s answer, `[[y, ...], ...]`, written straight into one buffer. Through
//! serde_json it was 13% of a 2-decimal run request's CPU: every one of a 1024-row answer's
//! 8,192 numbers went through its writer and a libc `memcpy` call of a dozen bytes, and zmij,
//! serde_json's formatter, takes 17.6 ns per f32 here against ryu's 12.4 (`--bench rows`).
//! Numbers between 1e-4 and 1e9, which is every output of a tanh-bounded model but the
//! smallest, are written with nine significant digits by [`digits`] (enough for any f32
//! to read back exactly) instead of ryu's shortest form; ryu writes the rest. A 1024x8 answer
//! took 135 µs this way against 176 µs with ryu for every number, in one run of
//! `--bench rows` (figures in BENCHMARKS.md).

/// 10^k for k in 0..=12, padded to 16 so that a masked index needs no bounds check: exact,
/// and any f32 times one of them is exact in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 0.0, 0.0, 0.0,
];
/// 10^j for j in -4..=9, the decade bounds of what [`digits`] takes, padded to 16. No
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
    let (mut at, mut column) = (1, 0);
    for group in values.chunks(8) {
        let digits = Eight::of(group);
        for (k, v) in group.iter().enumerate() {
            // Every number, and every row, is followed by a comma; the last one of each is
            // then written over by its closing bracket.
            if column == 0 {
                out[at] = b'[';
                at += 1;
            }
            let window: &mut [u8; WINDOW] = (&mut out[at..at + WINDOW]).try_into().unwrap();
            let n = write_number(window, *v, digits.get(k), &mut text);
            window[n] = b',';
            at += n + 1;
            column += 1;
            if column == width {
                out[at - 1] = b']';
                out[at] = b',';
                (at, column) = (at + 1, 0);
            }
        }
    }
    if column != 0 {
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

/// Writes `v`, whose nine digits are `digits` when it has them, at the start of `window` and
/// says how many bytes it takes (at most 16).
#[inline(always)]
fn write_number(window: &mut [u8; WINDOW], v: f32, digits: Option<Digits>, text: &mut ryu::Buffer) -> usize {
    if let Some(digits) = digits {
        place(digits, v.is_sign_negative(), window)
    } else if v.is_finite() {
        let s = text.format_finite(v).as_bytes();
        window[..s.len()].copy_from_slice(s);
        s.len()
    } else {
        window[..4].copy_from_slice(b"null");
        4
    }
}

/// The nine significant digits of an f32, correctly rounded, as [`place`] writes them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Digits {
    /// The nine digit characters, first digit in the lowest byte, then a '0' that an integer's
    /// ".0" may need.
    chars: u128,
    /// The decimal exponent of the first digit: 10^e <= |v| < 10^(e + 1).
    e: i32,
    /// How many of the nine are left once trailing zeros are dropped (at least one).
    significant: usize,
}

/// [`Digits`] of `v` when 1e-4 <= |v| < 1e9, `None` otherwise. Nine significant digits,
/// correctly rounded, read back as the same f32 for every f32. The rounding is exact: |v| has
/// 24 significant bits and 10^k for k <= 12 at most 29 more (5^12 < 2^28), so `|v| * 10^k` is
/// exact in an f64, and adding 2^52 rounds it to the nearest integer, ties to even, in the low
/// bits.
#[inline(always)]
fn digits(v: f32) -> Option<Digits> {
    let a = v.abs() as f64;
    if !(1e-4..1e9).contains(&a) {
        return None;
    }
    // 10^e <= a < 10^(e + 1): floor(log10 2^b) from a's binary exponent b is e or e - 1.
    let b = ((a.to_bits() >> 52) as i32) - 1023;
    let mut e = (b * 1233) >> 12;
    e += i32::from(a >= TEN_TO[(e + 5) as usize & 15]);
    let scaled = a * POW10[(8 - e) as usize & 15] + TWO_TO_52;
    let mut m = scaled.to_bits() & ((1 << 52) - 1);
    // Rounding up may carry into a tenth digit.
    if m == 1_000_000_000 {
        (m, e) = (100_000_000, e + 1);
    }
    debug_assert!((100_000_000..1_000_000_000).contains(&m), "{v:e}: {m}");
    let tail = eight_digits((m % 100_000_000) as u32);
    let first = (0x30 | (m / 100_000_000)) as u128;
    Some(Digits {
        chars: first | ((tail | 0x3030_3030_3030_3030) as u128) << 8 | 0x30 << 72,
        e,
        significant: 9 - tail.leading_zeros() as usize / 8,
    })
}

/// Adding it to a non-negative f64 below 2^52 leaves that number rounded to an integer in the
/// low 52 bits.
const TWO_TO_52: f64 = 4_503_599_627_370_496.0;

/// Writes `digits` as plain decimal text, trailing zeros dropped (`0.5`, `-12.25`,
/// `0.000123456791`), at the start of `window` and says how many bytes it takes.
#[inline(always)]
fn place(digits: Digits, negative: bool, window: &mut [u8; WINDOW]) -> usize {
    let Digits { chars, e, significant } = digits;
    // The sign is always stored and then kept or written over.
    let sign = usize::from(negative);
    window[0] = b'-';
    let text: &mut [u8; 26] = (&mut window[sign..sign + 26]).try_into().unwrap();
    let len = if e >= 0 {
        let point = e as usize + 1;
        text[..16].copy_from_slice(&chars.to_le_bytes());
        let rest = (chars >> (8 * point)) << 8 | b'.' as u128;
        text[point..point + 16].copy_from_slice(&rest.to_le_bytes());
        point + 1 + significant.saturating_sub(point).max(1)
    } else {
        // "0." and -e - 1 zeros, then the digits.
        let lead = 1 + (-e) as usize;
        text[..8].copy_from_slice(b"0.000000");
        text[lead..lead + 16].copy_from_slice(&chars.to_le_bytes());
        lead + significant
    };
    sign + len
}

/// [`Digits`] of eight values at once, as columns: the digit characters' low and high
/// halves, the exponents, and the significant counts, 0 where a value has no [`Digits`].
///
/// One value's digits are a chain of about 25 dependent operations (two table lookups, a
/// float multiply, four multiply-shift divisions), and one at a time they cost 15 ns a number
/// in a run answer, though the numbers do not depend on each other. With AVX-512 the same
/// chain runs for eight values in 8-lane vectors.
#[derive(Default)]
struct Eight {
    low: [u64; 8],
    high: [u64; 8],
    e: [i64; 8],
    significant: [u64; 8],
}

impl Eight {
    /// The digits of up to eight values.
    #[inline(always)]
    fn of(values: &[f32]) -> Eight {
        let mut padded = [0.0; 8];
        padded[..values.len()].copy_from_slice(values);
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { avx512::eight(&padded) };
        }
        let mut eight = Eight::default();
        for (k, v) in padded.iter().enumerate() {
            if let Some(d) = digits(*v) {
                eight.low[k] = d.chars as u64;
                eight.high[k] = (d.chars >> 64) as u64;
                eight.e[k] = d.e as i64;
                eight.significant[k] = d.significant as u64;
            }
        }
        eight
    }

    #[inline(always)]
    fn get(&self, k: usize) -> Option<Digits> {
        (self.significant[k] != 0).then(|| Digits {
            chars: self.low[k] as u128 | (self.high[k] as u128) << 64,
            e: self.e[k] as i32,
            significant: self.significant[k] as usize,
        })
    }
}

/// [`digits`] in 8-lane AVX-512 vectors, with the same operations in the same order, so every
/// lane gives what `digits` gives (the tests compare them). The divisions by 10^8 and 10^4 are
/// multiply-shifts exact for these ranges: m / 10^8 = m * 1441151881 >> 57 for m < 10^9, and
/// n / 10^4 = n * 109951163 >> 40 for n < 10^8.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Eight, POW10, TEN_TO, TWO_TO_52};

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512cd")
    }

    #[target_feature(enable = "avx512f,avx512dq,avx512cd")]
    pub(super) fn eight(values: &[f32; 8]) -> Eight {
        let all = |x: i64| _mm512_set1_epi64(x);
        // SAFETY: `values` holds the 8 floats read.
        let v = unsafe { _mm256_loadu_ps(values.as_ptr()) };
        let a = _mm512_abs_pd(_mm512_cvtps_pd(v));
        let in_range = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(a, _mm512_set1_pd(1e-4))
            & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(a, _mm512_set1_pd(1e9));
        let b = _mm512_sub_epi64(_mm512_srli_epi64::<52>(_mm512_castpd_si512(a)), all(1023));
        let mut e = _mm512_srai_epi64::<12>(_mm512_mullo_epi64(b, all(1233)));
        // A two-table permute reads the low four bits of each index: `& 15`.
        let lookup = |table: &[f64; 16], at: __m512i| {
            // SAFETY: `table` holds 16 f64s.
            let (lo, hi) = unsafe { (_mm512_loadu_pd(table.as_ptr()), _mm512_loadu_pd(table.as_ptr().add(8))) };
            _mm512_permutex2var_pd(lo, at, hi)
        };
        let up = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(a, lookup(&TEN_TO, _mm512_add_epi64(e, all(5))));
        e = _mm512_mask_add_epi64(e, up, e, all(1));
        let power = lookup(&POW10, _mm512_sub_epi64(all(8), e));
        let scaled = _mm512_add_pd(_mm512_mul_pd(a, power), _mm512_set1_pd(TWO_TO_52));
        let mut m = _mm512_and_si512(_mm512_castpd_si512(scaled), all((1 << 52) - 1));
        let carry = _mm512_cmpeq_epi64_mask(m, all(1_000_000_000));
        m = _mm512_mask_mov_epi64(m, carry, all(100_000_000));
        e = _mm512_mask_add_epi64(e, carry, e, all(1));
        let first = _mm512_srli_epi64::<57>(_mm512_mul_epu32(m, all(1_441_151_881)));
        let tail = eight_digits(_mm512_sub_epi64(m, _mm512_mul_epu32(first, all(100_000_000))));
        let significant = _mm512_sub_epi64(all(9), _mm512_srli_epi64::<3>(_mm512_lzcnt_epi64(tail)));
        let tail = _mm512_or_si512(tail, all(0x3030_3030_3030_3030));
        let mut eight = Eight::default();
        let store = |to: &mut [u64; 8], x: __m512i| {
            // SAFETY: `to` has room for 8 lanes.
            unsafe { _mm512_storeu_si512(to.as_mut_ptr().cast(), x) }
        };
        store(
            &mut eight.low,
            _mm512_or_si512(_mm512_or_si512(first, all(0x30)), _mm512_slli_epi64::<8>(tail)),
        );
        store(
            &mut eight.high,
            _mm512_or_si512(_mm512_srli_epi64::<56>(tail), all(0x30 << 8)),
        );
        // SAFETY: as above.
        unsafe { _mm512_storeu_si512(eight.e.as_mut_ptr().cast(), e) };
        store(&mut eight.significant, _mm512_maskz_mov_epi64(in_range, significant));
        eight
    }

    /// `super::eight_digits` in each lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn eight_digits(n: __m512i) -> __m512i {
        let all = |x: i64| _mm512_set1_epi64(x);
        let high = _mm512_srli_epi64::<40>(_mm512_mul_epu32(n, all(109_951_163)));
        let low = _mm512_sub_epi64(n, _mm512_mul_epu32(high, all(10_000)));
        let x = _mm512_or_si512(high, _mm512_slli_epi64::<32>(low));
        let hundreds = _mm512_and_si512(
            _mm512_srli_epi64::<20>(_mm512_mullo_epi64(x, all(10486))),
            all(0x0000_007f_0000_007f),
        );
        let x = _mm512_or_si512(
            hundreds,
            _mm512_slli_epi64::<16>(_mm512_sub_epi64(x, _mm512_mullo_epi64(hundreds, all(100)))),
        );
        let tens = _mm512_and_si512(
            _mm512_srli_epi64::<10>(_mm512_mullo_epi64(x, all(103))),
            all(0x000f_000f_000f_000f),
        );
        _mm512_or_si512(
            tens,
            _mm512_slli_epi64::<8>(_mm512_sub_epi64(x, _mm512_mullo_epi64(tens, all(10)))),
        )
    }
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

    /// `v` as [`rows_json`] writes a number that has [`Digits`].
    fn nine_digits(v: f32, window: &mut [u8; WINDOW]) -> Option<usize> {
        digits(v).map(|d| place(d, v.is_sign_negative(), window))
    }

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
    fn eight_at_once_give_the_digits_of_each_value_alone() {
        let mut s = 3u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s >> 32
        };
        // Any bit pattern, values of a tanh-bounded model, the decade bounds and the values
        // whose rounding carries into a tenth digit, in every lane.
        let mut values: Vec<f32> = (0..400_000)
            .map(|i| match i % 4 {
                0 => f32::from_bits(next() as u32),
                1 => (next() as f32 / u32::MAX as f32) * 2.0 - 1.0,
                2 => f32::from_bits(1e-4f32.to_bits() + (next() as u32) % (1e9f32.to_bits() - 1e-4f32.to_bits())),
                _ => -(next() as f32) * 1e-6,
            })
            .collect();
        for j in -5..=10 {
            let bound = 10f64.powi(j) as f32;
            for d in 0..40 {
                values.extend([f32::from_bits(bound.to_bits() + d), f32::from_bits(bound.to_bits() - d)]);
            }
        }
        values.extend([
            0.0,
            -0.0,
            999_999_940.0,
            0.999_999_99,
            f32::NAN,
            f32::INFINITY,
            f32::MIN_POSITIVE,
        ]);
        #[cfg(target_arch = "x86_64")]
        if !avx512::available() {
            eprintln!("no AVX-512 here: the scalar path is checked alone");
        }
        for group in values.chunks(8) {
            let eight = Eight::of(group);
            for (k, v) in group.iter().enumerate() {
                assert_eq!(eight.get(k), digits(*v), "{v:e} in lane {k}");
            }
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
