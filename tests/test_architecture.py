"""The shape of the code (issue 13's done-when lines), checked on the source itself.

- no import cycle between llmctl's modules: the graph is built from the AST of every module
  (relative imports resolved; ``if TYPE_CHECKING:`` blocks left out, they never run). Imports
  at module level (class bodies included) must form no cycle at all; an import inside a function
  that closes a cycle is a lazy back-edge, allowed only where :data:`LAZY_CYCLES` names it;
- no file in llmctl/ over :data:`MAX_FILE_LINES` lines, no function over :data:`MAX_FUNCTION_LINES`;
- heavy dependencies stay out of start-up: ``llmctl --help``, ``llmctl status`` and importing the
  entry point are run under ``python -X importtime`` and must not import :data:`HEAVY` (plus, per
  command, what that command has no use for).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llmctl"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

#: lazy imports (inside a function) that close an import cycle, each with why it stays lazy;
#: (importing module, imported module). Keep it short: a new entry is a design decision.
LAZY_CYCLES: dict[tuple[str, str], str] = {}

#: never imported when llmctl starts: the HTTP stacks, the Hub client, the gateway's server,
#: rich (tables and progress bars are for the commands that print them) and the test-only readers
HEAVY = ("httpx", "httpcore", "h11", "anyio", "huggingface_hub", "starlette", "uvicorn", "rich", "openai",
         "gguf", "numpy", "requests", "tqdm", "pydantic", "asyncio")


@dataclass(frozen=True)
class Edge:
    source: str  #: importing module
    target: str  #: imported module
    line: int
    lazy: bool  #: inside a function

    def where(self) -> str:
        return f"{module_file(self.source).relative_to(ROOT)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def module_file(name: str) -> Path:
    return modules()[name]


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement that can run, with whether it sits inside a function."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, lazy))
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for n in child.orelse:
                    visit(ast.Module(body=[n], type_ignores=[]), lazy)
            else:
                visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def _targets(name: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The llmctl modules one import statement loads (the most specific module each name means)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if node.level:
        parts = name.split(".") if is_package else name.split(".")[:-1]
        base = ".".join(parts[:len(parts) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    out = set()
    for a in node.names:
        sub = f"{base}.{a.name}"
        if sub in known:
            out.add(sub)
        elif base in known:
            out.add(base)
    return out


def import_graph() -> list[Edge]:
    mods = modules()
    known = set(mods)
    edges = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, lazy in _imports(tree):
            for target in sorted(_targets(name, path.name == "__init__.py", node, known)):
                if target != name:
                    edges.append(Edge(name, target, node.lineno, lazy))
    return edges


def strongly_connected(edges: list[Edge]) -> list[set[str]]:
    """Tarjan's components of more than one module."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def a_cycle(comp: set[str], edges: list[Edge]) -> list[Edge]:
    """One cycle through the component, as its edges (shortest from its first module)."""
    inside = [e for e in edges if e.source in comp and e.target in comp]
    start = min(comp)
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for e in inside:
            if e.source != v:
                continue
            if e.target == start:
                return paths[v] + [e]
            if e.target not in paths:
                paths[e.target] = paths[v] + [e]
                queue.append(e.target)
    return []


def describe(cycle: list[Edge]) -> str:
    return " -> ".join([cycle[0].source] + [f"{e.target} ({e.where()}{', lazy' if e.lazy else ''})"
                                            for e in cycle])


def test_no_import_cycle_among_module_level_imports():
    """Importing any module never depends on a module that is still half-initialised."""
    edges = [e for e in import_graph() if not e.lazy]
    cycles = [describe(a_cycle(c, edges)) for c in strongly_connected(edges)]
    assert not cycles, "module-level import cycles:\n  " + "\n  ".join(cycles)


def test_lazy_imports_close_no_cycle_but_the_named_ones():
    """An import inside a function that closes a cycle hides a dependency that goes the wrong
    way; each must be one of :data:`LAZY_CYCLES` (and each entry there must still be needed)."""
    edges = import_graph()
    comps = strongly_connected(edges)
    closing = sorted({(e.source, e.target): e for e in edges
                      if e.lazy and any(e.source in c and e.target in c for c in comps)}.values(),
                     key=lambda e: (e.source, e.target))
    unnamed = [e for e in closing if (e.source, e.target) not in LAZY_CYCLES]
    stale = sorted(set(LAZY_CYCLES) - {(e.source, e.target) for e in closing})
    lines = [f"{e.source} -> {e.target} ({e.where()})" for e in unnamed]
    lines += [f"{s} -> {t}: named in LAZY_CYCLES but no longer closes a cycle; remove it" for s, t in stale]
    cycles = [describe(a_cycle(c, edges)) for c in comps]
    assert not lines, ("lazy imports that close an import cycle:\n  " + "\n  ".join(lines)
                       + "\nthe cycles:\n  " + "\n  ".join(cycles))


