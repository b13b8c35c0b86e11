//! Times one matmul of the int8 kernel against candle's Q8_0 kernel, for a weight of the
//! built-in model's shapes and 1, 4 and 8 activation rows, on one thread.
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use maas_sidecar::llm::q8::Q8Matrix;

fn main() {
    for (rows, cols) in [(576usize, 576usize), (1536, 576), (576, 1536), (49152, 576)] {
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        let ours = Q8Matrix::quantize(&w).unwrap();
        let theirs = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
        for m in [1usize, 4, 8] {
            let x = Tensor::randn(0f32, 1.0, (m, cols), &Device::Cpu).unwrap();
            let reps = (20_000_000 / (rows * cols * m)).max(3);
            let time = |f: &dyn Fn() -> Tensor| {
                f();
                let t = Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(f());
                }
                t.elapsed().as_secs_f64() / reps as f64
            };
            let a = time(&|| ours.matmul(&x).unwrap());
            let b = time(&|| theirs.forward(&x).unwrap());
            let gmacs = |s: f64| (rows * cols * m) as f64 / s / 1e9;
            println!(
                "[{rows}x{cols}] m={m}: int8 {:.1} us ({:.1} GMAC/s), candle Q8_0 {:.1} us ({:.1} GMAC/s)",
                a * 1e6,
                gmacs(a),
                b * 1e6,
                gmacs(b)
            );
        }
    }
}
