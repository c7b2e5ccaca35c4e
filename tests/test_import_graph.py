"""The import graph of minidyn, read from the source (ast), against issue 20's rules.

Every `import` and `from ... import` in every module counts: at module level, inside
functions, and under `if TYPE_CHECKING:` (a type the algorithm names is a type it depends on).
An edge goes to the most specific minidyn module the statement names (`from minidyn.runs
import loop` -> minidyn.runs.loop; `from minidyn.runs import EpochState` -> minidyn.runs).
A package's `__init__` is not added as an implicit target: importing minidyn.x.y runs
minidyn/x/__init__.py, but counting that would put every module in one cycle with
minidyn/__init__.py, which re-exports the public names.

The rules, each failing with every offending edge as file:line:
  (a) no import cycle among minidyn's modules (each strongly connected component listed);
  (b) no arrow from the algorithm modules to the run machinery;
  (c) no private cross-module import (`from minidyn.x import _name`);
  (d) the library does not start its own command line (`python -m minidyn.cli...`) and does
      not import it: the command line stands on the library, never the other way.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# pyproject.toml's package-dir: these folders install as these packages.
PACKAGE_DIRS = {"minidyn": ROOT / "minidyn", "minidyn.backends": ROOT / "backends",
                "minidyn.cli": ROOT / "cli"}

ALGORITHM = ("minidyn.fosc", "minidyn.projection", "minidyn.active", "minidyn.attacks",
             "minidyn.apgd", "minidyn.square", "minidyn.fab", "minidyn.schedules", "minidyn.methods", "minidyn.train")
MACHINERY = ("minidyn.runs", "minidyn.evaluation", "minidyn.studies", "minidyn.data",
             "minidyn.files", "minidyn.cli")


@dataclass(frozen=True)
class Edge:
    source: str       # importing module, e.g. "minidyn.train"
    target: str       # imported module, e.g. "minidyn.runs.epoch_state"
    name: str | None  # the name taken by `from target import name`, None for `import target`
    where: str        # "minidyn/train.py:27"


def modules(package_dirs: dict[str, Path] = PACKAGE_DIRS) -> dict[str, Path]:
    """{dotted module name: its file} for every module of the installed package."""
    found = {}
    for package, directory in package_dirs.items():
        elsewhere = tuple(p for p in package_dirs if p != package and _within(p, (package,)))
        for path in sorted(directory.rglob("*.py")):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if not _within(name, elsewhere):  # a folder inside minidyn/ that package-dir maps away
                found[name] = path
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _resolve(dotted: str, known: dict[str, Path]) -> str | None:
    """The most specific known module that `dotted` names (a module, or a name inside one)."""
    while dotted:
        if dotted in known:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def _base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of `from <base> import ...` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def edges(known: dict[str, Path], root: Path = ROOT) -> list[Edge]:
    """Every intra-package import edge of every module, in file and line order."""
    found = []
    for module, path in known.items():
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, known)
                    if target:
                        found.append(Edge(module, target, None, f"{where}:{node.lineno}"))
            elif isinstance(node, ast.ImportFrom):
                base = _base(node, module, path.name == "__init__.py")
                for alias in node.names:
                    target = _resolve(f"{base}.{alias.name}", known) or _resolve(base, known)
                    if target:
                        found.append(Edge(module, target, alias.name, f"{where}:{node.lineno}"))
    return sorted(found, key=lambda e: (e.where.split(":")[0], int(e.where.split(":")[1])))


def cycles(graph: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing
    itself (Tarjan's algorithm, iterative)."""
    successors: dict[str, set[str]] = {}
    for e in graph:
        successors.setdefault(e.source, set()).add(e.target)
        successors.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(successors):
        if start in index:
            continue
        work = [(start, iter(sorted(successors[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in successors[node]:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(successors[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)


def _report(title: str, found: list[Edge], indent: str = "  ") -> str:
    """title, then one line per import statement and target: "file:line: a -> b (import x, y)"."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for e in found:
        merged.setdefault((e.where, e.source, e.target), []).extend([e.name] if e.name else [])
    lines = [f"{where}: {source} -> {target}" + (f" (import {', '.join(names)})" if names else "")
             for (where, source, target), names in merged.items()]
    return title + "".join("\n" + indent + line for line in lines)


def cycle_report(graph: list[Edge]) -> str | None:
    """Rule (a): each cycle, in the library, the backends or the command line, with every
    import inside it."""
    found = cycles(graph)
    if not found:
        return None
    text = "import cycles in minidyn (each cycle, then every import inside it):"
    for component in found:
        inside = [e for e in graph if e.source in component and e.target in component]
        text += "\n  cycle: " + ", ".join(component) + _report("", inside, "    ")
    return text


def machinery_edges(graph: list[Edge]) -> list[Edge]:
    """Rule (b): the algorithm modules' imports of the run machinery."""
    return [e for e in graph if _within(e.source, ALGORITHM) and _within(e.target, MACHINERY)]


def private_edges(graph: list[Edge]) -> list[Edge]:
    """Rule (c): `from minidyn.x import _name` from another module, or an import of a private
    module `minidyn.x._y` from outside its package minidyn.x."""
    def private(word: str) -> bool:
        return word.startswith("_") and not word.startswith("__")

    bad = []
    for e in graph:
        parts = e.target.split(".")
        private_module = any(private(part) and not _within(e.source, (".".join(parts[:i]),))
                             for i, part in enumerate(parts))
        private_name = e.name is not None and private(e.name) and not e.target.endswith("." + e.name)
        if private_module or (private_name and e.source != e.target):
            bad.append(e)
    return bad


def command_line_edges(graph: list[Edge]) -> list[Edge]:
    """Rule (d), imports: the library's (and the backends') imports of minidyn.cli; `python -m
    minidyn` (minidyn/__main__.py) is the command line's own entry point."""
    return [e for e in graph if not _within(e.source, ("minidyn.cli", "minidyn.__main__"))
            and _within(e.target, ("minidyn.cli",))]


def command_line_strings(known: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Rule (d): strings outside minidyn.cli that name it ("-m", "minidyn.cli.main", ...)."""
    bad = []
    for module, path in known.items():
        if _within(module, ("minidyn.cli",)):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.startswith("minidyn.cli"):
                bad.append(f"{path.relative_to(root).as_posix()}:{node.lineno}: {module} names {node.value!r}")
    return bad


FAKE_TREE = {  # a package with one breach of each rule, in each place an import can hide
    "minidyn/__init__.py": "from minidyn.fosc import fosc\n",
    "minidyn/fosc.py": "from . import projection\ndef fosc():\n    from minidyn.runs.loop import Run\n",
    "minidyn/projection.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import minidyn.files.config\n",
    "minidyn/train.py": "import minidyn.attacks as a\n",
    "minidyn/runs/__init__.py": "",
    "minidyn/runs/loop.py": "from ..evaluation import plots\n",
    "minidyn/evaluation/__init__.py": "",
    "minidyn/evaluation/_kde.py": "",
    "minidyn/evaluation/plots.py": "from minidyn.evaluation import _kde\nfrom minidyn.runs.loop import _rows\n",
    "minidyn/evaluation/analysis.py": "import subprocess\nsubprocess.run(['-m', 'minidyn.cli.main'])\n"
                                      "def f():\n    from minidyn.cli.main import m\n",
    "minidyn/files/config.py": "",
    "cli/main.py": "from minidyn.evaluation._kde import x\nfrom .study import s\n",
    "cli/study.py": "from minidyn.cli.main import m\n",
}


def test_each_rule_finds_its_breach_wherever_the_import_hides(tmp_path):
    """The reader on a fake tree: module-level, function-level, TYPE_CHECKING, relative and
    aliased imports, the package-dir mapping, and one breach of each rule (a test of the test,
    so that a reader that sees nothing cannot pass the real tree)."""
    for name, text in FAKE_TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    known = modules({"minidyn": tmp_path / "minidyn", "minidyn.cli": tmp_path / "cli"})
    assert set(known) == {"minidyn", "minidyn.fosc", "minidyn.projection", "minidyn.train",
                          "minidyn.runs", "minidyn.runs.loop", "minidyn.evaluation",
                          "minidyn.evaluation._kde", "minidyn.evaluation.plots",
                          "minidyn.evaluation.analysis", "minidyn.files.config",
                          "minidyn.cli.main", "minidyn.cli.study"}
    graph = edges(known, tmp_path)
    assert cycle_report(graph).splitlines()[1:] == [
        "  cycle: minidyn.cli.main, minidyn.cli.study",
        "    cli/main.py:2: minidyn.cli.main -> minidyn.cli.study (import s)",
        "    cli/study.py:1: minidyn.cli.study -> minidyn.cli.main (import m)",
        "  cycle: minidyn.evaluation.plots, minidyn.runs.loop",
        "    minidyn/evaluation/plots.py:2: minidyn.evaluation.plots -> minidyn.runs.loop (import _rows)",
        "    minidyn/runs/loop.py:1: minidyn.runs.loop -> minidyn.evaluation.plots (import plots)"]
    assert [e.where for e in machinery_edges(graph)] == ["minidyn/fosc.py:3", "minidyn/projection.py:3"]
    assert [(e.where, e.target) for e in private_edges(graph)] == [
        ("cli/main.py:1", "minidyn.evaluation._kde"), ("minidyn/evaluation/plots.py:2", "minidyn.runs.loop")]
    assert command_line_strings(known, tmp_path) == [
        "minidyn/evaluation/analysis.py:2: minidyn.evaluation.analysis names 'minidyn.cli.main'"]
    assert [e.where for e in command_line_edges(graph)] == ["minidyn/evaluation/analysis.py:4"]
    assert cycles([Edge("a", "b", None, "x:1"), Edge("b", "c", None, "x:2"), Edge("c", "a", None, "x:3"),
                   Edge("c", "d", None, "x:4"), Edge("d", "d", None, "x:5")]) == [["a", "b", "c"], ["d"]]


def test_the_reader_sees_the_real_package():
    known = modules()
    assert {"minidyn", "minidyn.fosc", "minidyn.train", "minidyn.backends.array",
            "minidyn.cli.main", "minidyn.files.config"} <= set(known)
    pairs = {(e.source, e.target) for e in edges(known)}
    assert {("minidyn", "minidyn.fosc"), ("minidyn.attacks", "minidyn.fosc")} <= pairs


def test_minidyn_has_no_import_cycle():
    """No import cycle in the installed package: minidyn/, backends/ and cli/ (a function-level
    import that closes a loop counts: it hides the loop, it does not cut it)."""
    text = cycle_report(edges(modules()))
    if text:
        pytest.fail(text, pytrace=False)


def test_the_algorithm_imports_none_of_the_machinery():
    """fosc, projection, active, attacks, apgd, schedules, methods and train import nothing
    from runs, evaluation, studies, data, files (config, readers, npyfile, fileio) or cli,
    not even under TYPE_CHECKING or inside a function."""
    bad = machinery_edges(edges(modules()))
    if bad:
        pytest.fail(_report("the algorithm modules import the machinery:", bad), pytrace=False)


def test_no_private_name_crosses_a_module():
    """A private name (or module) is its module's (package's) own business: make it public or
    move it."""
    bad = private_edges(edges(modules()))
    if bad:
        pytest.fail(_report("private names imported across minidyn modules:", bad), pytrace=False)


def test_the_library_does_not_start_its_own_command_line():
    """Outside minidyn.cli no module imports minidyn.cli or names it in a string (`python -m
    minidyn.cli.main ...`, a dependency on the command line that no import shows)."""
    bad = command_line_strings(modules())
    bad += [f"{e.where}: {e.source} imports {e.target}" for e in command_line_edges(edges(modules()))]
    if bad:
        pytest.fail("library modules that run the command line:" + "".join("\n  " + b for b in bad),
                    pytrace=False)
