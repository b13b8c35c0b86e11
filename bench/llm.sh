#!/usr/bin/env bash
# The LLM engine against llama.cpp on the same GGUF, prompts and thread count, one after the
# other on this machine: time to first token (~200-token prompt), decode tokens/s at batch 1,
# and maas's total tokens/s with 8 concurrent streams and peak RSS. Figures for BENCHMARKS.md.
#   bench/llm.sh [THREADS]      (default: every core)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${1:-$(nproc)}"
models="$(scripts/fetch-models)"
venv=bench/.venv-llama
if ! "$venv/bin/python" -c 'import llama_cpp, numpy' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check llama-cpp-python==0.3.36 numpy==2.4.6
fi
cargo build --release -p maas-sidecar --example llm_bench >&2
# Kernels single-threaded as `maas` runs them (see `single_threaded_kernels`); the engine splits
# the work across its own threads.
RAYON_NUM_THREADS=1 MAAS_LLM_THREADS="$threads" target/release/examples/llm_bench "$models"
"$venv/bin/python" bench/llm_baseline.py "$models/smollm2-135m-instruct/model.gguf" "$threads"
