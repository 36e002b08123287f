"""Will these profiles fit? The estimates against the free GPU memory or `defaults.vram_budget`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import VramExceeded
from ..paths import Paths
from ..profiles.schema import Config, Profile
from .estimate import Estimate, estimate_profile, format_size, parse_size

MIB = 1024 * 1024


@dataclass
class Plan:
    estimates: list[Estimate]
    need: int  #: bytes the asked-for profiles are expected to take
    running: int  #: bytes llmctl's running servers take (measured where a GPU tool says, else estimated)
    limit: int | None  #: the budget, or the free memory (+ running when the budget is the limit)
    limit_from: str  #: "vram_budget", "free memory (nvidia-smi)", or "unknown"
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        if self.limit is None:
            return None
        return self.need + (self.running if self.limit_from == "vram_budget" else 0) <= self.limit

    def to_dict(self) -> dict:
        return {"profiles": [e.to_dict() for e in self.estimates], "need": self.need, "running": self.running,
                "limit": self.limit, "limit_from": self.limit_from, "fits": self.fits, "notes": self.notes}

    def describe(self) -> str:
        lines = [f"{e.profile}: {format_size(e.total)} ({e.method})" for e in self.estimates]
        if self.limit_from == "vram_budget":
            lines.append(f"needed {format_size(self.need)} + running {format_size(self.running)} "
                         f"> vram_budget {format_size(self.limit)}")
        else:
            lines.append(f"needed {format_size(self.need)} > {self.limit_from} {format_size(self.limit)}")
        return "\n".join(lines)


def make_plan(config: Config, names: list[str], *, paths: Paths | None = None, budget: str | None = None,
              report=None, running: dict[str, int] | None = None) -> Plan:
    """Estimate ``names`` and compare with the budget (``budget``, else ``defaults.vram_budget``)
    or, without one, with the free memory the GPU tools report."""
    from .probe import probe

    profiles: list[Profile] = [config.profile(n) for n in names]
    report = report if report is not None else probe()
    gpu_total = max((g.total_mib or 0 for g in report.gpus), default=0) * MIB or None
    estimates = [estimate_profile(p, paths, gpu_total=gpu_total) for p in profiles]
    need = sum(e.total or 0 for e in estimates)
    notes = [f"{e.profile}: {n}" for e in estimates for n in e.notes]
    running_bytes = sum((running or {}).values())
    budget = budget or config.defaults.vram_budget
    if budget:
        return Plan(estimates, need, running_bytes, parse_size(budget), "vram_budget", notes)
    free = [g.free_mib for g in report.gpus if g.free_mib is not None]
    if free:
        tool = ", ".join(t for t, v in report.tools.items() if v == "ok") or "GPU tools"
        return Plan(estimates, need, running_bytes, sum(free) * MIB, f"free memory ({tool})", notes)
    return Plan(estimates, need, running_bytes, None, "unknown", notes + ["no GPU tool answered and no vram_budget"])


def check_fits(config: Config, names: list[str], *, paths: Paths | None = None, running: dict[str, int] | None = None) -> Plan | None:
    """Raise :class:`VramExceeded` when the GPU profiles among ``names`` will not fit; skip the
    whole check (no probes, no header reads) when none of them uses a GPU."""
    gpu = [n for n in names if config.profile(n).backend != "cpu"]
    if not gpu:
        return None
    import shutil

    if not config.defaults.vram_budget and not (shutil.which("nvidia-smi") or shutil.which("rocm-smi")):
        return None  # nothing to compare with
    plan = make_plan(config, gpu, paths=paths, running=running)
    if plan.fits is False:
        raise VramExceeded(f"{', '.join(gpu)} would not fit in GPU memory", detail=plan.describe(),
                           names=" ".join(gpu))
    return plan
