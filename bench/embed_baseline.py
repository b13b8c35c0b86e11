"""sentence-transformers' embedding figures for BENCHMARKS.md, and the sentences both sides use.

Usage: embed_baseline.py MODEL_DIR THREADS SENTENCES_OUT
Writes 1,000 sentences of 8-30 words (seeded) to SENTENCES_OUT, one a line, then times
`encode` over them at batch 32 (sentence-transformers' default) and one short sentence alone.
"""
import random
import statistics
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

WORDS = (
    "the a model data cloud server request user answer quickly slowly river mountain city "
    "learns trains predicts reads writes stores quarterly report revenue cost hiring office "
    "engine token batch memory network garden music history science paper window morning "
    "evening green blue bright quiet heavy light simple complex because although while"
).split()


def sentences(n: int) -> list[str]:
    rng = random.Random(7)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 30))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def main() -> None:
    model_dir, threads, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(threads)
    texts = sentences(1000)
    with open(out, "w") as f:
        f.write("\n".join(texts) + "\n")
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        model.encode(texts, batch_size=32)
        runs.append(time.perf_counter() - t)
    one = []
    for i in range(50):
        t = time.perf_counter()
        model.encode([texts[i]], batch_size=1)
        one.append(time.perf_counter() - t)
    best = min(runs)
    print(
        f"sentence-transformers: 1,000 sentences in {best:.3f} s (best of 3) = "
        f"{1000 / best:.0f} sentences/s; one sentence p50 {statistics.median(one) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
