"""Records what llama.cpp says about SmolLM2-135M-Instruct (the built-in GGUF), as the
independent reference the sidecar's tokenizer and model are tested against.

    bench/llm_fixtures.sh          (sets up bench/.venv-llama with the pinned llama-cpp-python)

Writes sidecar/tests/fixtures/smollm2_reference.json:
  - "tokens": for each text, the ids llama.cpp's tokenizer gives (no BOS, special tokens
    parsed, as a chat-templated prompt needs);
  - "logits": for each prompt, at its first positions and its last one, llama.cpp's top-k ids
    with their logits and the log-sum-exp of the whole row;
  - "greedy": each prompt's first greedy tokens (no repetition penalty), each with the gap
    between the two highest logits, so a test can tell a near tie from a real difference.
The Rust tests read this file and need no Python.
"""

import json
import math
import sys

import llama_cpp
import numpy as np

MODEL = sys.argv[1]
OUT = sys.argv[2]

TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days.",
    "  leading spaces and trailing  ",
    "naïve café 你好 🚀\n\ttab",
    "中文文本：人工智能正在改变世界。",
    "def add(a, b):\n    return a + b  # 1234567890\n",
    "emoji 👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵 and ZWJ",
    "Numbers: 3.14159, -42, 1e10, 0x1F, 100%",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n",
    "Tabs\tand\r\nwindows line ends\n\n\nand   runs of     spaces",
    "URLs: https://example.com/a?b=c&d=e#f and mail@example.org",
    "",
]

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n",
    "The capital of Germany is",
    "def fibonacci(n):\n    ",
    "1, 2, 3, 4, 5,",
]

# The KV cache in f32 (llama.cpp's default is f16), so the reference is what an exact
# implementation of the same quantized weights gives, not one more rounding step.
KV_TYPE = 0  # GGML_TYPE_F32
TOP_K = 20
FIRST_POSITIONS = 4
GREEDY_TOKENS = 24


def main():
    llm = llama_cpp.Llama(
        model_path=MODEL, n_ctx=2048, n_threads=2, logits_all=True, verbose=False, seed=0, type_k=KV_TYPE, type_v=KV_TYPE, flash_attn=False
    )
    tokens = []
    for text in TEXTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        tokens.append({"text": text, "ids": ids})

    logits = []
    greedy = []
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        rows = np.array(llm.scores[: len(ids)], dtype=np.float64)
        positions = sorted(set(list(range(min(FIRST_POSITIONS, len(ids)))) + [len(ids) - 1]))
        entries = []
        for p in positions:
            row = rows[p]
            top = np.argsort(-row)[:TOP_K]
            m = row.max()
            lse = m + math.log(np.exp(row - m).sum())
            entries.append(
                {
                    "position": p,
                    "top_ids": [int(i) for i in top],
                    "top_logits": [float(row[i]) for i in top],
                    "logsumexp": lse,
                }
            )
        logits.append({"prompt": prompt, "ids": ids, "positions": entries})

        out, margins = [], []
        llm.reset()
        llm.eval(ids)
        for _ in range(GREEDY_TOKENS):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            first, second = np.argsort(-row)[:2]
            nxt = int(first)
            out.append(nxt)
            margins.append(float(row[first] - row[second]))
            if nxt == llm.token_eos():
                break
            llm.eval([nxt])
        greedy.append({"prompt": prompt, "ids": ids, "generated": out, "margins": margins})

    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(
            {
                "source": f"llama-cpp-python {llama_cpp.__version__}, n_threads=2, f32 KV cache, no flash attention",
                "model": "SmolLM2-135M-Instruct.Q4_1.gguf (sha256 b179c952...)",
                "tokens": tokens,
                "logits": logits,
                "greedy": greedy,
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
        f.write("\n")


main()
