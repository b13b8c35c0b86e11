#!/usr/bin/env bash
# Peak memory of the gateway for one large upload_sgt_model_train_data body of short pairs, as
# a ratio to the body's size (the baseline, measured in the same run).
#   bench/upload_memory.sh            (PAIRS=3500000 by default: a 56 MB body, under the 64 MiB limit)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pairs="${PAIRS:-3500000}"
cargo build --release --bin maas >&2
data="$(mktemp -d)"
body="$data/body.json"
port=18097
MAAS_SYSTEM_KEY=k RUST_LOG=warn target/release/maas --addr 127.0.0.1:$port --data-dir "$data/store" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 200); do curl -fs http://127.0.0.1:$port/health >/dev/null 2>&1 && break; sleep 0.1; done
sgt=http://127.0.0.1:$port/sgt
creds='"secret_id":"s","secret_key":"bench-key"'
curl -fs -X POST $sgt/private/update_auth_token -d "{\"key\":\"k\",$creds,\"end_time\":\"2099-01-01 00:00:00\"}" >/dev/null
curl -fs -X POST $sgt/public/create_sgt_model -d "{$creds,\"name\":\"m\",\"app_name\":\"a\",\"model_type\":\"std\",\"in_size\":1,\"out_size\":1,\"is_public\":false}" >/dev/null
python3 - "$pairs" "$creds" > "$body" <<'PY'
import sys
n, creds = int(sys.argv[1]), sys.argv[2]
sys.stdout.write('{' + creds + ',"name":"m","app_name":"a","train_data":[' + ','.join(['[[0.5],[-0.25]]'] * n) + ']}')
PY
idle=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
answer=$(curl -s -X POST $sgt/public/upload_sgt_model_train_data --data-binary @"$body")
peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
size=$(stat -c %s "$body")
python3 - "$answer" "$size" "$idle" "$peak" <<'PY'
import sys
answer, size, idle, peak = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) * 1024, int(sys.argv[4]) * 1024
print(f"answer {answer}; body {size/1e6:.1f} MB; peak RSS {peak/1e6:.0f} MB (idle {idle/1e6:.0f} MB); "
      f"growth / body size = {(peak - idle)/size:.2f}x")
PY
