#!/usr/bin/env bash
# The embedding engine against sentence-transformers (PyTorch CPU) on the same 1,000 sentences
# and thread count, one after the other on this machine. Figures for BENCHMARKS.md.
#   bench/embed.sh [THREADS]      (default: every core)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${1:-$(nproc)}"
models="$(scripts/fetch-models)"
bash bench/embed_setup.sh
cargo build --release -p maas-sidecar --example embed_bench >&2
sentences="$(mktemp)"
trap 'rm -f "$sentences"' EXIT
bench/.venv/bin/python bench/embed_baseline.py "$models/all-minilm-l6-v2" "$threads" "$sentences"
# The sidecar's kernels run single-threaded per group (see `single_threaded_kernels`).
RAYON_NUM_THREADS=1 target/release/examples/embed_bench "$models" "$sentences" "$threads"
