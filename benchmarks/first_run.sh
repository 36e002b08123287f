#!/usr/bin/env bash
# The README's first command on a fresh clone, as a new user meets it: once with nothing cached
# (a new HOME: no llmctl wheel cache, no model cache; pip's cache off), then a second time.
# Goals (issue 12, 2 cores): fresh at most 360 s, second run at most 30 s. Prints each time, its
# ratio to the goal, and the ratio of the fresh run to the second.
#
#     bash benchmarks/first_run.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/llmctl-first-run.XXXXXX)
trap 'HOME=$tmp/home "$tmp/llmctl/.venv/bin/llmctl" -f "$tmp/llmctl/profiles/demo.yaml" down >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/llmctl"
mkdir -p "$tmp/home"
export HOME=$tmp/home PIP_NO_CACHE_DIR=1
unset LLMCTL_HOME XDG_CACHE_HOME XDG_STATE_HOME XDG_DATA_HOME XDG_CONFIG_HOME LLMCTL_WHEEL_CACHE
cd "$tmp/llmctl"
run() {
  local t0 t1
  t0=$(date +%s.%N)
  bash scripts/demo.sh > "$tmp/$1.log" 2>&1 || { tail -30 "$tmp/$1.log"; exit 1; }
  t1=$(date +%s.%N)
  .venv/bin/llmctl -f profiles/demo.yaml down > /dev/null
  grep -q "demo servers are up" "$tmp/$1.log"
  echo "$t1 - $t0" | bc
}
fresh=$(run fresh)
second=$(run second)
printf 'cores: %s\n' "$(nproc)"
printf 'fresh clone, nothing cached: %6.1f s  (goal 360 s: ratio %.2f)\n' "$fresh" "$(echo "$fresh / 360" | bc -l)"
printf 'second run:                  %6.1f s  (goal  30 s: ratio %.2f)\n' "$second" "$(echo "$second / 30" | bc -l)"
printf 'fresh / second: %.0f\n' "$(echo "$fresh / $second" | bc -l)"
