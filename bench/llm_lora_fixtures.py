"""Records what PEFT says a LoRA adapter does to SmolLM2-135M-Instruct, as the independent
reference for the sidecar's adapters (naming, scale, and the q/k row order).

    bench/llm_hf_fixtures.sh

transformers reads the built-in GGUF (f32), PEFT wraps it with a rank-4 adapter on q, k, v, o
and down of every layer, and the adapter's values are a formula (the small LCG of
sidecar/tests/llm_lora.rs), so the Rust test builds the same adapter and no weights are
committed. Writes sidecar/tests/fixtures/smollm2_lora_reference.json: for the prompts of
smollm2_reference.json, at the same positions, PEFT's top-k ids with their logits and the
row's log-sum-exp.
"""

import json
import os
import sys

import numpy as np
import peft
import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from llm_hf_fixtures import logits  # noqa: E402

MODEL_DIR = sys.argv[1]
FIXTURES = sys.argv[2]
RANK = 4
ALPHA = 8.0
# In the order of llm_lora.rs's `targets`: the seed of layer l, target k is l * 16 + k.
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]
MASK = (1 << 64) - 1


def values(n, seed):
    """llm_lora.rs's `values`: n f32s in [-0.05, 0.05) from a 64-bit LCG."""
    a, c = 6364136223846793005, 1442695040888963407
    state = (seed * a + c) & MASK
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        state = (state * a + c) & MASK
        out[i] = (np.float32(state >> 40) / np.float32(1 << 24) - np.float32(0.5)) * np.float32(0.1)
    return out


def main():
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file="model.gguf", dtype=torch.float32)
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0, bias="none")
    model = peft.get_peft_model(model, config)
    model.eval()
    layers = model.base_model.model.model.layers
    with torch.no_grad():
        for l, layer in enumerate(layers):
            for k, name in enumerate(TARGETS):
                module = getattr(layer.self_attn, name, None) or getattr(layer.mlp, name)
                a = module.lora_A["default"].weight
                b = module.lora_B["default"].weight
                seed = l * 16 + k
                a.copy_(torch.from_numpy(values(a.numel(), seed).reshape(a.shape)))
                b.copy_(torch.from_numpy(values(b.numel(), seed + 1000).reshape(b.shape)))
    with open(os.path.join(FIXTURES, "smollm2_reference.json")) as f:
        reference = json.load(f)
    out = {
        "peft": peft.__version__,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "rank": RANK,
        "alpha": ALPHA,
        "logits": logits(model, reference),
    }
    with open(os.path.join(FIXTURES, "smollm2_lora_reference.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
