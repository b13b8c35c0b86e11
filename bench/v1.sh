#!/usr/bin/env bash
# The /api/v1 identity benchmarks on one `maas` (release build, embedded store): the gateway's
# /health as the baseline, GET /api/v1/auth/me with a JWT and with an API key, and password
# sign-in, all driven by examples/v1_load.rs on the same machine in one run. Prints a table for
# BENCHMARKS.md; raw lines go to bench/results/<stamp>/v1.jsonl.
#   bench/v1.sh            (REQUESTS=500 per client by default)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
requests="${REQUESTS:-500}"
email=bench-admin@example.com
password="Bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')"

cargo build --release --bin maas --example v1_load >&2
load=target/release/examples/v1_load
out="bench/results/$(date +%Y%m%dT%H%M%S)"
mkdir -p "$out"
data="$(mktemp -d)"
# Limits out of the way: the benchmark measures the work of a request, not the limiter's 429s.
MAAS_ADMIN_EMAIL=$email MAAS_ADMIN_PASSWORD="$password" MAAS_SYSTEM_KEY=bench RUST_LOG=warn \
MAAS_RATE_AUTH=1000000/60 MAAS_RATE_OTHER=1000000/60 MAAS_RATE_IP=10000000/60 MAAS_MONTHLY_CALLS=1000000000 \
    target/release/maas --addr 127.0.0.1:18090 --data-dir "$data" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 200); do curl -fs http://127.0.0.1:18090/health >/dev/null 2>&1 && break; sleep 0.1; done

run() { # mode clients requests
    echo "== $1, $2 clients x $3" >&2
    "$load" --url http://127.0.0.1:18090 --email $email --password "$password" --pid $pid \
        --clk-tck "$(getconf CLK_TCK)" --mode "$1" --clients "$2" --requests "$3" | tee -a "$out/v1.jsonl"
}
run health 8 "$requests"
run me-jwt 8 "$requests"
run me-key 8 "$requests"
run login 1 30
run login 2 30

python3 - "$out/v1.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = rows[0]
print("| benchmark | req/s | p50 / p99 | server CPU per request | vs /health |")
print("|---|---|---|---|---|")
for r in rows:
    label = {"health": "GET /health (baseline)", "me-jwt": "GET /api/v1/auth/me, JWT",
             "me-key": "GET /api/v1/auth/me, API key", "login": "POST /api/v1/auth/login"}[r["mode"]]
    ratio = f"{base['rps'] / r['rps']:.1f}x slower" if r is not base else "1x"
    print(f"| {label}, {r['clients']} clients | {r['rps']:.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms "
          f"| {r['server_cpu_ms_per_request']:.3f} ms | {ratio} |")
PY