def package_of(module: str) -> str:
    """``llmctl.supervise.keeper`` -> ``llmctl.supervise``; top-level modules are their own."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_packages():
    """Packages (and llmctl's top-level modules) form layers: no cycle, lazy imports included."""
    edges = [Edge(package_of(e.source), package_of(e.target), e.line, e.lazy) for e in import_graph()
             if package_of(e.source) != package_of(e.target)]
    found = []
    for comp in strongly_connected(edges):
        pairs = sorted({(e.source, e.target) for e in edges if e.source in comp and e.target in comp})
        found.append(", ".join(f"{a} -> {b}" for a, b in pairs))
    assert not found, "packages that import each other:\n  " + "\n  ".join(found)


#: (importing modules, imported modules) by prefix, with why the import would be wrong
FORBIDDEN = [
    ("llmctl.", "llmctl.cli", "below the CLI nothing imports it: the library returns data, the CLI prints"),
    ("llmctl.", "llmctl.output", "below the CLI nothing prints through the CLI's output object"),
    ("llmctl.engines", "llmctl.supervise", "engines build commands; supervising them is the layer above"),
]
#: importers the rules above do not apply to: the CLI itself, and `python -m llmctl`
ABOVE_ALL = ("llmctl.cli", "llmctl.__main__")


def _under(module: str, prefix: str) -> bool:
    return module == prefix.rstrip(".") or module.startswith(prefix if prefix.endswith(".") else prefix + ".")


def test_layers_import_only_downwards():
    wrong = [f"{e.source} -> {e.target} ({e.where()}): {why}"
             for e in import_graph() for src, dst, why in FORBIDDEN
             if _under(e.source, src) and _under(e.target, dst)
             and not any(_under(e.source, top) for top in ABOVE_ALL)]
    assert not wrong, "imports against the layers:\n  " + "\n  ".join(wrong)


def test_the_graph_sees_relative_lazy_and_type_checking_imports():
    """The checks above are only as good as the graph: spot-check it on known imports."""
    edges = {(e.source, e.target, e.lazy) for e in import_graph()}
    assert ("llmctl.profiles", "llmctl.profiles.loader", False) in edges  # from .loader import ...
    assert ("llmctl.profiles.loader", "llmctl.errors", False) in edges  # from ..errors import ...
    assert ("llmctl.cli.entry", "llmctl.cli.fast", True) in edges  # inside main()
    type_only = ("llmctl.models.pull", "llmctl.models.transfer", False)  # only under TYPE_CHECKING
    assert type_only not in edges


def test_no_file_in_llmctl_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines (split them along a seam): {long}"


def test_no_function_over_60_lines():
    long = []
    for p in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n  " + "\n  ".join(long)


def imported_at_start(args: list[str], tmp_path: Path) -> set[str]:
    """Every module Python imports for ``args`` (``-m llmctl ...`` or ``-c ...``), from -X importtime."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCTL_", "XDG_"))}
    env.update(LLMCTL_HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"), NO_COLOR="1")
    r = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 3), r.stderr[-3000:]  # status: 3 while a profile is not running
    lines = [ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")]
    assert len(lines) > 20, r.stderr[-3000:]
    return set(lines[1:])  # the first is the header


def _among(names: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n.split(".")[0] in roots)


@pytest.mark.parametrize("args,also", [
    # help needs Typer and Click, but neither profiles (yaml) nor processes (psutil)
    (["-m", "llmctl", "--help"], ("yaml", "psutil")),
    # status takes the fast path: no Typer, no Click
    (["-m", "llmctl", "status"], ("typer", "click")),
    (["-m", "llmctl", "status", "--json"], ("typer", "click")),
    # the entry point itself decides where to go and imports nothing heavy to do so
    (["-c", "import llmctl.cli.entry"], ("typer", "click", "yaml", "psutil")),
], ids=["help", "status", "status-json", "import-entry"])
def test_start_up_imports_stay_light(tmp_path, args, also):
    (tmp_path / "llmctl.yaml").write_text("profiles:\n  a: {model: /models/a.gguf, port: 18999}\n")
    names = imported_at_start(args, tmp_path)
    assert "llmctl" in names
    heavy = sorted({n.split(".")[0] for n in _among(names, HEAVY + also)})
    assert not heavy, (f"`python {' '.join(args)}` imports {', '.join(heavy)}: import them inside the function "
                       f"that needs them (python -X importtime shows which of llmctl's modules pulls them in)")
