"""Start-up cost of the commands scripts call in loops, against `hf version` (huggingface_hub's
CLI) measured in the same run. Goal (issue 8): `llmctl status --json` with two servers up, and
`llmctl --help`, in at most a third of `hf version`'s wall time.

    python benchmarks/startup.py [--runs 15]

Two real llama-servers (the tiny SmolLM2) are started under a temporary LLMCTL_HOME for the
status runs. Bytecode caching is on (PYTHONDONTWRITEBYTECODE unset, cache in a temp dir), as on
a normal install; one warm-up run each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, smollm2  # noqa: E402


def timed(argv: list[str], env: dict, runs: int) -> float:
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="llmctl-startup-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(LLMCTL_HOME=home, PYTHONPYCACHEPREFIX=os.path.join(home, "pycache"))
    model = smollm2()
    prof = Path(home) / "p.yaml"
    prof.write_text("profiles:\n" + "".join(
        f"  s{i}: {{model: {model}, port: {free_port()}, ctx_size: 512, threads: 1}}\n" for i in (1, 2)))
    env["LLMCTL_PROFILES"] = str(prof)
    llmctl, hf = str(BIN / "llmctl"), shutil.which("hf", path=str(BIN)) or "hf"
    subprocess.run([llmctl, "up", "s1", "s2"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        base = timed([hf, "version"], env, a.runs)
        rows = [("llmctl status --json (2 servers up)", timed([llmctl, "status", "--json"], env, a.runs)),
                ("llmctl --help", timed([llmctl, "--help"], env, a.runs)),
                ("python -c pass", timed([sys.executable, "-c", "pass"], env, a.runs))]
    finally:
        subprocess.run([llmctl, "down", "--all"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; medians of {a.runs} runs")
    print(f"{'hf version (baseline)':40} {base * 1000:7.0f} ms")
    for name, t in rows:
        print(f"{name:40} {t * 1000:7.0f} ms   ratio {t / base:.2f}   (goal <= 0.33)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
