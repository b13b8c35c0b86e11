"""Records what Hugging Face transformers says about SmolLM2-135M-Instruct in its own layout, as
the independent reference for loading Llama models from safetensors.

    bench/llm_hf_fixtures.sh       (installs gguf and accelerate into bench/.venv)

transformers reads the built-in GGUF itself (dequantized to f32, q/k un-permuted to its rotary
layout, tensors renamed) and runs its own Llama forward pass in PyTorch. Writes:
  - sidecar/tests/fixtures/smollm2_hf/{config.json,tokenizer_config.json,chat_template.jinja}:
    the small files of the model folder transformers would save (its 3.5 MB tokenizer.json is
    left out: the test writes the tokenizer it has already checked against llama.cpp);
  - sidecar/tests/fixtures/smollm2_hf_reference.json:
    - "probes": for each tensor of layers 0 and 29 and the others, `w[r] . sin(c + 1)` for the
      rows listed, so a test can tell that its own export put every row where transformers
      puts it (a wrong rotary permutation moves rows);
    - "logits": for the prompts of smollm2_reference.json (the same ids), at the same
      positions, transformers' top-k ids with their logits and the row's log-sum-exp.
The Rust tests read these files and need no Python.
"""

import json
import math
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_DIR = sys.argv[1]
FIXTURES = sys.argv[2]
TOP_K = 20
PROBE_ROWS = list(range(16)) + list(range(16, 576, 37))


def probes(sd):
    out = {}
    for name, w in sd.items():
        layer = name.split(".")[2] if name.startswith("model.layers.") else None
        if layer not in (None, "0", "29"):
            continue
        w = w.detach().to(torch.float64).numpy()
        if w.ndim == 1:
            w = w[None, :]
        v = np.sin(np.arange(w.shape[1], dtype=np.float64) + 1.0)
        rows = [r for r in PROBE_ROWS if r < w.shape[0]]
        out[name] = {"shape": list(sd[name].shape), "rows": rows, "values": [float(w[r] @ v) for r in rows]}
    return out


def logits(model, reference):
    entries = []
    for prompt in reference["logits"]:
        ids = prompt["ids"]
        with torch.no_grad():
            rows = model(torch.tensor([ids])).logits[0].to(torch.float64).numpy()
        positions = []
        for p in [pos["position"] for pos in prompt["positions"]]:
            row = rows[p]
            top = np.argsort(-row)[:TOP_K]
            m = row.max()
            positions.append(
                {
                    "position": p,
                    "top_ids": [int(i) for i in top],
                    "top_logits": [float(row[i]) for i in top],
                    "logsumexp": float(m + math.log(np.exp(row - m).sum())),
                }
            )
        entries.append({"ids": ids, "positions": positions})
    return entries


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file="model.gguf", dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file="model.gguf")
    folder = os.path.join(FIXTURES, "smollm2_hf")
    os.makedirs(folder, exist_ok=True)
    # The exported folder holds plain weights: the GGUF origin is not part of its config.
    del model.config.quantization_config
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    os.remove(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(FIXTURES, "smollm2_reference.json")) as f:
        reference = json.load(f)
    out = {
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "probes": probes(model.state_dict()),
        "logits": logits(model, reference),
    }
    with open(os.path.join(FIXTURES, "smollm2_hf_reference.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
