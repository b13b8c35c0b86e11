//! Int8 weights with an f32 scale per 32 values (Q8_0's blocks, scales kept as f32), and their
//! matmul against activations quantized the same way: the kernel for generated tokens.
//!
//! Why our own: candle's Q8_0 dot product spends about 13 instructions on every 32 products
//! (two `sign`s, `maddubs`, `madd`, a convert, an FMA, and two f16 scale conversions), and it
//! repeats all of them for every row of a batch. Here a weight block's work (its absolute
//! values, its signs, its scale) is done once for up to four rows, and with AVX-512 VNNI one
//! `vpdpbusd` does 64 products without saturation: about 7 instructions per 64 products and
//! row. The result of every output element depends only on its own row and column, computed
//! by the same instructions whatever else is in the batch, so batching changes no result.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Values per block, as in Q8_0.
pub const BLOCK: usize = 32;
/// Rows of activations that share one pass over the weight.
const ROWS_PER_PASS: usize = 4;

/// A `[rows, cols]` weight, `cols` a multiple of [`BLOCK`].
///
/// Rows are stored in pairs of blocks whose 4-byte groups alternate (block `2p` group 0, block
/// `2p + 1` group 0, block `2p` group 1, ...), so that one 64-byte load covers two blocks and
/// the 32-bit lanes of a dot product alternate between them: one broadcast of the two scales
/// then fits every lane. A row with an odd number of blocks gets one zero block.
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// Blocks per row, padded to even.
    nb: usize,
    qs: Vec<i8>,
    scales: Vec<f32>,
}

/// Activations quantized the same way: `qs` `[m, nb * BLOCK]`, `scales` `[m, nb]`.
struct Quantized {
    m: usize,
    qs: Vec<i8>,
    scales: Vec<f32>,
}

/// One block as Q8_0 does it: the scale is its largest magnitude over 127, and each value is
/// rounded to the nearest multiple of it. `None` (the padding block) is all zero.
fn quantize_block(block: Option<&[f32]>) -> ([i8; BLOCK], f32) {
    let mut q = [0i8; BLOCK];
    let Some(block) = block else { return (q, 0.0) };
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in q.iter_mut().zip(block) {
        *q = (v * inv).round() as i8;
    }
    (q, d)
}

/// One row, padded to `nb` blocks and pair-interleaved (see [`Q8Matrix`]).
fn quantize_row(values: &[f32], nb: usize, qs: &mut Vec<i8>, scales: &mut Vec<f32>) {
    let mut blocks = values.chunks_exact(BLOCK);
    for _ in 0..nb / 2 {
        let (even, d_even) = quantize_block(blocks.next());
        let (odd, d_odd) = quantize_block(blocks.next());
        for g in 0..BLOCK / 4 {
            qs.extend_from_slice(&even[g * 4..g * 4 + 4]);
            qs.extend_from_slice(&odd[g * 4..g * 4 + 4]);
        }
        scales.extend_from_slice(&[d_even, d_odd]);
    }
}

fn quantize(values: &[f32], cols: usize, nb: usize) -> (Vec<i8>, Vec<f32>) {
    let rows = values.len() / cols;
    let mut qs = Vec::with_capacity(rows * nb * BLOCK);
    let mut scales = Vec::with_capacity(rows * nb);
    for row in values.chunks_exact(cols) {
        quantize_row(row, nb, &mut qs, &mut scales);
    }
    (qs, scales)
}

impl Q8Matrix {
    /// Quantizes a dense `[rows, cols]` f32 weight.
    pub fn quantize(w: &Tensor) -> candle_core::Result<Q8Matrix> {
        let (rows, cols) = w.dims2()?;
        if !cols.is_multiple_of(BLOCK) {
            candle_core::bail!("a Q8 weight needs columns in multiples of {BLOCK}, not {cols}");
        }
        let nb = (cols / BLOCK).next_multiple_of(2);
        let values = w.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (qs, scales) = quantize(&values, cols, nb);
        Ok(Q8Matrix {
            rows,
            cols,
            nb,
            qs,
            scales,
        })
    }

    pub fn bytes(&self) -> u64 {
        (self.qs.len() + self.scales.len() * 4) as u64
    }

