"""Training-quality check against any server that speaks the SGT API (standard library only).

    python3 bench/py_fit.py --url http://127.0.0.1:8000 [--system-key bench-system-key]

Creates a secret and a model (in_size=8, out_size=2), uploads --train samples (default 2048) of

    x ~ U(-1, 1)^8,  w = (1.0, -0.8, 0.6, -0.4, 0.9, -0.7, 0.5, -0.3)
    y0 = 0.9 * tanh(0.5 * sum_i w_i * x_i)
    y1 = 0.9 * sin(x0 * x1 + 0.5 * x2)

then polls run_sgt_model on --test (default 256) held-out inputs every --poll seconds and prints
the R^2 (uniform average of the per-output R^2, as sklearn's r2_score) over time. Stops after
--max-seconds, or once R^2 has not improved by 1e-4 for --patience seconds after reaching the
target. Prints one JSON line: {"r2", "r2_per_output", "seconds_to_target", "target", "elapsed_s"}.
"""

import argparse
import json
import math
import random
import sys
import time
import uuid

from py_load import Client

W = (1.0, -0.8, 0.6, -0.4, 0.9, -0.7, 0.5, -0.3)


def target_fn(x):
    return [0.9 * math.tanh(0.5 * sum(w * v for w, v in zip(W, x))), 0.9 * math.sin(x[0] * x[1] + 0.5 * x[2])]


def r2_scores(pred, truth):
    scores = []
    for j in range(len(truth[0])):
        col = [t[j] for t in truth]
        mean = sum(col) / len(col)
        ss_tot = sum((c - mean) ** 2 for c in col)
        ss_res = sum((p[j] - t[j]) ** 2 for p, t in zip(pred, truth))
        scores.append(1 - ss_res / ss_tot)
    return scores


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--system-key", default="bench-system-key")
    ap.add_argument("--train", type=int, default=2048)
    ap.add_argument("--test", type=int, default=256)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--patience", type=float, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    sample = lambda: [rng.uniform(-1, 1) for _ in range(8)]  # noqa: E731
    train_x = [sample() for _ in range(args.train)]
    test_x = [sample() for _ in range(args.test)]
    test_y = [target_fn(x) for x in test_x]

    c = Client(args.url.rstrip("/"))
    creds = {"secret_id": f"fit-{uuid.uuid4().hex[:12]}", "secret_key": uuid.uuid4().hex}
    c.call("/sgt/private/update_auth_token",
           {"key": args.system_key, **creds, "doc": "py_fit", "end_time": "2099-12-31 23:59:59"})
    model = {"name": "fit", "app_name": "py_fit"}
    c.call("/sgt/public/create_sgt_model",
           {**creds, **model, "model_type": "std", "client_data": "", "in_size": 8, "out_size": 2, "is_public": False})
    r2 = r2_scores(c.call("/sgt/public/run_sgt_model", {**creds, **model, "data": test_x}), test_y)
    print(f"  untrained: R^2 {sum(r2) / 2:.4f}", file=sys.stderr)

    start = time.perf_counter()
    c.call("/sgt/public/upload_sgt_model_train_data",
           {**creds, **model, "train_data": [[x, target_fn(x)] for x in train_x]})
    reached, best, best_at, last_print = None, -math.inf, start, 0.0
    while True:
        time.sleep(args.poll)
        now = time.perf_counter() - start
        r2 = r2_scores(c.call("/sgt/public/run_sgt_model", {**creds, **model, "data": test_x}), test_y)
        mean = sum(r2) / len(r2)
        if mean > best + 1e-4:
            best, best_at = mean, now
        if reached is None and mean >= args.target:
            reached = now
            print(f"  {now:7.1f}s R^2 {mean:.4f}  reached {args.target}", file=sys.stderr)
        if now - last_print >= 10:
            print(f"  {now:7.1f}s R^2 {mean:.4f} ({', '.join(f'{s:.4f}' for s in r2)})", file=sys.stderr)
            last_print = now
        if now >= args.max_seconds or (reached is not None and now - best_at >= args.patience):
            break
    print(json.dumps({
        "r2": round(mean, 5),
        "r2_per_output": [round(s, 5) for s in r2],
        "seconds_to_target": None if reached is None else round(reached, 1),
        "target": args.target,
        "elapsed_s": round(now, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
