"""The gateway's added latency, and 64 concurrent streaming clients, measured in the same run.

    python benchmarks/gateway_latency.py [--requests 1000] [--rounds 1] [--clients 64] [--max-tokens 16]

A real llama-server (SmolLM2-135M, CPU, 4 slots) is started through llmctl's Supervisor in a
temporary LLMCTL_HOME, and `llmctl serve` runs as a separate process in front of it.

1. Cheap endpoint: GET /health on the server directly, against GET /upstream/bench/health
   through the gateway (the same proxy path as /v1/*: routing, the state owner's lease, the
   pooled upstream connection, the relayed answer). Both over one keep-alive connection,
   interleaved, after a warm-up. Added latency = gateway percentile - direct percentile; and the
   median of the pairs' differences (each pair back to back: steadier under other load). The
   gateway process's CPU time per request (/proc) is printed too.
   Goal (issue 16): <= +1.0 ms at p50, <= +2.5 ms at p99.
2. A real request: POST /v1/chat/completions with max_tokens 1, direct vs through the gateway
   (task parameters merged in), interleaved. Goal (issue 16): <= +2.5 ms at p50.
3. N concurrent streaming clients through the gateway (a task with max_tokens), each checking
   it got 200, content pieces and the final [DONE]. Goal: zero errors.
4. The token counts of a 256 x 4096 embeddings answer, as the gateway reads them
   (llmctl.gateway.proxy.usage_from_body), against a json.loads of the whole body.
The gateway's loop and HTTP parser (uvloop/asyncio, httptools/h11) are printed first. On a
shared, noisy machine use ``--rounds N``: parts 1 and 2 are repeated and the median of the
rounds' added latencies is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, smollm2  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def row(label: str, direct: list[float], via: list[float]) -> None:
    d50, d99, g50, g99 = pct(direct, 50), pct(direct, 99), pct(via, 50), pct(via, 99)
    print(f"  {label:<28} direct p50 {d50:7.2f} p99 {d99:7.2f} | gateway p50 {g50:7.2f} p99 {g99:7.2f} | "
          f"added p50 {g50 - d50:+6.2f} ms, p99 {g99 - d99:+6.2f} ms (x{g50 / d50:.2f}, x{g99 / d99:.2f}); "
          f"median of the pairs' differences {paired(direct, via):+6.2f} ms")


def paired(direct: list[float], via: list[float]) -> float:
    """The median of (gateway - direct) over the interleaved pairs: each pair ran back to back,
    so what varies slowly (the server's own time under other load) cancels out."""
    return statistics.median(g - d for d, g in zip(direct, via))


def interleaved(client, a: tuple, b: tuple, n: int) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for i in range(n):
        for (method, url, kw), out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            r = client.request(method, url, **kw)
            dt = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                raise SystemExit(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
            out.append(dt)
    return ta, tb


async def stream_clients(url: str, n: int, max_tokens: int) -> tuple[int, list[str], list[float], float]:
    import httpx

    body = {"model": "chat", "messages": [{"role": "user", "content": "Tell me about cats."}], "stream": True}
    errors: list[str] = []
    ttfb: list[float] = []
    pieces = 0
    t0 = time.perf_counter()

    async def one(i: int, client: httpx.AsyncClient) -> None:
        nonlocal pieces
        start = time.perf_counter()
        first, done, got = None, False, 0
        try:
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    errors.append(f"client {i}: HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                    return
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    obj = json.loads(data)
                    if "error" in obj:
                        errors.append(f"client {i}: error event {obj['error']}")
                        return
                    for ch in obj.get("choices") or []:
                        if (ch.get("delta") or {}).get("content"):
                            got += 1
                            if first is None:
                                first = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - counted
            errors.append(f"client {i}: {type(exc).__name__}: {exc}")
            return
        if not done or not got:
            errors.append(f"client {i}: incomplete stream ({got} pieces, done={done})")
            return
        pieces += got
        ttfb.append(first * 1000)

    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await asyncio.gather(*(one(i, client) for i in range(n)))
    return pieces, errors, ttfb, time.perf_counter() - t0


def usage_read(rows: int = 256, dim: int = 4096) -> None:
    import random

    from llmctl.gateway.proxy import usage_from_body

    rnd = random.Random(1)
    data = [{"embedding": [rnd.uniform(-1, 1) for _ in range(dim)], "index": i, "object": "embedding"}
            for i in range(rows)]
    body = json.dumps({"data": data, "model": "m", "object": "list",
                       "usage": {"prompt_tokens": rows, "total_tokens": rows}}).encode()
    times = {}
    for name, fn in (("json.loads", json.loads), ("usage_from_body", usage_from_body)):
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn(body)
            runs.append((time.perf_counter() - t0) * 1000)
        times[name] = min(runs)
    print(f"4. usage of a {rows} x {dim} embeddings answer ({len(body) / 1e6:.1f} MB), best of 3, ms")
    print(f"  whole parse (json.loads) {times['json.loads']:.1f} | the gateway's read (usage_from_body) "
          f"{times['usage_from_body']:.3f} (x{times['usage_from_body'] / times['json.loads']:.5f})")


def stack() -> str:
    from importlib.util import find_spec

    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"{loop} + {'httptools' if find_spec('httptools') else 'h11'}"


def start(args) -> tuple:
    from llmctl import Supervisor, load_profiles

    root = Path(tempfile.mkdtemp(prefix="llmctl-gw-bench-"))
    os.environ["LLMCTL_HOME"] = str(root / "home")
    port, gw_port = free_port(), free_port()
    f = root / "llmctl.yaml"
    f.write_text(f"""
profiles:
  bench: {{model: {args.model or smollm2()}, port: {port}, ctx_size: 4096, parallel: 4, threads: 2}}
tasks:
  chat: {{profile: bench, temperature: 0, max_tokens: {args.max_tokens}}}
""")
    sup = Supervisor(load_profiles([str(f)]))
    sup.start(["bench"])
    gw = subprocess.Popen([sys.executable, "-m", "llmctl", "-f", str(f), "serve", "--port", str(gw_port),
                           "--max-concurrent", str(max(64, args.clients))],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return sup, gw, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{gw_port}"


def added(direct: list[float], via: list[float]) -> tuple[float, float, float]:
    return pct(via, 50) - pct(direct, 50), pct(via, 99) - pct(direct, 99), paired(direct, via)


def summary(label: str, rounds: list[tuple[float, float, float]]) -> None:
    """The median over rounds of the added p50 and p99 (each round's own direct baseline), and
    of the pairs' median differences."""
    p50s, p99s, pairs = [r[0] for r in rounds], [r[1] for r in rounds], [r[2] for r in rounds]
    print(f"  {label:<28} median of {len(rounds)} rounds: added p50 {statistics.median(p50s):+6.2f} ms, "
          f"p99 {statistics.median(p99s):+6.2f} ms, pairs {statistics.median(pairs):+6.2f} ms "
          f"(p50 per round: {' '.join(f'{v:+.2f}' for v in p50s)})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latencies(args, direct: str, gateway: str, pid: int) -> None:
    import httpx

    cheap: list[tuple[float, float, float]] = []
    chats: list[tuple[float, float, float]] = []
    with httpx.Client(timeout=120) as client:
        health = (("GET", direct + "/health", {}), ("GET", gateway + "/upstream/bench/health", {}))
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}
        pair = (("POST", direct + "/v1/chat/completions", {"json": dict(chat, model="x")}),
                ("POST", gateway + "/v1/chat/completions", {"json": dict(chat, model="chat")}))
        interleaved(client, *health, 100)  # warm-up: connections, code paths
        interleaved(client, *pair, 5)
        for n in range(args.rounds):
            tag = f" (round {n + 1} of {args.rounds})" if args.rounds > 1 else ""
            cpu = cpu_seconds(pid)
            d, g = interleaved(client, *health, args.requests)
            cpu = (cpu_seconds(pid) - cpu) * 1000 / args.requests
            print(f"1. cheap endpoint, {args.requests} requests each, ms{tag}; the gateway's CPU time per request "
                  f"{cpu:.2f} ms (less sensitive to other load than the latencies)")
            row("GET /health", d, g)
            cheap.append(added(d, g))
            d, g = interleaved(client, *pair, args.chat)
            print(f"2. chat completion, max_tokens 1, {args.chat} requests each, ms{tag}")
            row("POST /v1/chat/completions", d, g)
            chats.append(added(d, g))
    if args.rounds > 1:
        summary("GET /health", cheap)
        summary("POST /v1/chat/completions", chats)


def streams(args, gateway: str) -> None:
    import httpx

    pieces, errors, ttfb, wall = asyncio.run(stream_clients(gateway, args.clients, args.max_tokens))
    print(f"3. {args.clients} concurrent streaming clients through the gateway (max_tokens {args.max_tokens})")
    p50, worst = (statistics.median(ttfb), max(ttfb)) if ttfb else (float("nan"), float("nan"))
    print(f"  errors {len(errors)}; {pieces} content pieces in {wall:.2f} s; first piece p50 "
          f"{p50:.0f} ms, max {worst:.0f} ms")
    for e in errors[:10]:
        print("   ", e)
    metrics = httpx.get(gateway + "/metrics").text
    served = [ln for ln in metrics.splitlines() if ln.startswith("llmctl_gateway_requests_total")]
    print("  gateway metrics:", "; ".join(served))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=1000, help="cheap-endpoint requests per side")
    ap.add_argument("--chat", type=int, default=40, help="max_tokens=1 chat requests per side")
    ap.add_argument("--clients", type=int, default=64, help="concurrent streams (0: none)")
    ap.add_argument("--rounds", type=int, default=1, help="parts 1 and 2 this many times; medians at the end")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--model", type=Path, help="another GGUF model (default: SmolLM2-135M)")
    args = ap.parse_args()
    sup, gw, direct, gateway = start(args)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(iter(gw.stderr.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not any(gateway in ln for ln in log):
            if gw.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the gateway did not start:\n" + "".join(log))
            time.sleep(0.05)
        model = args.model.name if args.model else "SmolLM2-135M"
        print(f"llama-server ({model}, CPU) at {direct}; llmctl serve at {gateway} (separate process, "
              f"{stack()}); {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
        latencies(args, direct, gateway, gw.pid)
        if args.clients:
            streams(args, gateway)
    finally:
        gw.terminate()
        try:
            gw.wait(30)
        except subprocess.TimeoutExpired:
            gw.kill()
        sup.stop(None)
    usage_read()


if __name__ == "__main__":
    main()
