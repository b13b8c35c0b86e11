#!/usr/bin/env bash
# Dataset validation throughput on a 1 GB JSONL: maas_datasets::validate (and the floors of
# reading and hashing the file) against Python reading it line by line with json.loads.
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:-/tmp/maas-bench.jsonl}"
cargo run --quiet --release -p maas-datasets --example validate_bench -- "$file" 1024
python3 --version
python3 bench/validate_baseline.py "$file"
