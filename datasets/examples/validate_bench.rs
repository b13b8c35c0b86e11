//! Validation throughput: `maas_datasets::validate` over a JSONL file, against the floors of
//! reading it (and hashing it, which validation also does). `bench/validate.sh` runs it next to
//! Python's line-by-line `json.loads` on the same file.
//!
//! ```sh
//! cargo run --release -p maas-datasets --example validate_bench -- /tmp/bench.jsonl 1024
//! ```
//! writes a file of that many MiB of instruction records first when it is missing.

use std::io::{BufWriter, Read, Write};
use std::time::Instant;

use maas_datasets::{validate, Format, Tally};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map_or("/tmp/maas-bench.jsonl", String::as_str);
    let mib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
    if std::fs::metadata(path).map_or(true, |m| m.len() < mib << 20) {
        write_records(path, mib << 20)?;
    }
    let size = std::fs::metadata(path)?.len();
    let mb = size as f64 / 1e6;
    println!("file: {path}, {mb:.0} MB (warm page cache)");
    for round in 1..=3 {
        let t = Instant::now();
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf)? > 0 {}
        let read = mb / t.elapsed().as_secs_f64();

        let t = Instant::now();
        Tally::new(std::fs::File::open(path)?).finish()?;
        let hashed = mb / t.elapsed().as_secs_f64();

        let t = Instant::now();
        let s = validate(Format::Jsonl, std::fs::File::open(path)?, &mut |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        assert!(s.is_valid(), "{:?}", s.problem());
        println!(
            "round {round}: read {read:.0} MB/s, read+sha256 {hashed:.0} MB/s, validate {:.0} MB/s ({} records in {secs:.2} s)",
            mb / secs,
            s.samples
        );
    }
    Ok(())
}

/// Instruction records of varied lengths, from a fixed seed.
fn write_records(path: &str, bytes: u64) -> std::io::Result<()> {
    const WORDS: [&str; 16] = [
        "the", "model", "answer", "question", "data", "reset", "password", "invoice", "billing", "plan", "support",
        "ticket", "settings", "account", "please", "thanks",
    ];
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let (mut written, mut state, mut i) = (0u64, 0x2545_F491_4F6C_DD1Du64, 0u64);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while written < bytes {
        let mut text = |n: u64| -> String {
            let k = 4 + next() % n;
            (0..k)
                .map(|_| WORDS[(next() % 16) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let line = format!(
            "{{\"id\":{i},\"instruction\":\"{}?\",\"response\":\"{}.\",\"lang\":\"en\"}}\n",
            text(24),
            text(80)
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        i += 1;
    }
    out.flush()
}
