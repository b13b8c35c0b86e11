//! Data shared by the end-to-end tests and the load generator (examples/sgt_load.rs includes
//! this file): deterministic inputs, the learning check's target function, and R^2.

/// Deterministic pseudo-random rows.
pub fn rows(n: usize, width: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            (0..width)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
                })
                .collect()
        })
        .collect()
}

/// The target: smooth, with outputs inside [-0.9, 0.9].
pub fn target(x: &[f32]) -> Vec<f32> {
    let w = [0.8, -0.6, 0.4, 0.3, -0.5, 0.7, -0.2, 0.1];
    let s: f32 = x.iter().zip(w).map(|(a, b)| a * b).sum();
    vec![0.9 * s.tanh(), 0.9 * (x[0] * x[1] + 0.5 * x[2] - 0.3 * x[7]).sin()]
}

/// Mean over outputs of 1 - SS_res / SS_tot (scikit-learn's `r2_score` default).
pub fn r2(pred: &[Vec<f32>], truth: &[Vec<f32>]) -> f64 {
    let outs = truth[0].len();
    (0..outs)
        .map(|j| {
            let mean = truth.iter().map(|t| t[j] as f64).sum::<f64>() / truth.len() as f64;
            let ss_tot: f64 = truth.iter().map(|t| (t[j] as f64 - mean).powi(2)).sum();
            let ss_res: f64 = pred
                .iter()
                .zip(truth)
                .map(|(p, t)| (p[j] as f64 - t[j] as f64).powi(2))
                .sum();
            1.0 - ss_res / ss_tot
        })
        .sum::<f64>()
        / outs as f64
}
