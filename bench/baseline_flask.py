"""A straightforward PyTorch + Flask implementation of the SGT API's hot paths.

This is the Python baseline that BENCHMARKS.md compares against: what a competent Python
developer would write in an afternoon, neither sabotaged nor tuned.

    bench/.venv/bin/python bench/baseline_flask.py [PORT]      (or PORT / BASELINE_PORT env)

Env: BASELINE_HOST (default 127.0.0.1), BASELINE_SYSTEM_KEY (default "bench-system-key").

Endpoints (POST JSON; success = the raw JSON result with 200, failure = 400
{"exception": NAME, "message": TEXT}):
    /sgt/private/update_auth_token, /sgt/public/check_auth_token,
    /sgt/public/create_sgt_model, /sgt/public/upload_sgt_model_train_data,
    /sgt/public/run_sgt_model, /sgt/public/list_model_type, and GET /health.

Model "std": an ensemble of K=4 independent MLPs. Hidden widths start at clamp(in, 32, 1024) and
halve (or double) towards target = clamp(2 * out, 16, 1024); SiLU between layers, the last
block is Tanh then Linear. Trained with Adam (lr 1e-2 cosine-decayed to 1e-3), MSE, full batch
up to 4096 samples else random minibatches of 1024; every 200 steps the worst member becomes a
noisy copy of the best (optimizer state reset); training stops when the best loss improved by
less than 0.1% over the last 1000 steps, or after 20000 steps. Runs use the best member.
"""

import copy
import hashlib
import json
import math
import os
import sys
import threading
import time
from datetime import datetime

import torch
from flask import Flask, request
from torch import nn

torch.set_num_threads(2)

SYSTEM_KEY = os.environ.get("BASELINE_SYSTEM_KEY", "bench-system-key")

MEMBERS = 4
LR_MAX = 1e-2
LR_MIN = 1e-3
FULL_BATCH_MAX = 4096
MINIBATCH = 1024
EVAL_EVERY = 200
NOISE_STD = 0.01
FLAT_WINDOW = 1000
FLAT_MIN_IMPROVEMENT = 0.001
MAX_STEPS = 20000

app = Flask(__name__)


class ApiException(Exception):
    def __init__(self, name, message):
        super().__init__(message)
        self.name = name
        self.message = message


@app.errorhandler(ApiException)
def handle_api_exception(e):
    return json_response({"exception": e.name, "message": e.message}, 400)


@app.errorhandler(Exception)
def handle_other_exception(e):
    app.logger.exception("unhandled error")
    return json_response({"exception": "InternalException", "message": "internal server error"}, 400)


def json_response(value, status=200):
    return app.response_class(json.dumps(value), status=status, mimetype="application/json")


def body():
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise ApiException("RequestException", "request body must be a JSON object")
    return data


# ---------------------------------------------------------------------------------------------
# Secrets

secrets = {}  # secret_id -> {"hash", "doc", "end_time"}
secrets_lock = threading.Lock()


def hash_key(secret_key):
    return hashlib.sha256(secret_key.encode("utf-8")).hexdigest()


def check_secret(data):
    secret_id = data.get("secret_id")
    secret_key = data.get("secret_key")
    if not isinstance(secret_id, str) or not isinstance(secret_key, str):
        return False
    with secrets_lock:
        entry = secrets.get(secret_id)
    if entry is None or entry["hash"] != hash_key(secret_key):
        return False
    return entry["end_time"] > datetime.now()


def authenticate(data):
    if not check_secret(data):
        raise ApiException("AuthException", "invalid secret_id or secret_key, or the secret has expired")
    return data["secret_id"]


# ---------------------------------------------------------------------------------------------
# The "std" model


