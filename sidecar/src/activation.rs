//! The inference path's bias-and-activation step, fused and in place on the matmul's output.
//!
//! candle's CPU `silu` and `tanh` call libm once per element (8 ns per `tanh` here), which made
//! them two thirds of a 1024x64 forward pass. These are branch-free Cephes-style polynomials the
//! compiler vectorises; training keeps candle's ops, which it needs for gradients. On other
//! devices the step is candle's own ops.

use candle_core::{CpuStorage, Layout, Result, Tensor};

/// What follows a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    Tanh,
    Identity,
}

impl Activation {
    /// What follows linear layer `layer` of `layers`: SiLU between layers, Tanh before the
    /// last one, nothing after it.
    pub fn after(layer: usize, layers: usize) -> Activation {
        match layers - layer {
            1 => Activation::Identity,
            2 => Activation::Tanh,
            _ => Activation::Silu,
        }
    }

    /// The activation as candle's own ops, which carry gradients.
    pub fn apply(self, h: Tensor) -> Result<Tensor> {
        match self {
            Activation::Silu => h.silu(),
            Activation::Tanh => h.tanh(),
            Activation::Identity => Ok(h),
        }
    }
}

/// `act(h + bias)` for `h: [B, N]` and `bias: [N]`, reusing `h`'s buffer on CPU.
pub fn bias_activate(h: Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
    if h.device().is_cpu() && h.is_contiguous() && bias.is_contiguous() {
        h.inplace_op2(bias, &BiasActivation(act))?;
        return Ok(h);
    }
    act.apply(h.broadcast_add(bias)?)
}

struct BiasActivation(Activation);

impl candle_core::InplaceOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(&self, h: &mut CpuStorage, hl: &Layout, bias: &CpuStorage, bl: &Layout) -> Result<()> {
        let (CpuStorage::F32(h), CpuStorage::F32(bias)) = (h, bias) else {
            candle_core::bail!("bias-activation takes f32 tensors");
        };
        let (Some((h0, h1)), Some((b0, b1))) = (hl.contiguous_offsets(), bl.contiguous_offsets()) else {
            candle_core::bail!("bias-activation takes contiguous tensors");
        };
        let (h, bias) = (&mut h[h0..h1], &bias[b0..b1]);
        if bias.is_empty() || hl.dims().last() != Some(&bias.len()) {
            candle_core::bail!("bias of {} does not fit rows of shape {:?}", bias.len(), hl.dims());
        }
        apply_fastest(h, bias, self.0);
        Ok(())
    }
}

/// The same loop compiled for the widest vectors this CPU has: the default x86-64 target
/// only allows 4-lane SSE.
fn apply_fastest(h: &mut [f32], bias: &[f32], act: Activation) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function was compiled for.
            return unsafe { apply_avx512(h, bias, act) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { apply_avx2(h, bias, act) };
        }
    }
    apply(h, bias, act)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn apply_avx512(h: &mut [f32], bias: &[f32], act: Activation) {
    apply(h, bias, act)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn apply_avx2(h: &mut [f32], bias: &[f32], act: Activation) {
    apply(h, bias, act)
}

#[inline(always)]
fn apply(h: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        Activation::Silu => apply_each(h, bias, silu),
        Activation::Tanh => apply_each(h, bias, tanh),
        Activation::Identity => apply_each(h, bias, |v| v),
    }
}

#[inline(always)]
fn apply_each(h: &mut [f32], bias: &[f32], f: impl Fn(f32) -> f32) {
    for row in h.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = f(*v + b);
        }
    }
}

/// e^x with ~1 ulp error on [-87.3, 88.3]; inputs outside are clamped there, so the result
/// stays finite and normal. NaN in gives NaN out (clamp keeps it).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so n * LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer without a `round`
    // instruction, which SSE2 lacks and which would stop the loop vectorising.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.0e-1;
    let e = p * (r * r) + r + 1.0;
    // t's low mantissa bits hold n, so 2^n comes from integer ops, not a float-to-int cast.
    e * f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23)
}

