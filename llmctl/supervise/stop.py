"""Stop a server's whole process tree: stop signal, wait, SIGKILL, then verify by scanning."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

import psutil

from .identity import ProcId


def tree(leader: ProcId | None, members: Sequence[ProcId] = (),
         extra: Sequence[psutil.Process] = ()) -> list[psutil.Process]:
    """Every live process that belongs to the server: the leader, its descendants, its process
    group, recorded members (which may have escaped with setsid), and ``extra``."""
    found: dict[int, psutil.Process] = {}
    lead = leader.process() if leader else None
    if lead is not None:
        found[lead.pid] = lead
        for child in _children(lead):
            found[child.pid] = child
    if leader is not None and (lead is not None or not psutil.pid_exists(leader.pid)):
        # Members of the leader's process group. A pgid is not reused while the group has
        # members, so a process in it that is younger than the leader is one of ours. But once
        # the group was empty, the pid may have gone to a new process that leads a group of
        # its own under the same number: if the pid is taken by anything but our leader, its
        # group is not ours.
        for proc in psutil.process_iter():
            try:
                if (proc.pid != leader.pid and os.getpgid(proc.pid) == leader.pid
                        and leader.predates(proc.pid) and proc.uids().real == os.getuid()):
                    found[proc.pid] = proc
            except (OSError, psutil.Error):
                continue
    for m in members:
        p = m.process()
        if p is not None:
            found[p.pid] = p
            for child in _children(p):
                found[child.pid] = child
    for p in extra:
        found.setdefault(p.pid, p)
    found.pop(os.getpid(), None)
    return [p for p in found.values() if _live(p)]


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _live(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(procs: list[psutil.Process], sig: int, group: int | None) -> None:
    if group is not None:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def stop_tree(leader: ProcId | None, members: Sequence[ProcId] = (), *, timeout: float = 10.0,
              stop_signal: int = signal.SIGTERM, extra: Sequence[psutil.Process] = (),
              codes: dict[int, int] | None = None) -> tuple[list[psutil.Process], bool]:
    """Stop everything of the server. Return (survivors, killed) where ``killed`` says SIGKILL
    was needed. The process group is signalled only while its leader is the identified server.
    ``codes`` gets the exit status of our own children that ended (waiting on them reaps them, so
    this is the only place their status is known): pid -> code, or -signal."""
    procs = tree(leader, members, extra)
    if not procs:
        return [], False
    group = leader.pid if leader is not None and leader.alive() else None
    _signal_all(procs, stop_signal, group)
    gone, alive = psutil.wait_procs(procs, timeout=timeout)
    alive += [p for p in tree(leader, members) if p not in procs]  # forked while stopping
    killed = False
    if alive:
        killed = True
        _signal_all(alive, signal.SIGKILL, group if group and leader is not None and leader.alive() else None)
        more, alive = psutil.wait_procs(alive, timeout=5)
        gone += more
    for p in gone if codes is not None else ():
        rc = getattr(p, "returncode", None)  # set by wait_procs on the children it reaped
        if rc is not None and codes is not None:
            codes[p.pid] = int(rc)
    deadline = time.monotonic() + 2
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _live(p)]
        time.sleep(0.05)
    return [p for p in alive if _live(p)], killed
