"""The scheduler on a real GPU (issue 17, item 6): three profiles of one model, with context sizes
that make their VRAM differ, under a per-GPU budget that holds any two but not all three, driven
through `llmctl serve` by a short trace. Run by benchmarks/gpu_sched_run.sh on the GPU machine.

    python benchmarks/gpu_sched_run.py --binary DIR/llama-server --model tiny.gguf --out DIR

1. Learning: `serve` with a budget far above need; one request to each profile. After each start
   the gateway reads the server's VRAM from nvidia-smi (pool -> control.measure) and keeps it
   (gpu/learned.py). Printed: estimate (GGUF header) against measured, per profile.
2. The budget: the two largest measured figures fit, all three do not: halfway between.
3. The trace, through a second `serve` that starts from the learned figures: requests to a, b and
   c (three at once for c: one start serves them all), requests during c's min_resident (the
   swap back waits instead of evicting c at once), then a mixed tail. Recorded per request: when
   sent, model, HTTP status, seconds to the answer. From the gateway: starts, stops by reason
   (budget = a swap to make room), start durations, what nvidia-smi showed at each step.
Everything is written under --out (trace.json, summary.json) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
CTX = {"a": 32768, "b": 65536, "c": 98304}  #: the tiny model's KV cache is 1 KiB a token


def profiles_yaml(binary: Path, model: Path, budget_mib: int, port0: int) -> str:
    lib = binary.parent
    out = ["profiles:"]
    for i, (name, ctx) in enumerate(CTX.items()):
        out.append(f"  {name}: {{model: {model}, port: {port0 + i}, backend: vulkan, gpu_layers: 99, "
                   f"ctx_size: {ctx}, parallel: 1, binary: {binary}, env: {{LD_LIBRARY_PATH: {lib}}}}}")
    out.append(f"defaults: {{vram_budget: {{0: {budget_mib}MiB}}, min_resident: 3}}")
    return "\n".join(out) + "\n"


def llmctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmctl", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def smi_apps() -> str:
    r = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True)
    return " ".join(r.stdout.split()) or "(none)"


class Gateway:
    """`llmctl serve` as a child process, its log in a file."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.proc = subprocess.Popen([sys.executable, "-m", "llmctl", "serve", "--port", str(port), "--verbose"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"serve did not answer: {log.read_text()[-2000:]}")

    def ask(self, model: str, sent: float, rows: list[dict], lock: threading.Lock) -> None:
        t = time.monotonic()
        try:
            r = httpx.post(self.url + "/v1/completions", timeout=120,
                           json={"model": model, "prompt": "Once upon a time", "max_tokens": 2, "temperature": 0})
            status, error = r.status_code, "" if r.status_code == 200 else r.text[:300]
        except httpx.HTTPError as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"
        with lock:
            rows.append({"sent_s": round(t - sent, 3), "model": model, "status": status,
                         "seconds": round(time.monotonic() - t, 3), "vram_after": smi_apps(), "error": error})

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(("llmctl_gateway_starts_total", "llmctl_gateway_stops_total",
                                "llmctl_gateway_start_duration_seconds_sum",
                                "llmctl_gateway_start_duration_seconds_count")):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


#: (seconds after the start, model, how many at once)
TRACE = [(0, "a", 1), (3, "b", 1), (6, "a", 1), (8, "b", 1),
         (10, "c", 3),  # c does not fit beside a and b: one swap, three requests served
         (11.5, "a", 1), (12, "b", 1),  # within c's min_resident: they wait rather than evict it at once
         (20, "c", 1), (22, "a", 1), (24, "c", 1), (26, "b", 1), (28, "a", 1), (30, "c", 2), (33, "a", 1),
         (35, "b", 1)]


def run_trace(gw: Gateway) -> list[dict]:
    rows: list[dict] = []
    lock = threading.Lock()
    threads = []
    t0 = time.monotonic()
    for at, model, n in TRACE:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        for _ in range(n):
            th = threading.Thread(target=gw.ask, args=(model, t0, rows, lock))
            th.start()
            threads.append(th)
    for th in threads:
        th.join()
    return sorted(rows, key=lambda r: r["sent_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    home = Path(os.environ.get("LLMCTL_HOME", "/tmp/llmctl-sched"))
    f = a.out / "profiles.yaml"
    env = {**os.environ, "LLMCTL_HOME": str(home), "LLMCTL_PROFILES": str(f), "PYTHONUNBUFFERED": "1"}
    summary: dict = {}

    print("== 1. learning: a budget far above need, one request to each", flush=True)
    f.write_text(profiles_yaml(a.binary, a.model, 100_000, 18400))
    plan = json.loads(llmctl("plan", "a", "b", "c", "--json", env=env).stdout)
    estimate = {e["profile"]: plan["estimated"].get(e["profile"], e["total"]) for e in plan["profiles"]}  # GGUF
    gw = Gateway(env, 18480, a.out / "serve-learn.log")
    rows: list[dict] = []
    try:
        for name in CTX:
            gw.ask(name, time.monotonic(), rows, threading.Lock())
            r = rows[-1]
            print(f"  {name}: HTTP {r['status']} in {r['seconds']} s; nvidia-smi: {r['vram_after']}")
    finally:
        gw.close()
    learned = json.loads((home / "learned-vram.json").read_text()) if (home / "learned-vram.json").exists() else {}
    measured = {k.split("|")[0]: v for k, v in learned.items()}
    print("profile  ctx     estimate MiB  measured MiB  measured/estimate")
    for name in CTX:
        e, m = estimate.get(name) or 0, measured.get(name)
        print(f"{name:8} {CTX[name]:6}  {e / MIB:12.1f}  {(m or 0) / MIB:12.1f}  "
              f"{(m / e if m and e else float('nan')):.2f}")
    summary["estimate_bytes"], summary["measured_bytes"] = estimate, measured
    if len(measured) < 3:
        raise SystemExit("the gateway learned no VRAM figure for some profile: see serve-learn.log")
    llmctl("down", env=env)

    sizes = sorted(measured[n] for n in CTX)
    two, three = sizes[1] + sizes[2], sum(sizes)
    budget_mib = (two + three) // 2 // MIB
    print(f"== 2. budget on GPU 0: {budget_mib} MiB (the two largest: {two / MIB:.0f} MiB; all three: "
          f"{three / MIB:.0f} MiB)", flush=True)
    f.write_text(profiles_yaml(a.binary, a.model, budget_mib, 18400))
    summary["budget_mib"] = budget_mib
    plan = llmctl("plan", "a", "b", "c", "--together", env=env)
    print(plan.stdout + plan.stderr)

    print("== 3. the trace through serve", flush=True)
    gw = Gateway(env, 18481, a.out / "serve-trace.log")
    try:
        rows = run_trace(gw)
        summary["metrics"] = gw.metrics()
    finally:
        gw.close()
    llmctl("down", env=env)
    print("sent s  model  status  seconds  nvidia-smi after (pid, MiB)")
    for r in rows:
        print(f"{r['sent_s']:6.2f}  {r['model']:5}  {r['status']!s:6}  {r['seconds']:7.2f}  {r['vram_after']}")
    for err in sorted({r["error"] for r in rows if r["error"]}):
        print("error answer:", err)
    for k, v in sorted(summary["metrics"].items()):
        print(f"{k} {v:g}")
    (a.out / "trace.json").write_text(json.dumps(rows, indent=1))
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("served:", sum(1 for r in rows if r["status"] == 200), "of", len(rows))


if __name__ == "__main__":
    main()
