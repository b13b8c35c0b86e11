#!/usr/bin/env bash
# bench/.venv (bench/setup.sh's pinned torch) plus sentence-transformers. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh" >&2
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements-embed.txt" >&2
