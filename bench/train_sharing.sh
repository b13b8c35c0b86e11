#!/usr/bin/env bash
# What sharing training time between jobs costs in total throughput: one trainer, four busy
# jobs, each trained until done (no turns) against turns of --train-turn-secs, on the embedded
# store and, when a local AWS endpoint runs, on it too. Figures for BENCHMARKS.md.
#   bench/train_sharing.sh [--seconds 30] [--turn-secs 2]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release -p maas-sidecar --example train_sharing >&2
RUST_LOG=warn target/release/examples/train_sharing "$@"
if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
    RUST_LOG=warn target/release/examples/train_sharing --store aws "$@"
fi