    fn quantize_activations(&self, x: &Tensor) -> candle_core::Result<Quantized> {
        let (m, cols) = x.dims2()?;
        if cols != self.cols {
            candle_core::bail!("matmul of [{m}, {cols}] with a weight of {} columns", self.cols);
        }
        let values = x.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (qs, scales) = quantize(&values, cols, self.nb);
        Ok(Quantized { m, qs, scales })
    }

    /// `x @ Wᵀ` for `x` `[m, cols]`, the weight's rows split across the current Rayon pool.
    pub fn matmul(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let xq = self.quantize_activations(x)?;
        let m = xq.m;
        let kernel = Kernel::detect();
        let per = self.rows.div_ceil(rayon::current_num_threads().max(1)).max(1);
        // Each part: weight rows [start, start + n) against every activation row, `[m, n]`.
        let parts: Vec<(usize, Vec<f32>)> = (0..self.rows)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let n = per.min(self.rows - start);
                (start, self.rows_times(kernel, start..start + n, &xq))
            })
            .collect();
        let mut out = vec![0f32; m * self.rows];
        for (start, part) in parts {
            let n = part.len() / m.max(1);
            for i in 0..m {
                out[i * self.rows + start..i * self.rows + start + n].copy_from_slice(&part[i * n..(i + 1) * n]);
            }
        }
        Tensor::from_vec(out, (m, self.rows), &Device::Cpu)
    }

    /// Weight rows `rows` against every activation row, [`ROWS_PER_PASS`] at a time: `[m, n]`.
    fn rows_times(&self, kernel: Kernel, rows: std::ops::Range<usize>, x: &Quantized) -> Vec<f32> {
        let (width, nb, n) = (self.nb * BLOCK, self.nb, rows.len());
        let w = &self.qs[rows.start * width..rows.end * width];
        let ws = &self.scales[rows.start * nb..rows.end * nb];
        let mut out = vec![0f32; x.m * n];
        let mut dots = vec![[0f32; ROWS_PER_PASS]; n];
        let mut i = 0;
        while i < x.m {
            let k = ROWS_PER_PASS.min(x.m - i);
            let xs: Vec<(&[i8], &[f32])> = (i..i + k)
                .map(|row| {
                    (
                        &x.qs[row * width..(row + 1) * width],
                        &x.scales[row * nb..(row + 1) * nb],
                    )
                })
                .collect();
            kernel.dots(w, ws, nb, &xs, &mut dots);
            for (r, d) in dots.iter().enumerate() {
                for (j, v) in d.iter().take(k).enumerate() {
                    out[(i + j) * n + r] = *v;
                }
            }
            i += k;
        }
        out
    }
}

/// The instruction set the dot products run on, chosen once at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

#[cfg(target_arch = "x86_64")]
fn avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vnni")
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static KERNEL: OnceLock<Kernel> = OnceLock::new();
            *KERNEL.get_or_init(|| {
                if avx512_vnni() {
                    Kernel::Avx512Vnni
                } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    Kernel::Avx2
                } else {
                    Kernel::Portable
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Portable
    }

    /// For each weight row of `w` (`nb` blocks each, scales `ws`), its dot products with each
    /// of `xs` (1 to 4 rows), into `out[row][j]`.
    fn dots(self, w: &[i8], ws: &[f32], nb: usize, xs: &[(&[i8], &[f32])], out: &mut [[f32; ROWS_PER_PASS]]) {
        assert!(!xs.is_empty() && xs.len() <= ROWS_PER_PASS && nb.is_multiple_of(2));
        assert!(w.len() == out.len() * nb * BLOCK && ws.len() == out.len() * nb);
        assert!(xs.iter().all(|(q, d)| q.len() == nb * BLOCK && d.len() == nb));
        match self {
            // Safety: the features were detected at run time, and the sizes checked above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::dots_avx512_vnni(w, ws, nb, xs, out) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::dots_avx2(w, ws, nb, xs, out) },
            Kernel::Portable => portable_dots(w, ws, nb, xs, out),
        }
    }
}

