"""Process identity: (pid, start, boot, owner), never a pid alone.

A process is known by its start time counted in clock ticks since boot (``/proc/PID/stat``
field 22) together with the boot id (``/proc/sys/kernel/random/boot_id``). Neither moves when
the wall clock is stepped (NTP, a manual `date -s`), unlike psutil's ``create_time``, which is
the boot time read from the wall clock plus that tick count. The wall-clock ``create_time`` is
still recorded, for display and for records written before the tick count was (those are
compared the old way, within 0.05 s).

The tick count is taken back to the root time namespace (``/proc/self/timens_offsets``), so
processes in different time namespaces agree on it.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass

import psutil

LEGACY_TOLERANCE = 0.05  #: seconds; records without a tick count are compared by create_time


@functools.lru_cache(maxsize=1)
def boot_id() -> str | None:
    """This boot's id (a new random one at each boot), or None where the kernel has none."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


@functools.lru_cache(maxsize=1)
def _boottime_offset_ticks() -> int:
    """Our time namespace's CLOCK_BOOTTIME offset in ticks (0 outside one)."""
    try:
        with open("/proc/self/timens_offsets") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in ("boottime", "7"):  # older kernels print the clock id
                    return int(parts[1]) * _ticks_per_second() + \
                        int(parts[2]) * _ticks_per_second() // 1_000_000_000
    except (OSError, ValueError, IndexError):
        pass
    return 0


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (None if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        return int(data[data.rindex(b")") + 2:].split()[19]) - _boottime_offset_ticks()
    except (ValueError, IndexError):
        return None


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class ProcId:
    pid: int
    create_time: float  #: wall clock (psutil); for display, and for records without ``start``
    start: int | None = None  #: clock ticks since boot (/proc/PID/stat field 22)
    boot: str | None = None  #: the boot id when ``start`` was read

    @classmethod
    def of(cls, pid: int) -> ProcId | None:
        try:
            ct = psutil.Process(pid).create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        ticks = start_ticks(pid)
        return cls(pid, ct, ticks, boot_id() if ticks is not None else None)

    def process(self) -> psutil.Process | None:
        """The live process with this identity, owned by us; None if gone or a stranger."""
        if not (isinstance(self.pid, int) and self.pid > 0):
            return None
        try:
            proc = psutil.Process(self.pid)
            if not self.same_start(proc):
                return None  # the pid was reused by another process (or this is another boot)
            if proc.uids().real != os.getuid():
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None

    def same_start(self, proc: psutil.Process) -> bool:
        """``proc`` (with our pid) started when this identity says: by tick count and boot id
        when recorded, else by wall-clock create_time (older records)."""
        if self.start is not None:
            return self.boot == boot_id() and start_ticks(proc.pid) == self.start
        return abs(proc.create_time() - self.create_time) <= LEGACY_TOLERANCE

    def predates(self, pid: int) -> bool | None:
        """Whether this process started no later than process ``pid`` (None: cannot tell)."""
        if self.start is not None:
            ticks = start_ticks(pid)
            return None if ticks is None or self.boot != boot_id() else ticks >= self.start
        try:
            return psutil.Process(pid).create_time() >= self.create_time - LEGACY_TOLERANCE
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None

    def age(self) -> float:
        """Seconds since the process started: on the boot clock when the tick count is known
        (a wall-clock step does not change it), else by wall-clock create_time."""
        if self.start is not None and self.boot == boot_id():
            since_boot = (self.start + _boottime_offset_ticks()) / _ticks_per_second()
            return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)
        return max(0.0, time.time() - self.create_time)

    def to_list(self) -> list[float | int | None]:
        return [self.pid, self.create_time, self.start]

    @classmethod
    def from_list(cls, item: object, boot: str | None = None) -> ProcId | None:
        """From ``[pid, create_time]`` (older records) or ``[pid, create_time, start]``."""
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
            return None
        pid, ct = item[0], item[1]
        start = item[2] if len(item) == 3 else None
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0 or not _finite(ct):
            return None
        if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
            return None
        return cls(pid, float(ct), start, boot if start is not None else None)
