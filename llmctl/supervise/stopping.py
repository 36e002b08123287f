"""The stop protocol of :class:`llmctl.supervise.control.Supervisor`: stop the keeper, take
the profile's lock so that no keeper starts meanwhile, then stop whatever its record (or the
launcher) still names, and check by scanning that nothing survived."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import StopFailed
from .keepers import keeper_of, lock_or_none, wait_released
from .locks import is_held
from .spec import LaunchSpec
from .state import ServerState, read_state, write_state
from .states import LIVE

if TYPE_CHECKING:
    import psutil

    from ..paths import Paths


@dataclass
class StopResult:
    name: str
    outcome: str  #: stopped | not-running | remote (not stopped: a server llmctl does not run)
    killed: bool = False  #: SIGKILL was needed
    pids: list[int] = field(default_factory=list)
    note: str = ""  #: for the caller to show


class StopProtocol:
    """Mixed into the Supervisor: one server's stop, from its keeper to its last process."""

    paths: Paths

    def _stop_one(self, name: str, failed: str = "",
                  extra: list[psutil.Process] | tuple[()] = ()) -> StopResult:
        """Stop one server: its keeper first, then, holding the profile's lock so that no
        keeper can start meanwhile, whatever its record (or ``extra``) still names. With
        ``failed``, the record is left `failed` with that reason instead of `stopped`."""
        from .stop import stop_tree, tree

        state_path = self.paths.state_file(name)
        fd, had_keeper, killed = self._take_lock(name)
        try:  # under the lock: the state read now is final until we let go
            st = read_state(state_path, name)
            was_live = had_keeper or bool(st and st.state in LIVE)
            was_live = self._stop_container(name) or was_live
            leader = st.server_id() if st else None
            members = st.member_ids() if st else []
            left = tree(leader, members, extra)
            pids = [p.pid for p in left]
            if left:
                was_live = True
                survivors, k = stop_tree(leader, members, timeout=st.stop_timeout if st else 10.0, extra=extra)
                killed = killed or k
                if survivors:
                    raise StopFailed(f"{name}: processes survived SIGKILL: {[p.pid for p in survivors]}", name=name)
            if failed or (st is not None and (st.state != "stopped" or st.pid)):
                st = st or ServerState(name=name)
                st.state, st.pid, st.pid_create_time, st.pid_start, st.members = "stopped", None, None, None, []
                st.keeper_pid = st.keeper_create_time = st.keeper_start = None
                st.health, st.message = None, "stopped" if was_live else st.message
                if failed:
                    st.state, st.message = "failed", failed
                write_state(state_path, st)
            for leftover in (self.paths.key_file(name), self.paths.spec_file(name)):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)
        return StopResult(name, "stopped" if was_live else "not-running", killed, pids)

    def _take_lock(self, name: str) -> tuple[int, bool, bool]:
        """Stop the profile's keeper, if one runs, and take its lock: until `down` lets go, no
        `up` can start a keeper that its state read would miss. Return (lock fd, a keeper was
        stopped, SIGKILL was needed)."""
        self.paths.ensure()
        state_path, lock = self.paths.state_file(name), self.paths.lock_file(name)
        had_keeper = killed = False
        for _ in range(5):  # each round stops the keeper that holds the lock, if any
            fd = lock_or_none(lock, state_path)
            if fd is not None:
                return fd, had_keeper, killed
            found, k = self._stop_keeper(name)
            had_keeper, killed = had_keeper or found, killed or k
        raise StopFailed(f"{name}: its lock is still held after its keeper was stopped (another `llmctl up` "
                         f"keeps starting it?); run `llmctl down {name}` again", name=name)

    def _stop_keeper(self, name: str) -> tuple[bool, bool]:
        """SIGTERM the keeper holding the lock and wait for it to let go (SIGKILL if stuck).
        Without a keeper to find (the lock is an `up` or `down` at work), wait for the lock.
        Return (a keeper was found, SIGKILL was needed)."""
        import psutil

        state_path, lock = self.paths.state_file(name), self.paths.lock_file(name)
        st = read_state(state_path, name)
        keeper = keeper_of(st, lock)
        soon = time.monotonic() + 2.0  # a keeper just forked by `up` has not published yet
        while keeper is None and is_held(lock) and time.monotonic() < soon:
            time.sleep(0.05)
            st = read_state(state_path, name) or st
            keeper = keeper_of(st, lock)
        timeout = (st.stop_timeout if st else 10.0) + 10.0
        if keeper is None:
            wait_released(lock, timeout)
            return False, False
        try:
            keeper.send_signal(signal.SIGTERM)
            if not wait_released(lock, timeout):  # a stuck keeper: kill it and stop the tree ourselves
                keeper.kill()
                wait_released(lock, 2.0)
                return True, True
        except psutil.NoSuchProcess:  # it ended meanwhile
            pass
        return True, False

    def _stop_container(self, name: str) -> bool:
        """What the server's launcher left without a keeper (a container outlives its client):
        stopped and removed by the launcher. True if something was still running."""
        from ..engines.registry import launcher_for

        try:
            spec = LaunchSpec.read(self.paths.spec_file(name))
            return launcher_for(spec.launcher).cleanup(spec)
        except (OSError, ValueError, TypeError):
            return False
