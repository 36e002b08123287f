"""Start, stop and inspect servers: what `up`, `down` and `status` do, usable without the CLI.

>>> from llmctl import Supervisor, load_profiles
>>> sup = Supervisor(load_profiles(["profiles/demo.yaml"]))
>>> sup.start(["light"]); sup.status(["light"]); sup.stop(["light"])
"""

from __future__ import annotations

import os
from typing import Callable

from ..errors import LlmctlError, StopFailed, raise_all
from ..paths import Paths
from ..profiles.schema import Config, Profile
from .keepers import keeper_of as _keeper_of, lock_or_none as _lock_or_none
from .spec import LaunchSpec
from .starting import Progress, StartProtocol, StartResult
from .states import LIVE
from .status import StatusEntry, add_gpu_usage, entry
from .stopping import StopProtocol, StopResult

#: the start and stop protocols live in .starting and .stopping; the lock helpers in .keepers
__all__ = ["Progress", "StartResult", "StopResult", "Supervisor", "_keeper_of", "_lock_or_none"]


class Supervisor(StartProtocol, StopProtocol):
    """The keeper-based supervisor. ``config`` may be None for `down`/`status` of recorded servers."""

    def __init__(self, config: Config | None = None, paths: Paths | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.config = config or Config()
        self.paths = paths or Paths.from_env()
        self.warn = warn or (lambda msg: None)  #: gets warnings as sentences; the caller shows them

    # -- start ----------------------------------------------------------------------------
    def prepare(self, profile: Profile, start_timeout: float | None = None) -> LaunchSpec:
        """Everything that can fail before a process exists: engine, model, argv, key variable."""
        from ..engines.launch import spec_for

        spec = spec_for(profile, self.paths)
        if start_timeout is not None:
            spec.start_timeout = start_timeout
        spec.log_max_bytes = int(os.environ.get("LLMCTL_LOG_MAX_BYTES", spec.log_max_bytes))
        return spec

    def start(self, names: list[str], *, timeout: float | None = None,
              progress: Progress | None = None, force: bool = False) -> list[StartResult]:
        """Start the named profiles in parallel and wait until each answers its health check.

        All-or-nothing before anything runs: unknown names, bad models, missing engines and
        busy ports fail the whole call. Ctrl-C while waiting stops what this call started.
        """
        names = list(dict.fromkeys(names))
        profiles = [self.config.profile(n) for n in names]
        skipped = {p.name: remote_skipped(p) for p in profiles if p.remote}
        local = [n for n in names if n not in skipped]
        self.paths.ensure()
        specs: list[LaunchSpec] = []
        errors: list[LlmctlError] = []
        if not force:
            profiles = self._placed(profiles)
        for p in profiles:
            try:
                if not p.remote:
                    specs.append(self.prepare(p, timeout))
            except LlmctlError as exc:
                errors.append(exc)
        raise_all(errors)
        if not force and local:
            self._check_vram(local)
        started = {r.name: r for r in self.launch(specs, progress=progress)} if specs else {}
        return [skipped.get(n) or started[n] for n in names]

    def _placed(self, profiles: list[Profile]) -> list[Profile]:
        """Under a per-GPU ``vram_budget`` map, each unpinned llama-server GPU profile on the GPU
        where it fits best beside the live servers of known GPUs (gpu/placement.py)."""
        from ..gpu.placement import budget_by_gpu, is_free

        todo = [p for p in profiles if not (p.remote or p.devices or p.backend == "cpu" or p.engine == "vllm")]
        try:
            value = self.config.defaults.vram_budget
            caps = (self.gpu_capacity() if is_free(value) else budget_by_gpu(value)) if todo else {}
        except ValueError:
            return profiles  # the budget check says what is wrong with it
        if not caps:
            return profiles
        from ..engines.devices import placed_on
        from ..gpu.estimate import estimate_profile
        from ..gpu.placement import place_all

        used: dict[str, int] = {}
        for e in self.status(list(self.config.profiles)):
            prof = self.config.profiles.get(e.name)
            where = [str(g) for g in e.gpus or []] or (prof.devices if prof else [])
            if e.state in LIVE and where and prof is not None and e.name not in {p.name for p in todo}:
                size = (e.vram_mib or 0) << 20 or estimate_profile(prof, self.paths).total or 0
                for g in where:
                    used[g] = used.get(g, 0) + size // len(where)
        sizes = {p.name: total for p in todo if (total := estimate_profile(p, self.paths).total)}
        placed = place_all(sizes, caps, used)
        return [placed_on(p, placed[p.name]) if p.name in placed else p for p in profiles]

    def gpu_capacity(self) -> dict[str, int]:
        """GPU index -> bytes llmctl may fill there (``vram_budget: free``): what the GPU tools say
        is free now, plus what llmctl's own live servers hold there (the placement counts those as
        live servers, so they must not also count as taken). {} when no GPU tool answers."""
        from ..gpu.probe import MIB, probe
        from .status import server_pids

        report = probe()
        ours: set[int] = set()
        for n in self.config.profiles:
            e = entry(self.config, self.paths, n)
            if e.pid and e.state in LIVE:
                ours |= server_pids(e)
        held: dict[int, int] = {}
        for proc in report.processes:
            if proc.pid in ours and proc.gpu is not None:
                held[proc.gpu] = held.get(proc.gpu, 0) + (proc.used_mib or 0)
        return {str(g.index): (g.free_mib + held.get(g.index, 0)) * MIB for g in report.gpus if g.free_mib is not None}

    def _check_vram(self, names: list[str]) -> None:
        """Refuse, with the numbers, profiles that would not fit the GPU memory or vram_budget."""
        if all(self.config.profile(n).backend == "cpu" for n in names):
            return
        from ..gpu.budget import MIB, check_fits

        entries = self.status(list(self.config.profiles))
        live = [e for e in entries if e.state in LIVE and e.name not in names]
        to_start = [n for n in names if n not in {e.name for e in entries if e.state in LIVE}]
        running = {}
        for e in live:
            prof = self.config.profiles.get(e.name)
            if e.vram_mib is not None:
                running[e.name] = e.vram_mib * MIB
            elif prof is not None and prof.backend != "cpu":
                from ..gpu.estimate import estimate_profile

                total = estimate_profile(prof, self.paths).total
                if total is None:  # not counted: the check below cannot see it
                    self.warn(f"GPU memory of the running {e.name} is unknown; the check leaves it out")
                else:
                    running[e.name] = total
        if to_start:
            check_fits(self.config, to_start, paths=self.paths, running=running, warn=self.warn)

    # -- stop -----------------------------------------------------------------------------
    def recorded_names(self) -> list[str]:
        if not self.paths.state.is_dir():
            return []
        from ..names import is_valid_name  # a stray file whose name is no name is not a record

        return sorted(p.stem for p in self.paths.state.glob("*.json") if is_valid_name(p.stem))

    def stop(self, names: list[str] | None = None) -> list[StopResult]:
        """Stop the named servers (all recorded ones when ``names`` is None). Idempotent."""
        if names is None:
            names = self.recorded_names()
        names = list(dict.fromkeys(names))
        failures: list[LlmctlError] = []

        def one(name: str) -> StopResult | None:
            prof = self.config.profiles.get(name)
            if prof is not None and prof.remote:
                return StopResult(name, "remote", note=f"{name}: a remote server ({prof.url}); llmctl does not "
                                                       "stop it")
            try:
                return self._stop_one(name)
            except StopFailed as exc:
                failures.append(exc)
                return None

        if len(names) > 1:  # in parallel: each may wait up to its stop_timeout
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
                results = list(pool.map(one, names))
        else:
            results = [one(n) for n in names]
        raise_all(failures)
        return [r for r in results if r is not None]

    # -- status ---------------------------------------------------------------------------
    def status(self, names: list[str] | None = None) -> list[StatusEntry]:
        if names is None:
            names = list(self.config.profiles) + [n for n in self.recorded_names() if n not in self.config.profiles]
        else:
            for n in names:
                if n not in self.config.profiles and not self.paths.state_file(n).exists():
                    self.config.profile(n)  # raises UnknownProfile with the known names
        names = list(dict.fromkeys(names))
        remote = sum(1 for n in names if n in self.config.profiles and self.config.profiles[n].remote)
        if remote > 1:  # each is probed over the network: at once, not one timeout after another
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
                entries = list(pool.map(lambda n: entry(self.config, self.paths, n), names))
        else:
            entries = [entry(self.config, self.paths, n) for n in names]
        add_gpu_usage(entries)
        if any(e.vram_mib for e in entries):  # estimates that learn: gpu/learned.py
            from ..gpu.learned import learn

            learn(self.paths, self.config.profiles, [(e.name, e.state, e.vram_mib) for e in entries])
        return entries



def remote_skipped(prof: Profile) -> StartResult:
    """`up`'s answer for a remote profile: not started, and whether it answers now."""
    from ..engines.remote import probe

    found = probe(prof)
    how = f"it answers ({found.latency_ms:g} ms)" if found.reachable else f"unreachable: {found.message}"
    return StartResult(prof.name, "remote", prof.url, None,
                       note=f"{prof.name}: a remote server ({prof.url}); llmctl does not start it; {how}")
