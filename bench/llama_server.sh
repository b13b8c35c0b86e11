#!/usr/bin/env bash
# Builds llama.cpp's own server (`llama-server`) once, from the source pinned by
# llama-cpp-python 0.3.36's sdist (vendor/llama.cpp), with cmake and ninja from PyPI, and prints
# its path. About 8.5 minutes on 2 cores (FACTS.md). The fair baseline for concurrent streams:
# llama-cpp-python's own server answers one request at a time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/bench/.llama-server"
bin="$dir/build/bin/llama-server"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$dir"
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check cmake==4.2.1 ninja==1.13.0 >&2
"$dir/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    llama-cpp-python==0.3.36 -d "$dir/sdist" >&2
tar -xzf "$dir"/sdist/llama_cpp_python-0.3.36.tar.gz -C "$dir"
src="$dir/llama_cpp_python-0.3.36/vendor/llama.cpp"
export PATH="$dir/venv/bin:$PATH"
cmake -S "$src" -B "$dir/build" -G Ninja -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$dir/build" --target llama-server -j2 >&2
echo "$bin"