fn portable_dots(w: &[i8], ws: &[f32], nb: usize, xs: &[(&[i8], &[f32])], out: &mut [[f32; ROWS_PER_PASS]]) {
    let width = nb * BLOCK;
    for (r, o) in out.iter_mut().enumerate() {
        let (wr, wsr) = (&w[r * width..(r + 1) * width], &ws[r * nb..(r + 1) * nb]);
        for (slot, (xq, xd)) in o.iter_mut().zip(xs) {
            let mut sums = vec![0i32; nb];
            // 4-byte groups alternate between the two blocks of each pair.
            for (g, (wg, xg)) in wr.chunks_exact(4).zip(xq.chunks_exact(4)).enumerate() {
                let block = (g / 16) * 2 + g % 2;
                sums[block] += wg.iter().zip(xg).map(|(&a, &c)| a as i32 * c as i32).sum::<i32>();
            }
            *slot = sums.iter().enumerate().map(|(b, &s)| s as f32 * (wsr[b] * xd[b])).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, ROWS_PER_PASS};

    /// `[a, b]` of `scales` at block `b` broadcast to every lane pair: the scales of a block
    /// pair, in the order its lanes alternate.
    #[inline(always)]
    unsafe fn pair_scales_512(scales: &[f32], b: usize) -> __m512 {
        _mm512_castpd_ps(_mm512_set1_pd(std::ptr::read_unaligned(
            scales.as_ptr().add(b) as *const f64
        )))
    }

    /// Two blocks (64 values) per step: `|w|` and `w`'s signs once, then per activation row
    /// the signs moved onto `x`, one `vpdpbusd` (unsigned × signed, 4 products per 32-bit
    /// lane, no saturation), a convert and an FMA with the blocks' scales.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni")]
    pub unsafe fn dots_avx512_vnni(
        w: &[i8],
        ws: &[f32],
        nb: usize,
        xs: &[(&[i8], &[f32])],
        out: &mut [[f32; ROWS_PER_PASS]],
    ) {
        let width = nb * BLOCK;
        let zero = _mm512_setzero_si512();
        for (r, o) in out.iter_mut().enumerate() {
            let wr = w.as_ptr().add(r * width);
            let wsr = &ws[r * nb..];
            let mut acc = [_mm512_setzero_ps(); ROWS_PER_PASS];
            for b in (0..nb).step_by(2) {
                let wv = _mm512_loadu_si512(wr.add(b * BLOCK) as *const __m512i);
                let wabs = _mm512_abs_epi8(wv);
                let negative = _mm512_movepi8_mask(wv);
                let wscale = pair_scales_512(wsr, b);
                for (a, (xq, xd)) in acc.iter_mut().zip(xs) {
                    let xv = _mm512_loadu_si512(xq.as_ptr().add(b * BLOCK) as *const __m512i);
                    let signed = _mm512_mask_sub_epi8(xv, negative, zero, xv);
                    let dot = _mm512_dpbusd_epi32(zero, wabs, signed);
                    let scale = _mm512_mul_ps(wscale, pair_scales_512(xd, b));
                    *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *a);
                }
            }
            for (slot, a) in o.iter_mut().zip(&acc).take(xs.len()) {
                *slot = _mm512_reduce_add_ps(*a);
            }
        }
    }

    /// The same two blocks as two 32-byte halves, with `maddubs` and `madd` for `vpdpbusd`:
    /// `|w|` is at most 127, so the pairs of 16-bit products cannot saturate.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_avx2(w: &[i8], ws: &[f32], nb: usize, xs: &[(&[i8], &[f32])], out: &mut [[f32; ROWS_PER_PASS]]) {
        let width = nb * BLOCK;
        let ones = _mm256_set1_epi16(1);
        for (r, o) in out.iter_mut().enumerate() {
            let wr = w.as_ptr().add(r * width);
            let wsr = &ws[r * nb..];
            let mut acc = [_mm256_setzero_ps(); ROWS_PER_PASS];
            for b in (0..nb).step_by(2) {
                let wscale = _mm256_castpd_ps(_mm256_set1_pd(std::ptr::read_unaligned(
                    wsr.as_ptr().add(b) as *const f64
                )));
                for half in 0..2 {
                    let wv = _mm256_loadu_si256(wr.add(b * BLOCK + half * 32) as *const __m256i);
                    let wabs = _mm256_sign_epi8(wv, wv);
                    for (a, (xq, xd)) in acc.iter_mut().zip(xs) {
                        let xv = _mm256_loadu_si256(xq.as_ptr().add(b * BLOCK + half * 32) as *const __m256i);
                        let signed = _mm256_sign_epi8(xv, wv);
                        let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, signed), ones);
                        let xscale = _mm256_castpd_ps(_mm256_set1_pd(std::ptr::read_unaligned(
                            xd.as_ptr().add(b) as *const f64
                        )));
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(wscale, xscale), *a);
                    }
                }
            }
            for (slot, a) in o.iter_mut().zip(&acc).take(xs.len()) {
                let s = _mm_add_ps(_mm256_castps256_ps128(*a), _mm256_extractf128_ps(*a, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                *slot = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A fixed spread of magnitudes and signs, some blocks all zero.
        (0..n)
            .map(|i| {
                let i = i as u32;
                if (i / BLOCK as u32) % 7 == 3 {
                    return 0.0;
                }
                let h = i.wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) >> 8;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The exact value of the quantized product, in f64, from the values in logical order
    /// (`quantize_row` with one block per "pair" would not interleave; undo it instead).
    fn reference(w: &Q8Matrix, x: &Quantized, i: usize, r: usize) -> f64 {
        let (nb, width) = (w.nb, w.nb * BLOCK);
        let plain = |qs: &[i8]| -> Vec<i8> {
            let mut out = vec![0i8; qs.len()];
            for (g, group) in qs.chunks_exact(4).enumerate() {
                let block = (g / 16) * 2 + g % 2;
                let at = block * BLOCK + ((g % 16) / 2) * 4;
                out[at..at + 4].copy_from_slice(group);
            }
            out
        };
        let (wq, xq) = (
            plain(&w.qs[r * width..(r + 1) * width]),
            plain(&x.qs[i * width..(i + 1) * width]),
        );
        (0..nb)
            .map(|b| {
                let dot: i64 = (b * BLOCK..(b + 1) * BLOCK).map(|c| wq[c] as i64 * xq[c] as i64).sum();
                dot as f64 * w.scales[r * nb + b] as f64 * x.scales[i * nb + b] as f64
            })
            .sum()
    }

    fn setup(rows: usize, cols: usize, m: usize) -> (Q8Matrix, Tensor) {
        let w = Tensor::from_vec(values(rows * cols, 1), (rows, cols), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(values(m * cols, 2), (m, cols), &Device::Cpu).unwrap();
        (Q8Matrix::quantize(&w).unwrap(), x)
    }

    #[test]
    fn every_kernel_computes_the_quantized_product() {
        // 18 blocks (even) and 7 blocks (odd: the masked tail), 1 to 6 activation rows.
        for (rows, cols) in [(5, 576), (3, 224)] {
            for m in [1, 3, 4, 6] {
                let (w, x) = setup(rows, cols, m);
                let xq = w.quantize_activations(&x).unwrap();
                let mut kernels = vec![Kernel::Portable];
                #[cfg(target_arch = "x86_64")]
                {
                    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                        kernels.push(Kernel::Avx2);
                    }
                    if avx512_vnni() {
                        kernels.push(Kernel::Avx512Vnni);
                    }
                }
                for kernel in kernels {
                    let got = w.rows_times(kernel, 0..rows, &xq);
                    for r in 0..rows {
                        for i in 0..m {
                            let g = &got[i * rows + r];
                            let want = reference(&w, &xq, i, r);
                            assert!(
                                (*g as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{kernel:?} [{rows}x{cols}] m={m} ({i},{r}): {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_or_in_any_batch_and_any_split() {
        let (w, x) = setup(37, 576, 7);
        let all = w.matmul(&x).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in all.iter().enumerate() {
            let alone = w.matmul(&x.narrow(0, i, 1).unwrap()).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(&alone[0], row, "row {i}");
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let split = pool.install(|| w.matmul(&x).unwrap().to_vec2::<f32>().unwrap());
        assert_eq!(split, all);
    }

    #[test]
    fn the_product_is_close_to_the_f32_product() {
        let (w, x) = setup(16, 576, 2);
        let dense = Tensor::from_vec(values(16 * 576, 1), (16, 576), &Device::Cpu).unwrap();
        let exact = x.matmul(&dense.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let ours = w.matmul(&x).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in exact.iter().flatten().zip(ours.iter().flatten()) {
            assert!((a - b).abs() < 0.05 + 0.01 * a.abs(), "{a} vs {b}");
        }
    }
}
