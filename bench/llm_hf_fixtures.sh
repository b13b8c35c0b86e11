#!/usr/bin/env bash
# Records transformers' view of the built-in SmolLM2 GGUF (its own layout and its own forward
# pass) into sidecar/tests/fixtures/smollm2_hf*, the reference for loading Llama models from
# safetensors (bench/llm_hf_fixtures.py), and PEFT's for a LoRA adapter on it into
# smollm2_lora_reference.json (bench/llm_lora_fixtures.py). Uses bench/.venv
# (bench/embed_setup.sh) plus gguf, accelerate and peft (bench/requirements-hf.txt).
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
"$venv/bin/python" bench/llm_lora_fixtures.py "$models/smollm2-135m-instruct" sidecar/tests/fixtures
echo "wrote sidecar/tests/fixtures/smollm2_hf_reference.json, smollm2_hf/ and smollm2_lora_reference.json" >&2
