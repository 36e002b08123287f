"""Which server (or one-shot tool) answers a request.

Routing of ``--mode auto`` (the default), in order:

1. the task's profile, if its server is running and healthy;
2. else the first profile of the task's ``fallback`` list whose server is running and healthy;
3. else cli mode with the task's profile's model (llama-server profiles only); also the last
   resort when the servers of steps 1-2 refuse the connection (they went away since `status`);
4. else :class:`NoServerAvailable`, whose hint names ``llmctl up <the task's profile>``.

``--mode server`` stops after step 2; ``--mode cli`` goes straight to step 3. "Running and
healthy" is `status`'s ``running`` (llmctl's keeper saw /health answer 200). A profile llmctl
has no live record of also counts when ``GET /health`` on its URL answers 200 right now (a
server started by other means: docker compose, systemd, by hand). A remote profile
(``engine: remote``) counts when its probe answers now; it has no cli mode. Requests with images
skip llama-server profiles without ``mmproj:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NoServerAvailable, RemoteUnreachable, UnknownProfile, UsageError
from ..profiles.schema import Config, Profile, Task
from ..supervise.states import READY, TERMINAL, State

MODES = ("auto", "server", "cli")


@dataclass
class Route:
    mode: str  #: server | cli
    profile: Profile
    why: str  #: for notes: "task's profile", "fallback", "no server running"
    external: bool = False  #: answering /health, but not started by llmctl


@dataclass
class Plan:
    task: Task | None
    names: list[str]  #: the candidates, in order
    states: dict[str, State] = field(default_factory=dict)
    external: set[str] = field(default_factory=set)  #: answering /health, not started by llmctl
    routes: list[Route] = field(default_factory=list)  #: the first is used; the rest if it is unreachable
    why: dict[str, str] = field(default_factory=dict)  #: a remote server's probe: why it is unreachable

    def state_text(self, name: str) -> str:
        st = self.states.get(name)
        if st is None:
            return "?"
        if name in self.why:
            return f"{st.value}: {self.why[name]}"
        return f"{st.value} (not started by llmctl)" if name in self.external else st.value

    def describe_states(self) -> str:
        return ", ".join(f"{n}: {self.state_text(n)}" for n in self.names)


def pick_task(config: Config, task: str | None, profile: str | None) -> tuple[Task | None, list[str]]:
    """The task (if any) and the candidate profile names in order. ``--profile`` alone: that
    profile with ``defaults.sampling``; ``--task`` with ``--profile``: the task's parameters on
    that profile only. Neither: the task named ``default``, else the only profile."""
    t = None
    if task is not None:
        t = config.tasks.get(task)
        if t is None:
            known = ", ".join(sorted(config.tasks)) or "none"
            raise UnknownProfile(f"no task named {task!r} (defined: {known})")
    elif profile is None:
        if "default" in config.tasks:
            t = config.tasks["default"]
        elif len(config.profiles) == 1:
            profile = next(iter(config.profiles))
        else:
            tasks = ", ".join(sorted(config.tasks)) or "none defined"
            raise UsageError(f"say which task or profile to use: --task NAME (tasks: {tasks}) or --profile NAME")
    if profile is not None:
        config.profile(profile)  # raises UnknownProfile naming the known ones
        return t, [profile]
    assert t is not None
    return t, list(dict.fromkeys([t.profile, *t.fallback]))


def server_states(config: Config, names: list[str],
                  why: dict[str, str] | None = None) -> tuple[dict[str, State], set[str]]:
    """`status`'s state of each profile, and those answering /health without llmctl's record;
    ``why`` gets, for each remote server that did not answer, the reason its probe gave.

    :func:`llmctl.supervise.status.quick_state` settles the clear-cut cases from the lock and
    the state file alone (what spares `run` the process checks); every other case is asked of
    `status` itself (:func:`llmctl.supervise.status.entry`)."""
    from ..paths import Paths
    from ..supervise.status import entry, quick_state
    from .client import healthy

    paths = Paths.from_env()
    states: dict[str, State] = {}
    no_pid: set[str] = set()
    for n in names:
        if config.profiles[n].remote:  # no keeper: its probe says running or unreachable
            e = entry(config, paths, n)
            states[n] = State(e.state)
            if why is not None and states[n] is State.UNREACHABLE:
                why[n] = e.message
            continue
        quick = quick_state(paths, n)
        if quick is None:
            e = entry(config, paths, n)
            quick = State(e.state)
            if quick in TERMINAL and e.pid is None:
                no_pid.add(n)
        elif quick is State.STOPPED:
            no_pid.add(n)
        states[n] = quick
    external = {n for n in names if n in no_pid and healthy(config.profiles[n].url)}
    for n in external:
        states[n] = State.RUNNING
    return states, external


def plan(config: Config, *, task: str | None = None, profile: str | None = None, mode: str = "auto",
         images: bool = False) -> Plan:
    """Decide where the request goes (see the module's docstring). Raises NoServerAvailable."""
    if mode not in MODES:
        raise UsageError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    t, names = pick_task(config, task, profile)
    p = Plan(t, names)
    first = config.profiles[names[0]]
    skipped: list[str] = []
    if mode in ("auto", "server"):
        p.states, p.external = server_states(config, names, p.why)
        for i, n in enumerate(names):
            prof = config.profiles[n]
            if p.states[n] not in READY:
                continue
            if images and prof.engine == "llama-server" and not prof.mmproj:
                skipped.append(n)
                continue
            why = "its server" if len(names) == 1 else ("the task's profile" if i == 0 else "fallback")
            p.routes.append(Route("server", prof, why, n in p.external))
    if mode in ("cli", "auto"):  # in auto mode also the last resort if the servers do not answer
        refusal = _no_cli(first, images)
        if refusal is None:
            why = "cli mode" if mode == "cli" else ("no server running" if not p.routes else "no server answered")
            p.routes.append(Route("cli", first, why))
        elif mode == "cli":
            raise UsageError(refusal)
    if not p.routes:
        what = f"task {t.name!r}" if t is not None else f"profile {names[0]!r}"
        msg = f"no running server for {what} ({p.describe_states()})"
        if skipped:
            msg += f"; {', '.join(skipped)} cannot read images (no `mmproj:`)"
        if first.remote:
            raise RemoteUnreachable(msg, profile=names[0], url=first.url)
        if mode == "auto" and first.engine != "llama-server":
            msg += f"; cli mode needs a llama-server profile ({first.name} is {first.engine})"
        raise NoServerAvailable(msg, profile=names[0])
    return p


def _no_cli(first: Profile, images: bool) -> str | None:
    """Why cli mode cannot answer with ``first``'s model; None when it can."""
    if first.remote:
        return (f"profile {first.name!r} is a remote server ({first.url}): cli mode runs a model on this "
                "machine; use --mode server, or a llama-server profile")
    if first.engine != "llama-server":
        return (f"profile {first.name!r}: cli mode needs a llama-server profile "
                f"(engine is {first.engine}); start it with `llmctl up {first.name}`")
    if images and not first.mmproj:
        return f"profile {first.name!r} has no `mmproj:`, so it cannot read images ({first.where()})"
    return None
