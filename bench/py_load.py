"""Load test for run_sgt_model against any server that speaks the SGT API (standard library only).

    python3 bench/py_load.py --url http://127.0.0.1:8000 --rows 1024 --cols 64 --out 8 \
        --clients 8 --requests 50 [--system-key bench-system-key]

Creates its own secret (update_auth_token with --system-key) and its own untrained model
(in_size=--cols, out_size=--out), sends one warm-up request, then --clients threads each send
--requests run requests with the same --rows x --cols body over one keep-alive connection.
Prints one JSON line: {"rps", "p50_ms", "p99_ms", "errors"}; details go to stderr.
"""

import argparse
import http.client
import json
import math
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit


class Client:
    """One keep-alive HTTP connection; reconnects once if the server closed it."""

    def __init__(self, url):
        u = urlsplit(url)
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.conn = None

    def _connect(self):
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        self.conn = cls(self.host, self.port, timeout=300)

    def post(self, path, payload: bytes):
        for attempt in range(2):
            if self.conn is None:
                self._connect()
            try:
                self.conn.request(
                    "POST", self.prefix + path, body=payload, headers={"Content-Type": "application/json"}
                )
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close" or resp.version == 10:
                    self.conn.close()
                    self.conn = None
                return resp.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise

    def call(self, path, obj):
        status, data = self.post(path, json.dumps(obj).encode())
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}: {data[:300]!r}")
        return json.loads(data)


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=64)
    ap.add_argument("--out", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=50, help="run requests per client")
    ap.add_argument("--system-key", default="bench-system-key")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    base = args.url.rstrip("/")
    setup = Client(base)
    secret_id, secret_key = f"load-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    creds = {"secret_id": secret_id, "secret_key": secret_key}
    setup.call(
        "/sgt/private/update_auth_token",
        {"key": args.system_key, **creds, "doc": "py_load", "end_time": "2099-12-31 23:59:59"},
    )
    name, app_name = "load", "py_load"
    setup.call(
        "/sgt/public/create_sgt_model",
        {**creds, "name": name, "app_name": app_name, "model_type": "std", "client_data": "",
         "in_size": args.cols, "out_size": args.out, "is_public": False},
    )

    rng = random.Random(args.seed)
    rows = [[round(rng.uniform(-1, 1), 6) for _ in range(args.cols)] for _ in range(args.rows)]
    payload = json.dumps({**creds, "name": name, "app_name": app_name, "data": rows}).encode()

    # Warm-up, and check the answer's shape once.
    t0 = time.perf_counter()
    status, data = setup.post("/sgt/public/run_sgt_model", payload)
    warm_ms = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise SystemExit(f"warm-up run failed: HTTP {status}: {data[:300]!r}")
    out = json.loads(data)
    if len(out) != args.rows or any(len(r) != args.out for r in out):
        raise SystemExit(f"warm-up run returned the wrong shape: {len(out)} rows")

    latencies = []
    errors = 0
    lock = threading.Lock()

    def worker(_):
        nonlocal errors
        client = Client(base)
        mine, bad = [], 0
        for _ in range(args.requests):
            t = time.perf_counter()
            try:
                status, data = client.post("/sgt/public/run_sgt_model", payload)
                ok = status == 200 and data[:1] == b"["
            except Exception as e:  # noqa: BLE001 - count any failure as an error
                print(f"request failed: {e!r}", file=sys.stderr)
                ok = False
            if ok:
                mine.append(time.perf_counter() - t)
            else:
                bad += 1
        with lock:
            latencies.extend(mine)
            errors += bad

    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(worker, range(args.clients)))
    wall = time.perf_counter() - start

    latencies.sort()
    result = {
        "rps": round(len(latencies) / wall, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
        "errors": errors,
    }
    print(
        f"py_load: {len(latencies)} ok / {errors} errors in {wall:.2f}s; body {len(payload) / 1e6:.2f} MB; "
        f"warm-up {warm_ms:.0f} ms; {args.clients} clients x {args.requests} requests, "
        f"{args.rows}x{args.cols} -> {args.out}",
        file=sys.stderr,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
