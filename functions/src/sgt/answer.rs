//! `run_sgt_model`'s answer, `[[y, ...], ...]`, written straight into one buffer. Through
//! serde_json it was 13% of a 2-decimal run request's CPU: every one of a 1024-row answer's
//! 8,192 numbers went through its writer and a libc `memcpy` call of a dozen bytes, and zmij,
//! serde_json's formatter, takes 17.6 ns per f32 here against ryu's 12.4 (`--bench rows`).

/// The rows of `values`, `width` to a row, as a JSON array of arrays; numbers in their
/// shortest round-trip form, and `null` for non-finite ones as serde_json writes them.
pub fn rows_json(values: &[f32], width: usize) -> Vec<u8> {
    let width = width.max(1);
    // A shortest f32 and its comma take at most 16 bytes; most take 11 or 12.
    let mut out = Vec::with_capacity(values.len() * 12 + values.len() / width * 3 + 2);
    let mut text = ryu::Buffer::new();
    out.push(b'[');
    for (r, row) in values.chunks(width).enumerate() {
        if r > 0 {
            out.push(b',');
        }
        out.push(b'[');
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            if v.is_finite() {
                push_short(&mut out, text.format_finite(*v).as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        out.push(b']');
    }
    out.push(b']');
    out
}

/// Appends `s` (at most 16 bytes) with fixed-size moves: two overlapping 8- or 4-byte
/// copies into a scratch block, which is appended whole and cut back, instead of a call.
#[inline(always)]
fn push_short(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    debug_assert!(n <= 16);
    let mut block = [0u8; 16];
    if n >= 8 {
        block[..8].copy_from_slice(&s[..8]);
        block[n - 8..n].copy_from_slice(&s[n - 8..]);
    } else if n >= 4 {
        block[..4].copy_from_slice(&s[..4]);
        block[n - 4..n].copy_from_slice(&s[n - 4..]);
    } else {
        for (d, b) in block.iter_mut().zip(s) {
            *d = *b;
        }
    }
    let len = out.len();
    out.extend_from_slice(&block);
    out.truncate(len + n);
}

#[cfg(test)]
mod tests {
    use super::*;

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
