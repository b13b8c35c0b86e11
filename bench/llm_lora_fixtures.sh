#!/usr/bin/env bash
# Records PEFT's view of a formula-valued LoRA adapter on the built-in SmolLM2 GGUF into
# sidecar/tests/fixtures/smollm2_lora_reference.json (see bench/llm_lora_fixtures.py). Uses
# bench/.venv with transformers' GGUF reader (bench/llm_hf_fixtures.sh's packages) and peft.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv=bench/.venv
if ! "$venv/bin/python" -c 'import transformers, torch' 2>/dev/null; then
    bench/embed_setup.sh
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements-hf.txt
models="$(scripts/fetch-models)"
"$venv/bin/python" bench/llm_lora_fixtures.py "$models/smollm2-135m-instruct" sidecar/tests/fixtures
echo "wrote sidecar/tests/fixtures/smollm2_lora_reference.json" >&2
