//! Numbers whose digits [`super::rows_avx2`] has found, turned into `f32`s eight at a time.
//!
//! The AVX2 reader leaves each number as a vector of its digit values and a power of ten. One
//! at a time, the rest (digit pairs, fours and eights, the `u64`, the scaling and its rounding
//! check) was about 30 instructions a number, through a chain of a dozen dependent steps. With
//! AVX-512, two numbers' digits share each step of the multiply-add chain and eight numbers
//! share the conversion, the scaling and the check. On a CPU without AVX-512 each number takes
//! the one-at-a-time path; the tests check both against the portable reader.

use std::arch::x86_64::*;

use super::number::{parse_f32, scale};

/// Up to eight numbers read but not yet converted, in the order they came.
pub(super) struct DigitBatch {
    /// Each number's digit values at bytes 5..24, zero elsewhere: its 19-digit `u64` is the
    /// bytes read as decimal digits.
    digits: [__m256i; 8],
    /// The power of ten that the 19-digit `u64` is scaled by.
    q: [i64; 8],
    /// Sign bits, in place for an f64 (`1 << 63` for a negative number).
    sign: [u64; 8],
    /// Where each number's text starts, for [`parse_f32`] when `scale` cannot decide it.
    start: [usize; 8],
    len: usize,
    wide: bool,
}

impl DigitBatch {
    /// An empty batch; `wide` when AVX-512 may be used (the caller checks the CPU).
    #[target_feature(enable = "avx2")]
    pub(super) fn new(wide: bool) -> Self {
        DigitBatch {
            digits: [_mm256_setzero_si256(); 8],
            q: [0; 8],
            sign: [0; 8],
            start: [0; 8],
            len: 0,
            wide,
        }
    }

    /// Adds a number, `digits` as above, whose value is `±u64 * 10^q`, and whose text starts at
    /// `s[start]`. Converts the batch into `out` once it holds eight.
    #[inline(always)]
    pub(super) fn push(
        &mut self,
        (digits, q, negative): (__m256i, i64, bool),
        start: usize,
        s: &[u8],
        out: &mut Vec<f32>,
    ) -> Option<()> {
        let k = self.len & 7;
        self.digits[k] = digits;
        self.q[k] = q;
        self.sign[k] = (negative as u64) << 63;
        self.start[k] = start;
        self.len = k + 1;
        if self.len == 8 {
            return self.flush(s, out);
        }
        Some(())
    }

    /// Converts every number in the batch into `out`, in order; `None` when one is not a
    /// number after all (which [`parse_f32`] finds).
    #[inline(always)]
    pub(super) fn flush(&mut self, s: &[u8], out: &mut Vec<f32>) -> Option<()> {
        let len = std::mem::take(&mut self.len);
        if len == 0 {
            return Some(());
        }
        let mut values = [0.0f32; 8];
        // The numbers that `scale` could not decide: read again whole.
        let failed = if self.wide {
            // SAFETY: `wide` is only set where the CPU has AVX-512 F, BW and DQ.
            unsafe { self.convert_avx512(&mut values) }
        } else {
            self.convert_each(&mut values[..len])
        };
        let mut failed = failed & (0xff >> (8 - len));
        while failed != 0 {
            let k = failed.trailing_zeros() as usize;
            failed &= failed - 1;
            values[k] = parse_f32(s, self.start[k])?.0;
        }
        // A whole batch as a fixed-size copy: a copy of a variable length is a `memcpy` call.
        match len {
            8 => out.extend_from_slice(&values),
            _ => out.extend_from_slice(&values[..len]),
        }
        Some(())
    }

    /// What [`scale`] gives for the first `values.len()` numbers, one at a time; the bits of
    /// those it could not decide are set in the answer.
    #[inline(always)]
    fn convert_each(&self, values: &mut [f32]) -> u8 {
        let mut failed = 0;
        for (k, value) in values.iter_mut().enumerate() {
            // SAFETY: batches are only built by the AVX2 reader, on CPUs with AVX2.
            let w = unsafe { digits_value(self.digits[k]) };
            match i64::try_from(w)
                .ok()
                .and_then(|w| scale(w as f64, self.q[k], self.sign[k] != 0))
            {
                Some(v) => *value = v,
                None => failed |= 1 << k,
            }
        }
        failed
    }

