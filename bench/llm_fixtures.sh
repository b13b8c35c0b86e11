#!/usr/bin/env bash
# Records llama.cpp's token ids, logits and greedy tokens for the built-in SmolLM2 GGUF into
# sidecar/tests/fixtures/smollm2_reference.json (see bench/llm_fixtures.py). llama-cpp-python
# builds llama.cpp from source: about 5 minutes on 2 cores, once, into bench/.venv-llama.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv=bench/.venv-llama
if ! "$venv/bin/python" -c 'import llama_cpp, numpy' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check llama-cpp-python==0.3.36 numpy==2.4.6
fi
models="$(scripts/fetch-models)"
"$venv/bin/python" bench/llm_fixtures.py "$models/smollm2-135m-instruct/model.gguf" \
    sidecar/tests/fixtures/smollm2_reference.json
echo "wrote sidecar/tests/fixtures/smollm2_reference.json" >&2
