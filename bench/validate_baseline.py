"""Python's line-by-line JSONL check, the baseline for dataset validation throughput:
every line parsed with json.loads and checked to be an object (what validation does, less
the sha256 and the field and error bookkeeping)."""
import json
import os
import sys
import time

path = sys.argv[1]
mb = os.path.getsize(path) / 1e6
for round in (1, 2, 3):
    t = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if not isinstance(json.loads(line), dict):
                raise SystemExit(f"line {n + 1} is not an object")
            n += 1
    secs = time.perf_counter() - t
    print(f"round {round}: python json.loads {mb / secs:.0f} MB/s ({n} records in {secs:.2f} s)")