/// x * sigmoid(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// tanh(x): an odd polynomial near 0, where `1 - 2 / (e^2x + 1)` would cancel, and that
/// formula elsewhere.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z - 3.333_328e-1) * z * x
            + x;
    let large = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    if a < 0.625 {
        small
    } else {
        large.copysign(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every f32 in [lo, hi) at `step`, plus values around the formula switches.
    fn grid(lo: f32, hi: f32, step: f32) -> Vec<f32> {
        let mut xs: Vec<f32> = (0..).map(|i| lo + i as f32 * step).take_while(|&x| x < hi).collect();
        for edge in [0.625f32, -0.625, 0.0, -0.0, 1e-30, -1e-30, 1e-6, 87.3, -87.3, 88.3] {
            xs.extend([edge, edge.next_up(), edge.next_down()]);
        }
        xs
    }

    fn ulps(got: f32, want: f64) -> f64 {
        let want32 = want as f32;
        let ulp = (f32::from_bits(want32.abs().to_bits() + 1) - want32.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn exp_is_within_two_ulps_of_f64_exp_across_its_range() {
        for x in grid(-87.3, 88.3, 0.000_37)
            .into_iter()
            .filter(|x| (-87.3..=88.3).contains(x))
        {
            let got = exp(x);
            assert!(
                ulps(got, (x as f64).exp()) <= 2.0,
                "exp({x}) = {got}, want {}",
                (x as f64).exp()
            );
        }
    }

    #[test]
    fn exp_clamps_instead_of_overflowing_and_keeps_nan() {
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn silu_and_tanh_match_f64_references_to_a_few_ulps_or_1e_7() {
        for x in grid(-100.0, 100.0, 0.000_71) {
            let (xd, s, t) = (x as f64, silu(x), tanh(x));
            let want_s = xd / (1.0 + (-xd).exp());
            let want_t = xd.tanh();
            assert!(
                ulps(s, want_s) <= 4.0 || (s as f64 - want_s).abs() < 1e-30,
                "silu({x}) = {s}, want {want_s}"
            );
            assert!(
                ulps(t, want_t) <= 4.0 || (t as f64 - want_t).abs() < 1e-7,
                "tanh({x}) = {t}, want {want_t}"
            );
            assert_eq!(t, -tanh(-x), "tanh is odd at {x}");
        }
    }

    #[test]
    fn infinities_saturate_and_nan_propagates() {
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(silu(f32::INFINITY), f32::INFINITY);
        assert!(silu(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
    }

    #[test]
    fn the_fused_step_and_its_fallback_match_candle_ops_on_cpu() {
        let dev = Device::Cpu;
        let h: Vec<f32> = (0..7 * 5).map(|i| ((i * 29 % 23) as f32 - 11.0) / 3.0).collect();
        let bias = Tensor::new(&[0.5f32, -1.0, 0.0, 2.0, -0.25], &dev).unwrap();
        let contiguous = Tensor::from_vec(h.clone(), (7, 5), &dev).unwrap();
        // A transposed view is not contiguous, so it takes the candle-ops path other devices use.
        let strided = Tensor::from_vec(h, (5, 7), &dev).unwrap().t().unwrap();
        assert!(!strided.is_contiguous());
        for (act, t) in [Activation::Silu, Activation::Tanh, Activation::Identity]
            .into_iter()
            .flat_map(|a| [(a, contiguous.copy().unwrap()), (a, strided.clone())])
        {
            let plain = t.broadcast_add(&bias).unwrap();
            let want = match act {
                Activation::Silu => plain.silu(),
                Activation::Tanh => plain.tanh(),
                Activation::Identity => Ok(plain),
            }
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
            let got = bias_activate(t, &bias, act).unwrap().to_vec2::<f32>().unwrap();
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{act:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_compiled_variant_gives_the_same_bits() {
        let h: Vec<f32> = grid(-30.0, 30.0, 0.001_3);
        let width = 16;
        let h = &h[..h.len() / width * width];
        let bias: Vec<f32> = (0..width).map(|i| i as f32 / 7.0 - 1.0).collect();
        for act in [Activation::Silu, Activation::Tanh, Activation::Identity] {
            let mut want = h.to_vec();
            apply(&mut want, &bias, act);
            let mut variants = Vec::new();
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                let mut got = h.to_vec();
                unsafe { apply_avx2(&mut got, &bias, act) };
                variants.push(("avx2", got));
            }
            if is_x86_feature_detected!("avx512f") {
                let mut got = h.to_vec();
                unsafe { apply_avx512(&mut got, &bias, act) };
                variants.push(("avx512", got));
            }
            for (name, got) in variants {
                let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{name} differs from the portable loop for {act:?}");
            }
        }
    }

    #[test]
    fn a_bias_that_does_not_fit_is_an_error() {
        let dev = Device::Cpu;
        let t = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let bias = Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap();
        assert!(bias_activate(t, &bias, Activation::Silu).is_err());
    }

    #[test]
    fn silu_sits_between_layers_tanh_before_the_last_and_nothing_after_it() {
        let acts: Vec<Activation> = (0..4).map(|i| Activation::after(i, 4)).collect();
        use Activation::*;
        assert_eq!(acts, [Silu, Silu, Tanh, Identity]);
        assert_eq!(Activation::after(0, 1), Identity);
    }
}