def hidden_widths(in_size, out_size):
    target = min(max(2 * out_size, 16), 1024)
    h = min(max(in_size, 32), 1024)
    widths = [h]
    while h != target:
        h = max(h // 2, target) if h > target else min(h * 2, target)
        widths.append(h)
    return widths


def build_mlp(in_size, out_size):
    hidden = hidden_widths(in_size, out_size)
    layers = [nn.Linear(in_size, hidden[0])]
    for a, b in zip(hidden, hidden[1:]):
        layers += [nn.SiLU(), nn.Linear(a, b)]
    layers += [nn.Tanh(), nn.Linear(hidden[-1], out_size)]
    return nn.Sequential(*layers)


class SgtModel:
    def __init__(self, owner, app_name, name, model_type, client_data, in_size, out_size, is_public):
        self.owner = owner
        self.app_name = app_name
        self.name = name
        self.model_type = model_type
        self.client_data = client_data
        self.in_size = in_size
        self.out_size = out_size
        self.is_public = is_public

        self.members = [build_mlp(in_size, out_size) for _ in range(MEMBERS)]
        # The network that answers run requests: a copy of the best member, swapped under the lock.
        self.lock = threading.Lock()
        self.best_net = copy.deepcopy(self.members[0]).eval()
        self.train_x = []  # uploaded chunks, [n, in_size] tensors
        self.train_y = []  # [n, out_size]
        self.data_version = 0
        self.trainer = None

    # -- inference --------------------------------------------------------------------------

    def run(self, rows):
        with self.lock:
            net = self.best_net
        with torch.no_grad():
            x = torch.tensor(rows, dtype=torch.float32)
            return net(x).tolist()

    # -- training ---------------------------------------------------------------------------

    def add_data(self, xs, ys):
        with self.lock:
            self.train_x.append(xs)
            self.train_y.append(ys)
            self.data_version += 1
            if self.trainer is None or not self.trainer.is_alive():
                self.trainer = threading.Thread(target=self.train, daemon=True)
                self.trainer.start()

    def snapshot_data(self):
        with self.lock:
            return torch.cat(self.train_x), torch.cat(self.train_y), self.data_version

    def train(self):
        loss_fn = nn.MSELoss()
        optimizers = [torch.optim.Adam(m.parameters(), lr=LR_MAX) for m in self.members]
        x, y, version = self.snapshot_data()
        step = 0
        history = []  # (step, best loss)
        started = time.time()
        while True:
            # New data arrived: train on all of it, restarting the schedule and stop test.
            if self.data_version != version:
                x, y, version = self.snapshot_data()
                step = 0
                history = []

            lr = LR_MIN + 0.5 * (LR_MAX - LR_MIN) * (1 + math.cos(math.pi * step / MAX_STEPS))
            if len(x) <= FULL_BATCH_MAX:
                xb, yb = x, y
            else:
                idx = torch.randint(0, len(x), (MINIBATCH,))
                xb, yb = x[idx], y[idx]
            for member, opt in zip(self.members, optimizers):
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad()
                loss = loss_fn(member(xb), yb)
                loss.backward()
                opt.step()
            step += 1

            if step % EVAL_EVERY == 0:
                with torch.no_grad():
                    losses = [loss_fn(m(x), y).item() for m in self.members]
                best = min(range(MEMBERS), key=lambda i: losses[i])
                worst = max(range(MEMBERS), key=lambda i: losses[i])
                with self.lock:
                    self.best_net = copy.deepcopy(self.members[best]).eval()
                history.append((step, losses[best]))
                if worst != best:
                    self.members[worst].load_state_dict(self.members[best].state_dict())
                    with torch.no_grad():
                        for p in self.members[worst].parameters():
                            p.add_(torch.randn_like(p) * NOISE_STD)
                    optimizers[worst] = torch.optim.Adam(self.members[worst].parameters(), lr=lr)

                flat = False
                before = [l for s, l in history if s <= step - FLAT_WINDOW]
                if before:
                    old = before[-1]
                    flat = old <= 0 or (old - losses[best]) / old < FLAT_MIN_IMPROVEMENT
                if flat or step >= MAX_STEPS:
                    with self.lock:
                        if self.data_version == version:
                            self.trainer = None
                            print(
                                f"[train] {self.owner}/{self.app_name}/{self.name}: stopped at step {step}, "
                                f"best loss {losses[best]:.3g}, {time.time() - started:.1f}s",
                                file=sys.stderr,
                                flush=True,
                            )
                            return
                    # data arrived while we were deciding to stop: keep going


models = {}  # (owner, app_name, name) -> SgtModel
models_lock = threading.Lock()


def find_model(owner, data):
    key = (owner, data.get("app_name"), data.get("name"))
    with models_lock:
        model = models.get(key)
    if model is None:
        raise ApiException("FindModelException", f"model {data.get('name')!r} of app {data.get('app_name')!r} not found")
    return model


# ---------------------------------------------------------------------------------------------
# Routes


@app.get("/health")
def health():
    return "ok"


@app.post("/sgt/private/update_auth_token")
def update_auth_token():
    data = body()
    if data.get("key") != SYSTEM_KEY:
        raise ApiException("AuthException", "wrong system key")
    secret_id, secret_key = data.get("secret_id"), data.get("secret_key")
    if not isinstance(secret_id, str) or not isinstance(secret_key, str) or not secret_id:
        raise ApiException("AuthException", "secret_id and secret_key are required")
    try:
        end_time = datetime.strptime(data.get("end_time"), "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        raise ApiException("AuthException", "end_time must be YYYY-MM-DD HH:MM:SS")
    with secrets_lock:
        secrets[secret_id] = {"hash": hash_key(secret_key), "doc": data.get("doc") or "", "end_time": end_time}
    return json_response(None)


@app.post("/sgt/public/check_auth_token")
def check_auth_token():
    return json_response(check_secret(body()))


@app.route("/sgt/public/list_model_type", methods=["GET", "POST"])
def list_model_type():
    return json_response(["std"])


@app.post("/sgt/public/create_sgt_model")
def create_sgt_model():
    data = body()
    owner = authenticate(data)
    name, app_name = data.get("name"), data.get("app_name")
    in_size, out_size = data.get("in_size"), data.get("out_size")
    if not isinstance(name, str) or not isinstance(app_name, str):
        raise ApiException("CreateWeightsNetException", "name and app_name are required")
    if data.get("model_type") != "std":
        raise ApiException("CreateWeightsNetException", f"unknown model type {data.get('model_type')!r}")
    if not isinstance(in_size, int) or not isinstance(out_size, int) or in_size < 1 or out_size < 1:
        raise ApiException("CreateWeightsNetException", "in_size and out_size must be positive integers")
    key = (owner, app_name, name)
    with models_lock:
        if key in models:
            raise ApiException("CreateWeightsNetException", f"model {name!r} already exists")
        models[key] = SgtModel(
            owner, app_name, name, "std", data.get("client_data"), in_size, out_size, bool(data.get("is_public"))
        )
    return json_response(None)


@app.post("/sgt/public/upload_sgt_model_train_data")
def upload_sgt_model_train_data():
    data = body()
    owner = authenticate(data)
    model = find_model(owner, data)
    train_data = data.get("train_data")
    if not isinstance(train_data, list):
        raise ApiException("UploadDataException", "train_data must be a list of [input, label] pairs")
    xs, ys = [], []
    for pair in train_data:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ApiException("UploadDataException", "each train_data item must be [input, label]")
        x, y = pair
        if not isinstance(x, list) or not isinstance(y, list) or len(x) != model.in_size or len(y) != model.out_size:
            raise ApiException(
                "UploadDataException", f"each pair must have {model.in_size} inputs and {model.out_size} labels"
            )
        xs.append(x)
        ys.append(y)
    if xs:
        try:
            xs, ys = torch.tensor(xs, dtype=torch.float32), torch.tensor(ys, dtype=torch.float32)
        except (TypeError, ValueError):
            raise ApiException("UploadDataException", "inputs and labels must be numbers")
        model.add_data(xs, ys)
    return json_response(None)


@app.post("/sgt/public/run_sgt_model")
def run_sgt_model():
    data = body()
    owner = authenticate(data)
    model = find_model(owner, data)
    rows = data.get("data")
    if not isinstance(rows, list):
        raise ApiException("RunWeightsNetException", "data must be a list of rows")
    if not rows:
        return json_response([])
    for row in rows:
        if not isinstance(row, list) or len(row) != model.in_size:
            raise ApiException("RunWeightsNetException", f"every row must have {model.in_size} numbers")
    try:
        return json_response(model.run(rows))
    except (TypeError, ValueError):
        raise ApiException("RunWeightsNetException", "rows must contain only numbers")


def main():
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", os.environ.get("BASELINE_PORT", "8000")))
    host = os.environ.get("BASELINE_HOST", "127.0.0.1")
    app.run(host, port, threaded=True)


if __name__ == "__main__":
    main()
