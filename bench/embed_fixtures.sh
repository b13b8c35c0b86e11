#!/usr/bin/env bash
# Records sentence-transformers' token ids and embeddings for the built-in all-MiniLM-L6-v2
# into sidecar/tests/fixtures/minilm_reference.json (see bench/embed_fixtures.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash bench/embed_setup.sh
models="$(scripts/fetch-models)"
bench/.venv/bin/python bench/embed_fixtures.py "$models/all-minilm-l6-v2" \
    sidecar/tests/fixtures/minilm_reference.json
echo "wrote sidecar/tests/fixtures/minilm_reference.json" >&2
