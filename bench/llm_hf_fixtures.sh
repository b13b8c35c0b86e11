#!/usr/bin/env bash
# Records transformers' view of the built-in SmolLM2 GGUF (its own layout and its own forward
# pass) into sidecar/tests/fixtures/smollm2_hf*, the reference for loading Llama models from
# safetensors (see bench/llm_hf_fixtures.py). Uses bench/.venv (bench/embed_setup.sh) plus the
# two packages transformers needs to read GGUF.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv=bench/.venv
if ! "$venv/bin/python" -c 'import transformers, torch' 2>/dev/null; then
    bench/embed_setup.sh
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements-hf.txt
models="$(scripts/fetch-models)"
"$venv/bin/python" bench/llm_hf_fixtures.py "$models/smollm2-135m-instruct" sidecar/tests/fixtures
echo "wrote sidecar/tests/fixtures/smollm2_hf_reference.json and smollm2_hf/" >&2
