#!/usr/bin/env bash
# Both servers over HTTP, one after the other on this machine, with the same client
# (bench/llm_http.py: streamed chat, ~200-token prompts with unique first lines, temperature 0,
# 128 new tokens): llama.cpp's own `llama-server -np 8` (bench/llama_server.sh) and `maas`
# (release build, embedded store, the built-in models). Figures for BENCHMARKS.md.
#   bench/llm_http.sh [THREADS]      (default: every core)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${1:-$(nproc)}"
models="$(scripts/fetch-models)"
server="$(bench/llama_server.sh)"
cargo build --release --bin maas >&2
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; return 1; }
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

p=$(port)
"$server" -m "$models/smollm2-135m-instruct/model.gguf" -t "$threads" -np 8 -c 8192 \
    --host 127.0.0.1 --port "$p" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
wait_for "http://127.0.0.1:$p/health"
python3 bench/llm_http.py "llama-server -np 8 (llama-cpp-python 0.3.36's llama.cpp)" \
    "http://127.0.0.1:$p" none smollm2
kill $pid; wait $pid 2>/dev/null || true

p=$(port)
data=$(mktemp -d)
MAAS_ADDR="127.0.0.1:$p" MAAS_DATA_DIR="$data" MAAS_STORE=embedded MAAS_MODELS_DIR="$models" \
    MAAS_LLM_THREADS="$threads" target/release/maas >"$data/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
wait_for "http://127.0.0.1:$p/health"
for _ in $(seq 1 300); do grep -q "model ready.*smollm2" "$data/log" && break; sleep 0.2; done
python3 bench/llm_http.py "maas (release, mixed)" "http://127.0.0.1:$p" signup smollm2-135m-instruct
