"""Will these profiles fit? The estimates against the free GPU memory or `defaults.vram_budget`.

Two ways to compare, and the rules of each:

- **A budget** (``--vram-budget`` or ``defaults.vram_budget``): one number for llmctl's use of all
  GPUs together. The asked-for profiles' estimates plus what llmctl's running servers take must
  stay within it.
- **Free memory, per GPU** (no budget; the GPU tools' ``free`` figures, which already exclude
  what the running servers hold):

  * a profile with ``devices:`` takes its estimate from those GPUs only, **split evenly** across
    them (llama.cpp's layer split and vLLM's tensor parallelism both spread one model over the
    visible GPUs; llama.cpp weighs the split by free memory, so on unequal GPUs the even split is
    an approximation). Each of those GPUs must have room for its share.
  * a vLLM profile without ``devices:`` is placed like one pinned to the first
    ``tensor_parallel_size`` GPUs (vLLM uses devices 0..tp-1 of what it sees).
  * any other profile without ``devices:`` may use any GPU: it must fit in what the pinned
    profiles leave free, summed over all GPUs (llama.cpp spreads over every visible GPU).

  A device id is matched against the tool's GPU index or UUID; for ``backend: cuda`` only NVIDIA
  GPUs count, for ``rocm`` only AMD ones, for the others any vendor's. (CUDA may number GPUs
  differently from nvidia-smi unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; Vulkan numbers its own.)
  A device id that matches no GPU (or several) makes that profile's check impossible.

An unknown estimate (``total`` is None: a vLLM profile when the GPU's memory is not known, a
model whose header cannot be read) is never counted as 0: the verdict is then ``None`` ("cannot
tell") unless what *is* known already does not fit. `up` refuses only a definite ``False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import VramExceeded
from ..paths import Paths
from ..profiles.schema import Config, Profile
from ..units import format_size
from .estimate import Estimate, estimate_profile
from .placement import BudgetValue, budget_bytes, is_free

if TYPE_CHECKING:
    from .probe import Gpu, GpuReport

#: the GPUs a profile is on (None: cannot tell, [] anywhere), and why it cannot be told
Placement = tuple["list[Gpu] | None", "str | None"]

MIB = 1024 * 1024
_VENDOR = {"cuda": "nvidia", "rocm": "amd"}


@dataclass
class GpuShare:
    """One GPU in a per-GPU check: its free memory and what the pinned profiles put on it."""

    gpu: str  #: "nvidia 0"
    free: int | None  #: bytes the tool reports free
    need: int = 0  #: bytes the profiles pinned here (with known estimates) take
    profiles: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        return None if self.free is None else self.need <= self.free

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "free": self.free, "need": self.need, "profiles": self.profiles,
                "fits": self.fits}


@dataclass
class Plan:
    estimates: list[Estimate]
    need: int | None  #: bytes the asked-for profiles take; None when any estimate is unknown
    running: int  #: bytes llmctl's running servers take (measured where a GPU tool says, else estimated)
    limit: int | None  #: the budget, or the free memory of all GPUs together; None: unknown
    limit_from: str  #: "vram_budget", "free memory (nvidia-smi)", or "unknown"
    notes: list[str] = field(default_factory=list)
    need_known: int = 0  #: bytes of the estimates that are known
    unknown: list[str] = field(default_factory=list)  #: profiles whose estimate is unknown
    per_gpu: list[GpuShare] = field(default_factory=list)  #: free-memory check, one per GPU
    anywhere: int = 0  #: bytes of unpinned profiles, to fit in what the pinned ones leave
    left: int | None = None  #: free bytes left on all GPUs after the pinned profiles
    problems: list[str] = field(default_factory=list)  #: what does not fit, or cannot be checked
    fits: bool | None = None  #: True, False (refuse), None (cannot tell)
    estimated: dict[str, int | None] = field(default_factory=dict)  #: the estimates replaced by measurements

    def to_dict(self) -> dict[str, Any]:
        return {"profiles": [e.to_dict() for e in self.estimates], "need": self.need,
                "need_known": self.need_known, "unknown": self.unknown, "running": self.running,
                "limit": self.limit, "limit_from": self.limit_from,
                "per_gpu": [g.to_dict() for g in self.per_gpu], "fits": self.fits,
                "problems": self.problems, "notes": self.notes, "estimated": self.estimated}

    def need_text(self) -> str:
        if not self.unknown:
            return format_size(self.need_known)
        if not self.need_known:
            return "unknown"
        return f"{format_size(self.need_known)} + unknown ({', '.join(self.unknown)})"

    def limit_text(self) -> str:
        if self.limit is None:
            return "unknown (no GPU tool answered and no vram_budget)"
        return f"{self.limit_from} {format_size(self.limit)}"

    def verdict(self) -> str:
        if self.fits is True:
            return "fits"
        if self.fits is False:
            return "does NOT fit"
        if self.limit is None:
            return "cannot tell (nothing to compare with)"
        why = [f"unknown estimate for {', '.join(self.unknown)}"] if self.unknown else []
        why += [p for p in self.problems if p.endswith("cannot check it")]
        return f"cannot tell ({'; '.join(why)})" if why else "cannot tell"

    def describe(self) -> str:
        lines = [f"{e.profile}: {format_size(e.total)} ({e.method})" for e in self.estimates]
        op = ">" if self.fits is False else "vs"
        if self.limit_from == "vram_budget":
            lines.append(f"needed {self.need_text()} + running {format_size(self.running)} "
                         f"{op} vram_budget {format_size(self.limit)}")
            return "\n".join(lines)
        lines.append(f"needed {self.need_text()} vs {self.limit_text()}")
        lines += self.problems
        return "\n".join(lines)


def _use_measured(profiles: list[Profile], estimates: list[Estimate], paths: Paths) -> dict[str, int | None]:
    """Put what each server was seen to take (gpu/learned.py) in place of its estimate; return
    the estimates so replaced."""
    from dataclasses import replace

    from .learned import lookup

    replaced: dict[str, int | None] = {}
    for i, (p, e) in enumerate(zip(profiles, estimates)):
        seen = lookup(paths, p) if p.backend != "cpu" else None
        if seen is not None:
            replaced[p.name] = e.total
            est = "unknown" if e.total is None else format_size(e.total)
            estimates[i] = replace(e, total=seen, method="measured",
                                   notes=[*e.notes, f"measured {format_size(seen)} when it ran (estimate {est})"])
    return replaced


def _gpus_for(profile: Profile, gpus: list[Gpu]) -> Placement:
    """The GPUs (probe.Gpu) a profile's server is on; (None, why) when that cannot be told;
    ([], None) for "any"."""
    if profile.backend == "cpu":
        return [], None  # nothing on a GPU (its estimate is 0)
    vendor = _VENDOR.get(profile.backend)
    pool = [g for g in gpus if vendor is None or g.vendor == vendor]
    if profile.devices:
        picked = []
        for d in profile.devices:
            d = str(d).strip()
            hits = [g for g in pool if str(g.index) == d or (g.uuid and g.uuid == d)]
            if len(hits) != 1:
                what = "no" if not hits else "more than one"
                return None, f"device {d!r} matches {what} GPU the tools report"
            picked.append(hits[0])
        return picked, None
    if profile.engine == "vllm":
        tp = profile.tensor_parallel_size or 1
        first = sorted(pool, key=lambda g: g.index)[:tp]
        if len(first) < tp:
            return None, f"tensor_parallel_size {tp} but {len(first)} GPU(s) found"
        return first, None
    return [], None


def _label(g: Gpu) -> str:
    return f"{g.vendor} {g.index}"


def make_plan(config: Config, names: list[str], *, paths: Paths | None = None, budget: BudgetValue = None,
              report: GpuReport | None = None, running: dict[str, int] | None = None, hub: bool = False) -> Plan:
    """Estimate ``names`` and compare with the budget (``budget``, else ``defaults.vram_budget``)
    or, without one, per GPU with the free memory the GPU tools report (rules: module docstring).
    ``hub``: estimate models not pulled yet from the Hub (`llmctl plan` only)."""
    from .probe import probe

    profiles: list[Profile] = [config.profile(n) for n in names]
    report = report if report is not None else probe()
    placed: dict[str, Placement] = {p.name: _gpus_for(p, report.gpus) for p in profiles}
    estimates = []
    for p in profiles:
        gpus, _ = placed[p.name]
        totals = [g.total_mib for g in (gpus or report.gpus) if g.total_mib]
        gpu_total = max(totals) * MIB if totals else None  # vLLM: util x the memory of its GPU
        estimates.append(estimate_profile(p, paths, gpu_total=gpu_total, hub=hub))
    estimated = _use_measured(profiles, estimates, paths or Paths.from_env())
    unknown = [e.profile for e in estimates if e.total is None]
    need_known = sum(e.total for e in estimates if e.total is not None)
    notes = [f"{e.profile}: {n}" for e in estimates for n in e.notes]
    running_bytes = sum((running or {}).values())
    budget = budget or config.defaults.vram_budget
    plan = Plan(estimates, None if unknown else need_known, running_bytes, None, "unknown", notes,
                need_known=need_known, unknown=unknown, estimated=estimated)
    if budget and not is_free(budget):  # `free`: the GPUs' free memory, as with no budget
        plan.limit, plan.limit_from = budget_bytes(budget) or 0, "vram_budget"
        if need_known + running_bytes > plan.limit:
            plan.fits = False  # already over without the unknown ones
        else:
            plan.fits = None if unknown else True
        return plan
    free_gpus = [g for g in report.gpus if g.free_mib is not None]
    if free_gpus:
        tool = ", ".join(t for t, v in report.tools.items() if v == "ok") or "GPU tools"
        plan.limit, plan.limit_from = sum(g.free_mib or 0 for g in free_gpus) * MIB, f"free memory ({tool})"
        _against_free_memory(plan, profiles, placed, report.gpus)
    return plan  # without free figures the limit is unknown: cannot tell


def _against_free_memory(plan: Plan, profiles: list[Profile], placed: dict[str, Placement],
                         gpus: list[Gpu]) -> None:
    """Each pinned profile's share on its GPUs; the unpinned ones in what is left (the rules of
    the module docstring). Sets ``per_gpu``, ``anywhere``, ``left``, ``problems`` and ``fits``."""
    shares = {_label(g): GpuShare(_label(g), g.free_mib * MIB if g.free_mib is not None else None) for g in gpus}
    undecided, by_vendor = _share_out(plan, profiles, placed, shares)
    undecided = undecided or bool(plan.unknown)
    over = False
    plan.per_gpu = [s for s in shares.values() if s.profiles]
    for s in plan.per_gpu:
        if s.fits is None:
            undecided = True
            plan.problems.append(f"GPU {s.gpu}: free memory unknown: cannot check it")
        if s.fits is False:
            over = True
            plan.problems.append(f"GPU {s.gpu}: {', '.join(s.profiles)} need {format_size(s.need)} "
                                 f"> free {format_size(s.free)}")
    plan.left = sum(max(0, (s.free or 0) - s.need) for s in shares.values())
    if plan.anywhere > plan.left:
        over = True
        plan.problems.append(f"profiles without devices need {format_size(plan.anywhere)} > "
                             f"{format_size(plan.left)} left free on all GPUs")
    over = _unpinned_by_vendor(plan, by_vendor, shares, gpus, over)
    plan.fits = False if over else (None if undecided else True)


def _share_out(plan: Plan, profiles: list[Profile], placed: dict[str, Placement],
               shares: dict[str, GpuShare]) -> tuple[bool, dict[str | None, int]]:
    """Put each profile's estimate on its GPUs (split evenly) or in ``plan.anywhere``. Returns
    whether a placement could not be told, and the unpinned bytes per GPU vendor (None: any)."""
    undecided = False
    by_vendor: dict[str | None, int] = {}
    for p, e in zip(profiles, plan.estimates):
        gpus, why = placed[p.name]
        if why or gpus is None:
            plan.problems.append(f"{p.name}: {why}: cannot check it")
            undecided = True
            continue
        if not gpus:  # anywhere (of its backend's vendor)
            plan.anywhere += e.total or 0
            vendor = _VENDOR.get(p.backend) if p.backend != "cpu" else None
            by_vendor[vendor] = by_vendor.get(vendor, 0) + (e.total or 0)
            continue
        for g in gpus:
            s = shares[_label(g)]
            s.profiles.append(p.name)
            s.need += (e.total or 0) // len(gpus)
    return undecided, by_vendor


def _unpinned_by_vendor(plan: Plan, by_vendor: dict[str | None, int], shares: dict[str, GpuShare],
                        gpus: list[Gpu], over: bool) -> bool:
    """Unpinned profiles of a vendor's backend fit in what is left on that vendor's GPUs; the
    first that does not is a problem (when nothing is over yet). Returns ``over``."""
    for vendor, need in by_vendor.items():
        if vendor is None:
            continue
        left = sum(max(0, (shares[_label(g)].free or 0) - shares[_label(g)].need) for g in gpus
                   if g.vendor == vendor)
        if need > left and not over:
            over = True
            plan.problems.append(f"profiles without devices need {format_size(need)} of {vendor} GPUs > "
                                 f"{format_size(left)} left free on them")
    return over


def check_fits(config: Config, names: list[str], *, paths: Paths | None = None, running: dict[str, int] | None = None,
               warn: Callable[[str], None] | None = None) -> Plan | None:
    """Raise :class:`VramExceeded` when the GPU profiles among ``names`` will not fit; skip the
    whole check (no probes, no header reads) when none of them uses a GPU. When it cannot be
    told (an unknown estimate, a device the tools do not report), ``warn`` gets a sentence
    saying so (the caller shows it) and nothing is refused."""
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
    if plan.fits is None and warn is not None:
        warn(f"GPU memory check: {plan.verdict()}; starting anyway (see `llmctl plan {' '.join(gpu)}`)")
    return plan
