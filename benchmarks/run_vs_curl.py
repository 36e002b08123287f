"""`llmctl run` against `curl` sending the same request to the same running server, measured in
the same run, interleaved.

    python benchmarks/run_vs_curl.py [--rounds 15] [--max-tokens 8]

A real llama-server (SmolLM2-135M, CPU) is started through llmctl's Supervisor in a temporary
LLMCTL_HOME. Each round runs, in turn:
  curl      `curl -sN` POSTing the exact body `llmctl run --dry-run` prints (stream, same sampling)
  llmctl    `llmctl run --profile bench ...` (the console script: Typer app, profile loading,
            routing through the state files, the streamed request)
  fast      `python -m llmctl.cli.fast run ...` (the same `run` without Typer: what the
            console script costs once its entry point tries the fast path first)
  python    `python -c pass` (the interpreter's own start-up, for reference)
Temperature 0 and a fixed seed make every answer the same length. Python's bytecode cache is on
(in a temporary PYTHONPYCACHEPREFIX), as for an installed llmctl. Goal (issue 4): the median
added time of `llmctl run` over curl <= 80 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, smollm2  # noqa: E402


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return dt * 1000, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--max-tokens", type=int, default=8)
    args = ap.parse_args()
    if not shutil.which("curl"):
        raise SystemExit("curl is needed")

    tmp = Path(tempfile.mkdtemp(prefix="llmctl-bench-"))
    port = free_port()
    prof = tmp / "llmctl.yaml"
    prof.write_text(f"profiles:\n  bench:\n    model: {smollm2()}\n    port: {port}\n    ctx_size: 2048\n"
                    f"    threads: 2\n    start_timeout: 120\n")
    env = dict(os.environ, LLMCTL_HOME=str(tmp / "home"), NO_COLOR="1")
    # as installed: bytecode cached (a dev shell's PYTHONDONTWRITEBYTECODE would make every run
    # compile llmctl from source); the cache goes to the temporary directory, not the repo
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    os.environ.update(LLMCTL_HOME=env["LLMCTL_HOME"])

    from llmctl import Supervisor, load_profiles

    sup = Supervisor(load_profiles([str(prof)]))
    sup.start(["bench"])
    try:
        bindir = Path(sys.executable).parent
        llmctl = str(bindir / "llmctl") if (bindir / "llmctl").exists() else None
        opts = ["--profile", "bench", "--mode", "server", "--temperature", "0", "--seed", "1",
                "--max-tokens", str(args.max_tokens), "-q", "Name three colours."]
        dry = subprocess.run([sys.executable, "-m", "llmctl", "-f", str(prof), "run", *opts, "--dry-run"],
                             env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True)
        server = json.loads(dry.stdout)["server"]
        body = tmp / "body.json"
        body.write_text(json.dumps(server["payload"]))
        cmds = {
            "curl": ["curl", "-sN", "--fail", "-H", "Content-Type: application/json", "--data-binary",
                     f"@{body}", server["url"]],
            "llmctl": ([llmctl] if llmctl else [sys.executable, "-m", "llmctl"]) + ["-f", str(prof), "run", *opts],
            "fast": [sys.executable, "-m", "llmctl.cli.fast", "-f", str(prof), "run", *opts],
            "python": [sys.executable, "-c", "pass"],
        }
        for argv in cmds.values():  # warm the page cache and the server's prompt cache
            timed(argv, env)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        answers: dict[str, set[str]] = {k: set() for k in cmds}
        for _ in range(args.rounds):
            for name, argv in cmds.items():
                ms, stdout = timed(argv, env)
                times[name].append(ms)
                answers[name].add(stdout.strip())
        med = {k: statistics.median(v) for k, v in times.items()}
        # added time: the median of each round's difference to the curl run just before it
        # (pairs taken close together, so load from elsewhere on the machine cancels out)
        added = {k: statistics.median(x - c for x, c in zip(times[k], times["curl"])) for k in ("llmctl", "fast")}
        print(f"{args.rounds} rounds, max_tokens {args.max_tokens}, server {server['url']} "
              f"(SmolLM2-135M Q4_1, CPU), times in ms:")
        print(f"{'':8} {'median':>8} {'min':>8} {'max':>8} {'added':>8} {'ratio':>6}")
        for k, v in times.items():
            add = f"{added[k]:8.1f}" if k in added else ""
            ratio = f"{med[k] / med['curl']:6.2f}" if k in added else ""
            print(f"{k:8} {med[k]:8.1f} {min(v):8.1f} {max(v):8.1f} {add:>8} {ratio:>6}")
        print("added = median over rounds of (command - curl of the same round); ratio = median / curl's median")
        for k, label in (("llmctl", "llmctl run (Typer CLI)"), ("fast", "llmctl run without Typer (fast path)")):
            print(f"{label}: {added[k]:.1f} ms added over curl; goal <= 80 ms: "
                  f"{'met' if added[k] <= 80 else 'not met'}")
        print(f"python start-up alone: {med['python']:.1f} ms; "
              f"same answer every round: llmctl {len(answers['llmctl']) == 1}, fast {len(answers['fast']) == 1}")
    finally:
        sup.stop(["bench"])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
