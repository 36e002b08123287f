"""Per-GPU capacity and placement, pure: ``defaults.vram_budget`` as one number for all GPUs or a
map ``{0: 70GiB, 1: 22GiB}`` (GPU index -> bytes), and where an unpinned profile goes.

**Best fit.** A profile without ``devices:`` goes on the GPU where it fits leaving the least
memory unused (so a later, bigger model still finds a GPU with room); ties go to the lower
index. A split model (``tensor_parallel_size`` n) takes the n GPUs with the most room, each
holding an even share. A pinned profile is never moved: its ``devices:`` are its placement.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..units import parse_size

BudgetValue = str | dict[str, str] | None  #: what ``defaults.vram_budget`` holds
FREE = "free"  #: ``vram_budget: free``: each GPU's free memory when llmctl looks (supervise.control.gpu_capacity)


def is_free(value: BudgetValue) -> bool:
    """``vram_budget: free``: no number; each GPU's capacity is what is free on it when the gateway
    starts (or `up` places a profile), plus what llmctl's own servers already hold there."""
    return isinstance(value, str) and value.strip().lower() == FREE


def budget_by_gpu(value: BudgetValue) -> dict[str, int]:
    """GPU id -> bytes of a per-GPU budget; {} for one number (or none). Raises ValueError
    naming the GPU whose size is not one."""
    if not isinstance(value, dict):
        return {}
    out = {}
    for gpu, size in value.items():
        try:
            out[str(gpu).strip()] = parse_size(size)
        except ValueError as exc:
            raise ValueError(f"GPU {gpu}: {exc}") from None
    return out


def budget_bytes(value: BudgetValue) -> int | None:
    """The budget for all GPUs together (a map's sum); None: no budget, or ``free`` (measured, not
    written). Raises ValueError."""
    if not value or is_free(value):
        return None
    if isinstance(value, dict):
        return sum(budget_by_gpu(value).values())
    return parse_size(value)


def room(capacity: Mapping[str, int], used: Mapping[str, int]) -> dict[str, int]:
    """Bytes left on each GPU."""
    return {g: cap - used.get(g, 0) for g, cap in capacity.items()}


def place(need: int, free: Mapping[str, int], split: int = 1) -> tuple[str, ...] | None:
    """The GPU(s) for a profile needing ``need`` bytes, given each GPU's ``free`` bytes: best
    fit for one GPU, the ``split`` roomiest for a split model; None when it fits nowhere."""
    if split > 1:
        roomiest = sorted(free, key=lambda g: (-free[g], _order(g)))[:split]
        share = -(-need // split)
        if len(roomiest) < split or any(free[g] < share for g in roomiest):
            return None
        return tuple(sorted(roomiest, key=_order))
    fits = [g for g in free if free[g] >= need]
    if not fits:
        return None
    return (min(fits, key=lambda g: (free[g] - need, _order(g))),)


def place_all(sizes: dict[str, int], caps: dict[str, int], used: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Each of ``sizes`` (name -> bytes, in order) placed on ``caps`` less ``used`` (bytes per
    GPU), one after another: on one GPU where it fits best, else split evenly over all; names
    that fit nowhere are left out (the budget check then refuses them)."""
    free = room(caps, used)
    out = {}
    for name, size in sizes.items():
        where = place(size, free) or (place(size, free, split=len(free)) if len(free) > 1 else None)
        if where:
            out[name] = where
            for g in where:
                free[g] -= -(-size // len(where))
    return out


def _order(gpu: str) -> tuple[int, str]:
    return (int(gpu), "") if gpu.isdigit() else (1 << 30, gpu)
