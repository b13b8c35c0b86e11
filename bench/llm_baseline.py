"""llama.cpp's figures on the same GGUF and prompts as sidecar/examples/llm_bench.rs, through
llama-cpp-python's library (not its server, which adds Python per token and serves one request
at a time): time to first token for the ~200-token prompt, and greedy decode tokens/s at batch 1.
    bench/.venv-llama/bin/python bench/llm_baseline.py MODEL.gguf THREADS
"""

import json
import sys
import time

import llama_cpp
import numpy as np

MODEL, THREADS = sys.argv[1], int(sys.argv[2])


def prompt(run):
    notes = "\n".join(
        f"Note {i}: the quarterly report lists revenue, costs, hiring plans and the new office in city {i}."
        for i in range(1, 7)
    )
    return f"Request {run}: read the following notes and answer the question at the end.\n{notes}\nQuestion: summarise the notes in detail, point by point."


llm = llama_cpp.Llama(model_path=MODEL, n_ctx=2048, n_threads=THREADS, n_threads_batch=THREADS, n_batch=512, verbose=False)


def tokens(run):
    return llm.tokenize(prompt(run).encode(), add_bos=False, special=True)


def first_token_ms(run):
    ids = tokens(run)
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return (time.perf_counter() - start) * 1000, len(ids)


first_token_ms(0)
ttft = [first_token_ms(run) for run in (1, 2, 3)]

ids = tokens(10)
llm.reset()
llm.eval(ids)
nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
start = time.perf_counter()
for _ in range(127):
    llm.eval([nxt])
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
decode = 127 / (time.perf_counter() - start)
print(json.dumps({
    "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, library)",
    "prompt_tokens": ttft[0][1],
    "ttft_ms": [round(t[0], 1) for t in ttft],
    "decode_tok_s": round(decode, 1),
}))
