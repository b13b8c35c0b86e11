//! What reading `run_sgt_model`'s `data` costs: 1024 rows x 64 numbers, as Python clients send
//! them (the shortest repr of each value, about 17 digits, and 2-decimal numbers). The baseline,
//! measured in the same run, is serde_json reading the same text into `Vec<Vec<f32>>`; the
//! portable (bytewise) reader is measured beside the AVX2 one.
//! Also what writing the answer costs, and what checking an upload's nesting adds to reading it. `cargo bench -p maas-functions --bench rows`; figures in
//! BENCHMARKS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use maas_functions::http::parse_json;
use maas_functions::sgt::answer::rows_json;
use maas_functions::sgt::requests::UploadTrainData;
use maas_functions::sgt::rows::{parse_rows_portably, parse_rows_prefix, split_data};

fn body(decimals: Option<i32>) -> Vec<u8> {
    let mut s = 42u64;
    let rows: Vec<Vec<f64>> = (0..1024)
        .map(|_| {
            (0..64)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                    match decimals {
                        Some(d) => (v as f64 * 10f64.powi(d)).round() / 10f64.powi(d),
                        None => v as f64,
                    }
                })
                .collect()
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"secret_id": "s", "secret_key": "k", "app_name": "a", "data": rows}))
        .unwrap()
}

fn rows(c: &mut Criterion) {
    for (name, decimals) in [("full precision", None), ("2 decimals", Some(2))] {
        let text = body(decimals);
        let data_only =
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&text).unwrap()["data"]).unwrap();
        let mut g = c.benchmark_group(format!("1024x64 {name}"));
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function("split_data", |b| {
            b.iter(|| split_data(black_box(&text), 1 << 20).unwrap().unwrap())
        });
        g.bench_function("parse_rows_prefix (AVX2 where the CPU has it)", |b| {
            b.iter(|| parse_rows_prefix(black_box(&data_only), None, 1 << 20).unwrap())
        });
        g.bench_function("parse_rows_portably", |b| {
            b.iter(|| parse_rows_portably(black_box(&data_only), None, 1 << 20).unwrap())
        });
        g.bench_function("serde_json Vec<Vec<f32>> (baseline)", |b| {
            b.iter(|| serde_json::from_slice::<Vec<Vec<f32>>>(black_box(&data_only)).unwrap())
        });
        g.finish();
    }
}

/// Writing a run answer: 1024 rows x 8 outputs of a tanh-bounded model, against serde_json
/// writing the same rows (what the handler did before).
fn answer(c: &mut Criterion) {
    let mut s = 9u64;
    let values: Vec<f32> = (0..1024 * 8)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 1.8 - 0.9
        })
        .collect();
    let mut g = c.benchmark_group("answer 1024x8");
    g.bench_function("rows_json", |b| b.iter(|| rows_json(black_box(&values), 8)));
    g.bench_function("serde_json (baseline)", |b| {
        b.iter(|| serde_json::to_vec(&black_box(&values).chunks(8).collect::<Vec<_>>()).unwrap())
    });
    g.finish();
}

/// Reading an upload of 4,096 full-precision pairs (64 in, 8 out; 5.6 MB), whose size only the
/// body limit bounds: `parse_json` first checks how deep the body nests, then hands it to
/// sonic-rs. The baseline, in the same run, is sonic-rs alone.
fn upload(c: &mut Criterion) {
    let mut s = 7u64;
    let mut unit = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) as f64 * 2.0 - 1.0
    };
    let pairs: Vec<[Vec<f64>; 2]> = (0..4096)
        .map(|_| [(0..64).map(|_| unit()).collect(), (0..8).map(|_| unit()).collect()])
        .collect();
    let text = serde_json::to_vec(
        &serde_json::json!({"secret_id": "s", "secret_key": "k", "app_name": "a", "name": "m", "train_data": pairs}),
    )
    .unwrap();
    let mut g = c.benchmark_group("upload 4096 pairs of 64 + 8");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("parse_json (nesting checked)", |b| {
        b.iter(|| parse_json::<UploadTrainData>(black_box(&text)).map(drop).unwrap())
    });
    g.bench_function("sonic-rs alone (baseline)", |b| {
        b.iter(|| {
            sonic_rs::from_slice::<UploadTrainData>(black_box(&text))
                .map(drop)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, rows, answer, upload);
criterion_main!(benches);
