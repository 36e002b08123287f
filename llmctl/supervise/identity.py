"""Process identity: (pid, create_time, owner), never a pid alone."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ProcId:
    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> "ProcId | None":
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def process(self) -> psutil.Process | None:
        """The live process with this identity, owned by us; None if gone or a stranger."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.05:
                return None  # the pid was reused by another process
            if proc.uids().real != os.getuid():
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None

    def alive(self) -> bool:
        return self.process() is not None

    def to_list(self) -> list:
        return [self.pid, self.create_time]

    @classmethod
    def from_list(cls, item: object) -> "ProcId | None":
        if isinstance(item, (list, tuple)) and len(item) == 2:
            try:
                return cls(int(item[0]), float(item[1]))
            except (TypeError, ValueError):
                return None
        return None
