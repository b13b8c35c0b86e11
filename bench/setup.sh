#!/usr/bin/env bash
# Creates bench/.venv with the pinned PyTorch (CPU use) + Flask baseline. Idempotent: a second
# run only checks that the pins are installed and that torch works.
#
# Why --no-deps: torch's wheel on PyPI (Linux x86_64) depends on ~3 GB of CUDA wheels
# (5.3 GB installed, ~70 s). Only the CUDA libraries that libtorch is linked against are needed for a
# CPU `import torch`; requirements.txt pins exactly those (about 2.5 GB to download, 4.1 GB
# installed, ~80 s cold on the 2-core box), and --no-deps keeps pip from pulling in the rest (triton, cusolver, ...).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
fi
"$venv/bin/pip" install --quiet --no-deps -r "$here/requirements.txt"
"$venv/bin/python" - <<'PY'
import importlib.metadata, flask, torch
x = torch.randn(3) @ torch.randn(3)
print(f"bench/.venv ok: torch {torch.__version__}, flask {importlib.metadata.version('flask')}")
PY
