"""sentence-transformers' token ids and normalised embeddings for a fixed set of texts.

Usage: embed_fixtures.py MODEL_DIR OUT.json
"""
import json
import sys

import torch
from sentence_transformers import SentenceTransformer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "A man is playing a guitar on stage.",
    "How do I reset my password?",
    "fn main() { println!(\"hello\"); }",
    "Prices rose 3.5% in 2024, to $1,299.99.",
    "naïve café résumé — déjà vu",
    "北京是中国的首都。",
    "I love pizza 🍕👩‍👩‍👧!",
    "UPPER and lower Case",
    "a",
    # Longer than the model's 256 tokens: sentence-transformers truncates it.
    " ".join(f"word{i} is followed by another word" for i in range(80)),
]


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu")
    tok = model.tokenizer
    ids = [
        tok(t, truncation=True, max_length=model.max_seq_length)["input_ids"] for t in TEXTS
    ]
    vectors = model.encode(TEXTS, batch_size=4, normalize_embeddings=False, convert_to_numpy=True)
    json.dump(
        {
            "source": "sentence-transformers 6.3.0 (PyTorch 2.15 CPU), bench/embed_fixtures.py",
            "max_seq_length": model.max_seq_length,
            "cases": [
                {"text": t, "ids": i, "embedding": [float(x) for x in v]}
                for t, i, v in zip(TEXTS, ids, vectors)
            ],
        },
        open(out, "w"),
        indent=None,
    )


if __name__ == "__main__":
    main()