    /// [`Self::convert_each`] for all eight numbers at once, with the same operations in the
    /// same order as `digits_value` and `scale`, so every number it decides gets the same `f32`.
    /// Its `u64` to `f64` conversion takes any `u64`, where `convert_each` leaves those of 2^63
    /// and more undecided; both are correctly rounded, so they agree wherever both decide.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq")]
    fn convert_avx512(&self, values: &mut [f32; 8]) -> u8 {
        let all = |x: i64| _mm512_set1_epi64(x);
        let low32 = all(0xffff_ffff);
        // Two numbers to a vector: each 256-bit half goes through `digits_value`'s steps,
        // which leave its digits in three groups of eight: g0 | g1 << 32 in its first 64-bit
        // lane and g2 in its third.
        let pair = |k: usize| {
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(self.digits[k]), self.digits[k + 1]);
            let pairs = _mm512_maddubs_epi16(z, _mm512_set1_epi16(0x010a));
            let fours = _mm512_madd_epi16(pairs, _mm512_set1_epi32(0x0001_0064));
            let fours = _mm512_packus_epi32(fours, fours);
            let eights = _mm512_madd_epi16(fours, _mm512_set1_epi32(0x0001_2710));
            let high = _mm512_add_epi64(
                _mm512_mul_epu32(eights, all(100_000_000)),
                _mm512_srli_epi64::<32>(eights),
            );
            let g2 = _mm512_and_si512(_mm512_alignr_epi64::<2>(eights, eights), low32);
            // The 19-digit u64 of the first number in lane 0, of the second in lane 4.
            _mm512_add_epi64(_mm512_mullo_epi64(high, all(100_000_000)), g2)
        };
        let (p0, p1, p2, p3) = (pair(0), pair(2), pair(4), pair(6));
        let lanes_0_and_4 = _mm512_setr_epi64(0, 4, 8, 12, 0, 4, 8, 12);
        let first = _mm512_permutex2var_epi64(p0, lanes_0_and_4, p1);
        let second = _mm512_permutex2var_epi64(p2, lanes_0_and_4, p3);
        let w = _mm512_inserti64x4::<1>(first, _mm512_castsi512_si256(second));
        // SAFETY: the arrays hold 8 lanes each.
        let (q, sign) = unsafe {
            (
                _mm512_loadu_si512(self.q.as_ptr().cast()),
                _mm512_loadu_si512(self.sign.as_ptr().cast()),
            )
        };
        // 10^q from the first 32 entries of `scale`'s table: q + 22 in 0..32.
        let at = _mm512_add_epi64(q, all(22));
        let in_table = _mm512_cmplt_epu64_mask(at, all(32));
        let power = {
            let table = super::number::POW10.as_ptr();
            // SAFETY: the table has 45 entries; these read the first 32.
            let (t0, t1, t2, t3) = unsafe {
                (
                    _mm512_loadu_pd(table),
                    _mm512_loadu_pd(table.add(8)),
                    _mm512_loadu_pd(table.add(16)),
                    _mm512_loadu_pd(table.add(24)),
                )
            };
            let upper = _mm512_test_epi64_mask(at, all(16));
            _mm512_mask_blend_pd(
                upper,
                _mm512_permutex2var_pd(t0, at, t1),
                _mm512_permutex2var_pd(t2, at, t3),
            )
        };
        let power = _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(power), sign));
        let r = _mm512_mul_pd(_mm512_cvtepu64_pd(w), power);
        // `scale`'s check: the 29 bits that f32 drops are within 4 of a half, or the value is
        // below f32's normal range and not zero.
        let bits = _mm512_castpd_si512(r);
        let dropped = _mm512_and_si512(bits, all((1 << 29) - 1));
        let near_half = _mm512_cmple_epu64_mask(_mm512_abs_epi64(_mm512_sub_epi64(dropped, all(1 << 28))), all(4));
        let tiny = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_abs_pd(r), _mm512_set1_pd(f32::MIN_POSITIVE as f64))
            & _mm512_test_epi64_mask(w, w);
        // SAFETY: `values` holds 8 f32s.
        unsafe { _mm256_storeu_ps(values.as_mut_ptr(), _mm512_cvtpd_ps(r)) };
        !in_table | near_half | tiny
    }
}

/// A number's digit values, as [`DigitBatch`] holds them, as one `u64`.
#[inline]
#[target_feature(enable = "avx2")]
fn digits_value(d: __m256i) -> u64 {
    // Pairs, then groups of four, then of eight digits.
    let pairs = _mm256_maddubs_epi16(d, _mm256_set1_epi16(0x010a));
    let fours = _mm256_madd_epi16(pairs, _mm256_set1_epi32(0x0001_0064));
    let fours = _mm256_packus_epi32(fours, fours);
    let eights = _mm256_madd_epi16(fours, _mm256_set1_epi32(0x0001_2710));
    let lo = _mm_cvtsi128_si64(_mm256_castsi256_si128(eights)) as u64;
    let hi = _mm_cvtsi128_si64(_mm256_extracti128_si256::<1>(eights)) as u64;
    (lo & 0xffff_ffff) * 10_000_000_000_000_000 + (lo >> 32) * 100_000_000 + (hi & 0xffff_ffff)
}
