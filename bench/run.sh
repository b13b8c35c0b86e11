#!/usr/bin/env bash
# Every SGT benchmark in one run: maas (release build, embedded store) and the PyTorch + Flask
# baseline, driven by the same load generator on the same machine, one after the other.
# Figures go to bench/results/<stamp>/results.jsonl and a table is printed for BENCHMARKS.md.
#   bench/run.sh            (REQUESTS=50 by default; set REQUESTS=... for longer runs)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
requests="${REQUESTS:-50}"
key=bench-system-key

bench/setup.sh >&2
cargo build --release --bin maas --example sgt_load --example sgt_floor >&2
load=target/release/examples/sgt_load
out="bench/results/$(date +%Y%m%dT%H%M%S)"
mkdir -p "$out"
data="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$data"' EXIT

wait_up() { for _ in $(seq 1 200); do curl -fs "$1/health" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$1 never came up" >&2; exit 1; }

MAAS_SYSTEM_KEY=$key RUST_LOG=warn target/release/maas --addr 127.0.0.1:18080 --data-dir "$data" >/dev/null 2>&1 &
pids+=($!)
BASELINE_SYSTEM_KEY=$key bench/.venv/bin/python bench/baseline_flask.py 18081 >/dev/null 2>&1 &
pids+=($!)
# The floor: maas's HTTP stack answering a precomputed answer, without and with reading the rows.
# glibc would hand its two big buffers back to the kernel after every request and fault them in
# again (216 page faults a request; maas, whose other allocations keep the heap up, takes 13),
# so the floor keeps freed memory: it is meant to be the least any server pays here.
floor_env="GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=1073741824"
env "$floor_env" target/release/examples/sgt_floor --addr 127.0.0.1:18082 >/dev/null 2>&1 &
pids+=($!)
env "$floor_env" target/release/examples/sgt_floor --addr 127.0.0.1:18083 --read-rows >/dev/null 2>&1 &
pids+=($!)
for port in 18080 18081 18082 18083; do wait_up http://127.0.0.1:$port; done

bench() { # name url args...
    local name=$1 url=$2; shift 2
    echo "== $name: $*" >&2
    "$load" --url "$url" --system-key $key "$@" | python3 -c "import json,sys; r=json.load(sys.stdin); r['server']='$name'; print(json.dumps(r))" | tee -a "$out/results.jsonl"
}

# The floors run between maas and the baseline: the machine's speed drifts over minutes.
for server in maas=http://127.0.0.1:18080 floor-http=http://127.0.0.1:18082 floor-read=http://127.0.0.1:18083 flask=http://127.0.0.1:18081; do
    name=${server%%=*}; url=${server#*=}
    bench "$name" "$url" --mode run --rows 1024 --cols 64 --out 8 --clients 8 --requests "$requests"
    bench "$name" "$url" --mode run --rows 1024 --cols 64 --out 8 --clients 8 --requests "$requests" --decimals 2
    [[ $name == floor-* ]] && continue
    bench "$name" "$url" --mode run --rows 1024 --cols 2048 --out 2 --clients 8 --requests 3 --decimals 1
    bench "$name" "$url" --mode create --requests 200 --cols 8 --out 2
done
# Training last and one server at a time: it competes for the CPU.
for server in maas=http://127.0.0.1:18080 flask=http://127.0.0.1:18081; do
    bench "${server%%=*}" "${server#*=}" --mode learn
done

python3 - "$out/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    key = (r["mode"], r.get("cols"), r.get("decimals"))
    by.setdefault(key, {})[r["server"]] = r
print("| benchmark | maas | PyTorch+Flask | ratio |")
print("|---|---|---|---|")
for (mode, cols, decimals), s in by.items():
    m, f = s.get("maas"), s.get("flask")
    if not (m and f):
        continue
    if mode == "learn":
        a, b = m["seconds_to_r2_0.99"], f["seconds_to_r2_0.99"]
        print(f"| seconds to R^2 >= 0.99 | {a:.2f} s | {b:.2f} s | {b/a:.2f}x faster |")
        continue
    digits = "full-precision numbers" if decimals is None else f"{decimals} decimals"
    label = f"run 1024x{cols} ({digits}, {m['body_bytes']/1e6:.1f} MB), 8 clients" if mode == "run" else "create_sgt_model, 1 client"
    print(f"| {label}: throughput | {m['rps']:.1f} req/s | {f['rps']:.1f} req/s | {m['rps']/f['rps']:.1f}x |")
    print(f"| {label}: p50 / p99 | {m['p50_ms']:.1f} / {m['p99_ms']:.1f} ms | {f['p50_ms']:.1f} / {f['p99_ms']:.1f} ms | |")
    print(f"| {label}: errors | {m['errors']} of {m['requests']} | {f['errors']} of {f['requests']} | |")
print()
print("The floor (examples/sgt_floor.rs: maas's HTTP stack, a precomputed answer), against the same baseline:")
print()
print("| run 1024x64, 8 clients | floor: HTTP only | floor: HTTP + reading the rows | maas | PyTorch+Flask |")
print("|---|---|---|---|---|")
for (mode, cols, decimals), s in by.items():
    if mode != "run" or cols != 64 or not all(k in s for k in ("floor-http", "floor-read", "maas", "flask")):
        continue
    base = s["flask"]["rps"]
    cells = [f"{s[k]['rps']:.0f} req/s ({s[k]['rps']/base:.0f}x)" for k in ("floor-http", "floor-read", "maas")]
    digits = "full precision" if decimals is None else f"{decimals} decimals"
    print(f"| {digits} | " + " | ".join(cells) + f" | {base:.1f} req/s |")
PY
