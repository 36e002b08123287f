"""`llmctl pull` against `hf download`, from the same real mirror, measured in the same run;
then a pull killed mid-file and resumed, showing that only the remainder travels.

    python benchmarks/pull_vs_hf.py [--size-mb 256] [--runs 3]

The mirror is the tests' olah pair (tests/hub_mirror.py: an offline origin with a local git
repo, and a caching front that answers Range requests), on loopback. The repo holds one file of
--size-mb random bytes. Each round runs both commands (a new process each, cold: a fresh
LLMCTL_HOME / --local-dir and HF_HOME), alternating which goes first; throughput is size / wall
time of the whole command. Goal (issue 3): llmctl / hf >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hub_mirror import HubMirror, find_olah  # noqa: E402

REPO_ID = "bench-org/Bench-GGUF"
FILE = "bench-Q8_0.gguf"


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


def timed(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    olah = find_olah()
    if not olah:
        raise SystemExit("olah not found: python -m venv .venv-olah && .venv-olah/bin/pip install olah")
    hf = Path(sys.executable).with_name("hf")
    size = args.size_mb * 1_000_000

    with tempfile.TemporaryDirectory(prefix="pull-bench-") as tmp:
        root = Path(tmp)
        data = root / "data.bin"
        write_random(data, size)
        mirror = HubMirror(root / "mirror", olah)
        (root / "mirror").mkdir()
        mirror.add_repo(REPO_ID, {FILE: data, "README.md": b"benchmark\n"})
        data.unlink()
        print(f"starting the mirror and filling its cache with {size / 1e6:.0f} MB ...", file=sys.stderr)
        mirror.start()
        try:
            base = dict(os.environ, HF_ENDPOINT=mirror.url, HF_HUB_DISABLE_TELEMETRY="1")
            base.pop("HF_TOKEN", None)
            llmctl_t, hf_t = [], []
            for i in range(args.runs):
                home, out, hf_home = root / f"home{i}", root / f"hf-out{i}", root / f"hf-home{i}"
                pull = ([sys.executable, "-m", "llmctl", "pull", f"hf:{REPO_ID}/{FILE}"],
                        dict(base, LLMCTL_HOME=str(home)))
                dl = ([str(hf), "download", REPO_ID, FILE, "--local-dir", str(out)],
                      dict(base, HF_HOME=str(hf_home)))
                order = [("llmctl", pull), ("hf", dl)] if i % 2 == 0 else [("hf", dl), ("llmctl", pull)]
                for who, (argv, env) in order:
                    dt = timed(argv, env)
                    (llmctl_t if who == "llmctl" else hf_t).append(dt)
                    print(f"round {i + 1}: {who:6s} {dt:6.2f}s  {size / dt / 1e6:7.1f} MB/s", file=sys.stderr)
                    if who == "llmctl":
                        got = home / "models" / "bench-org--bench-gguf--bench-q8_0" / FILE
                    else:
                        got = out / FILE
                    assert got.stat().st_size == size, got
            l_med, h_med = statistics.median(llmctl_t), statistics.median(hf_t)

            # no-op: the same pull again
            noop_env = dict(base, LLMCTL_HOME=str(root / "home0"))
            noop = timed([sys.executable, "-m", "llmctl", "pull", f"hf:{REPO_ID}/{FILE}"], noop_env)

            # killed mid-file, then resumed
            home = root / "home-resume"
            env = dict(base, LLMCTL_HOME=str(home))
            part = home / "models" / "bench-org--bench-gguf--bench-q8_0" / ".pull" / (FILE + ".incomplete")
            p = subprocess.Popen([sys.executable, "-m", "llmctl", "pull", f"hf:{REPO_ID}/{FILE}"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while (part.stat().st_size if part.exists() else 0) < size // 2:
                if p.poll() is not None:
                    raise SystemExit("the pull finished before it could be killed: use a bigger --size-mb")
                time.sleep(0.002)
            p.send_signal(signal.SIGKILL)
            p.wait()
            kept = part.stat().st_size
            ranges_before = sum(" 206 " in ln for ln in mirror.requests(REPO_ID, FILE))
            r = subprocess.run([sys.executable, "-m", "llmctl", "pull", f"hf:{REPO_ID}/{FILE}", "--json"], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            res = json.loads(r.stdout)
            ranges_after = sum(" 206 " in ln for ln in mirror.requests(REPO_ID, FILE))
        finally:
            mirror.stop()

    print(f"\nfile: {size / 1e6:.0f} MB from olah on loopback, {args.runs} rounds, medians of whole-command wall time")
    for label, med, times in (("llmctl pull", l_med, llmctl_t), ("hf download", h_med, hf_t)):
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"  {label} : {med:6.2f}s  {size / med / 1e6:7.1f} MB/s   (runs: {runs})")
    ratio = h_med / l_med
    print(f"  throughput ratio llmctl/hf = {ratio:.3f}  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    print(f"  llmctl also verified the file's git blob SHA-1; no-op re-pull: {noop:.2f}s")
    print(f"\nresume: killed at {kept / 1e6:.1f} MB of {size / 1e6:.0f} MB (SIGKILL)")
    print(f"  next pull: resumed_bytes={res['resumed_bytes']}, transferred_bytes={res['transferred_bytes']}, "
          f"remainder={size - kept}, verified={res['verified']}")
    print(f"  mirror answered {ranges_after - ranges_before} Range request(s) with 206 Partial Content")
    only_rest = res["transferred_bytes"] == size - kept and res["resumed_bytes"] == kept
    print(f"  transferred / remainder = {res['transferred_bytes'] / (size - kept):.3f} "
          f"({'only the remainder' if only_rest else 'MORE than the remainder'})")


if __name__ == "__main__":
    main()
