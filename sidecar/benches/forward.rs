//! What one `run_sgt_model` forward pass costs at 1024x64 (the `std` member for in=64, out=8:
//! widths 64-64-32-16-8). The baseline, measured in the same run, is the same member with
//! candle's own ops for the bias and activations, as the inference path used them before.
//! `CANDLE_NUM_THREADS=1 cargo bench -p maas-sidecar --bench forward`; figures in BENCHMARKS.md.

use std::hint::black_box;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use maas_sidecar::activation::{bias_activate, Activation};
use maas_sidecar::ensemble::{std_widths, Ensemble};

fn candle_ops_forward(ens: &Ensemble, x: &Tensor) -> Tensor {
    let n = ens.weights.len();
    let mut h = x.clone();
    for (i, (w, b)) in ens.weights.iter().zip(&ens.biases).enumerate() {
        let (w, b) = (w.get(0).unwrap(), b.get(0).unwrap().squeeze(0).unwrap());
        h = h.matmul(&w).unwrap().broadcast_add(&b).unwrap();
        h = match n - i {
            1 => h,
            2 => h.tanh().unwrap(),
            _ => h.silu().unwrap(),
        };
    }
    h
}

fn forward(c: &mut Criterion) {
    let dev = Device::Cpu;
    let ens = Ensemble::init(&std_widths(64, 8), 4, 7, &dev).unwrap();
    let mlp = ens.member(0).unwrap();
    let x: Vec<f32> = (0..1024 * 64).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let x = Tensor::from_vec(x, (1024, 64), &dev).unwrap();
    let mut g = c.benchmark_group("forward 1024x64");
    g.bench_function("fused bias and activation", |b| {
        b.iter(|| mlp.forward(black_box(&x)).unwrap())
    });
    g.bench_function("candle ops (baseline)", |b| {
        b.iter(|| candle_ops_forward(&ens, black_box(&x)))
    });
    g.finish();

    let mut g = c.benchmark_group("bias and activation 1024x64");
    let bias = Tensor::zeros(64, DType::F32, &dev).unwrap();
    for act in [Activation::Silu, Activation::Tanh] {
        g.bench_function(format!("fused {act:?}"), |b| {
            b.iter_batched(
                || x.copy().unwrap(),
                |h| bias_activate(h, &bias, act).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("candle {act:?} (baseline)"), |b| {
            b.iter(|| {
                let h = black_box(&x).broadcast_add(&bias).unwrap();
                if act == Activation::Silu { h.silu() } else { h.tanh() }.unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
