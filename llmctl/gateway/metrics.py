"""The gateway's Prometheus metrics (text exposition format 0.0.4), kept in plain dicts: every
update happens on the event loop, so nothing needs a lock.

    llmctl_gateway_requests_total{profile,endpoint,code}        counter
    llmctl_gateway_request_duration_seconds{profile,endpoint}   histogram (to the last byte)
    llmctl_gateway_time_to_first_byte_seconds{profile,endpoint} histogram (the server's first byte)
    llmctl_gateway_tokens_total{profile,kind=prompt|completion} counter (from usage / timings)
    llmctl_gateway_starts_total{profile,outcome=ok|failed}      counter
    llmctl_gateway_start_duration_seconds{profile}              histogram
    llmctl_gateway_stops_total{profile,reason=idle|swap|budget|exit}  counter
    llmctl_gateway_fallbacks_total{profile}                     counter (requests a fallback served)
    llmctl_gateway_inflight{profile}, llmctl_gateway_waiting{profile}   gauges
    llmctl_gateway_up{profile}                                  gauge: 1 running, 0 otherwise
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Any, Iterable, Protocol

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
START_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
NO_PROFILE = ""
RECENT = 100  #: requests the dashboard lists (no bodies: when, what, how it ended, how long)
MODEL_CHARS = 200  #: of the model name a client asked for, kept in the list
Key = tuple[str, ...]  #: label values, in the order of the metric's label names


class Histogram:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.sum += v
        self.count += 1
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
                break


class PoolMetrics(Protocol):
    """What the pool reports: starts and stops. :class:`Metrics` counts them; :data:`NO_METRICS`
    drops them (a pool used without a gateway)."""

    def start_result(self, profile: str, ok: bool, seconds: float) -> None: ...

    def stopped(self, profile: str, reason: str) -> None: ...


class NoMetrics:
    """:class:`PoolMetrics` that counts nothing."""

    def start_result(self, profile: str, ok: bool, seconds: float) -> None:
        pass

    def stopped(self, profile: str, reason: str) -> None:
        pass


NO_METRICS: PoolMetrics = NoMetrics()


class Metrics:
    """The gateway's counters, histograms and gauges; :meth:`render` writes them for Prometheus."""

    def __init__(self) -> None:
        self.requests: dict[Key, int] = defaultdict(int)
        self.duration: dict[Key, Histogram] = {}
        self.ttfb: dict[Key, Histogram] = {}
        self.tokens: dict[Key, int] = defaultdict(int)
        self.starts: dict[Key, int] = defaultdict(int)
        self.start_duration: dict[Key, Histogram] = {}
        self.stops: dict[Key, int] = defaultdict(int)
        self.fallbacks: dict[Key, int] = defaultdict(int)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)  #: the last requests, newest last

    # -- updates (event loop only) ---------------------------------------------------------
    def request(self, profile: str | None, endpoint: str, code: int, seconds: float, model: Any = None) -> None:
        """A request answered: ``profile`` served it (None: none did), ``model`` is what the
        client asked for (a task, a profile, a served name; listed in :attr:`recent` only, never
        a label: the client picks it)."""
        p = profile or NO_PROFILE
        self.requests[(p, endpoint, str(code))] += 1
        h = self.duration.get((p, endpoint))
        if h is None:
            h = self.duration[(p, endpoint)] = Histogram(LATENCY_BUCKETS)
        h.observe(seconds)
        asked = model[:MODEL_CHARS] if isinstance(model, str) else None
        self.recent.append({"time": round(time.time(), 3), "model": asked, "profile": profile, "endpoint": endpoint,
                            "status": code, "latency_s": round(seconds, 4), "prompt_tokens": None,
                            "completion_tokens": None})

    def first_byte(self, profile: str, endpoint: str, seconds: float) -> None:
        h = self.ttfb.get((profile, endpoint))
        if h is None:
            h = self.ttfb[(profile, endpoint)] = Histogram(LATENCY_BUCKETS)
        h.observe(seconds)

    def usage(self, profile: str, prompt: int | None, completion: int | None) -> None:
        """Called right after :meth:`request` for the same request (no await between): its tokens."""
        last = self.recent[-1] if self.recent else None
        if last is not None and last["profile"] == profile:
            last["prompt_tokens"], last["completion_tokens"] = prompt, completion
        if prompt:
            self.tokens[(profile, "prompt")] += int(prompt)
        if completion:
            self.tokens[(profile, "completion")] += int(completion)

    def start_result(self, profile: str, ok: bool, seconds: float) -> None:
        self.starts[(profile, "ok" if ok else "failed")] += 1
        if ok:
            h = self.start_duration.get((profile,))
            if h is None:
                h = self.start_duration[(profile,)] = Histogram(START_BUCKETS)
            h.observe(seconds)

    def stopped(self, profile: str, reason: str) -> None:
        self.stops[(profile, reason)] += 1

    def fallback(self, profile: str) -> None:
        self.fallbacks[(profile,)] += 1

    # -- exposition -------------------------------------------------------------------------
    def render(self, pool_rows: Iterable[dict[str, Any]] = ()) -> str:
        out: list[str] = []
        _counter(out, "llmctl_gateway_requests_total", "Requests answered, by profile, endpoint and HTTP code.",
                 ("profile", "endpoint", "code"), self.requests)
        _histograms(out, "llmctl_gateway_request_duration_seconds", "Request duration, to the last byte.",
                    ("profile", "endpoint"), self.duration)
        _histograms(out, "llmctl_gateway_time_to_first_byte_seconds", "Time until the server's first byte.",
                    ("profile", "endpoint"), self.ttfb)
        _counter(out, "llmctl_gateway_tokens_total", "Tokens processed, from the servers' usage reports.",
                 ("profile", "kind"), self.tokens)
        _counter(out, "llmctl_gateway_starts_total", "Server starts by the gateway.", ("profile", "outcome"),
                 self.starts)
        _histograms(out, "llmctl_gateway_start_duration_seconds", "Time from start to healthy (incl. stops "
                    "of swapped-out servers).", ("profile",), self.start_duration)
        _counter(out, "llmctl_gateway_stops_total", "Server stops by the gateway.", ("profile", "reason"), self.stops)
        _counter(out, "llmctl_gateway_fallbacks_total", "Requests served by a fallback profile.", ("profile",),
                 self.fallbacks)
        rows = list(pool_rows)
        for metric, key, help_ in (("llmctl_gateway_inflight", "inflight", "Requests being served."),
                                   ("llmctl_gateway_waiting", "waiting", "Requests waiting for a start or swap.")):
            out += [f"# HELP {metric} {help_}", f"# TYPE {metric} gauge"]
            out += [f'{metric}{{profile="{_esc(r["name"])}"}} {r[key]}' for r in rows]
        out += ["# HELP llmctl_gateway_up 1 when the profile's server is running.", "# TYPE llmctl_gateway_up gauge"]
        out += [f'llmctl_gateway_up{{profile="{_esc(r["name"])}"}} {1 if r["state"] == "running" else 0}' for r in rows]
        return "\n".join(out) + "\n"


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: Key, extra: str = "") -> str:
    parts = [f'{n}="{_esc(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _counter(out: list[str], name: str, help_: str, labels: tuple[str, ...], data: dict[Key, int]) -> None:
    out += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
    out += [f"{name}{_labels(labels, k)} {v}" for k, v in sorted(data.items())]


def _histograms(out: list[str], name: str, help_: str, labels: tuple[str, ...], data: dict[Key, Histogram]) -> None:
    out += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    for k, h in sorted(data.items()):
        acc = 0
        for b, c in zip(h.buckets, h.counts):
            acc += c
            le = f'le="{b:g}"'
            out.append(f"{name}_bucket{_labels(labels, k, le)} {acc}")
        inf = 'le="+Inf"'
        out.append(f"{name}_bucket{_labels(labels, k, inf)} {h.count}")
        out.append(f"{name}_sum{_labels(labels, k)} {h.sum:.6f}")
        out.append(f"{name}_count{_labels(labels, k)} {h.count}")
