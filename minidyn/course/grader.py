"""Grading a workspace: load the student's modules, run each task's properties with Hypothesis,
report per property (pass, or the shrunk counterexample and a hint), write Gradescope's JSON.

A student module is imported from the workspace folder (put first on sys.path while it loads,
so that `from task2_projection import project` finds the student's own Task 2); the modules
are dropped from sys.modules afterwards, so one process can grade several workspaces.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from minidyn.course.tasks import TASKS, Task
from minidyn.errors import ConfigError

MODULE_NAMES = tuple(t.module for t in TASKS if t.graded)


@dataclass(frozen=True)
class Settings:
    """The instructor's Hypothesis settings: the seed (None: a fresh one each run) and the
    number of examples per property."""

    seed: int | None = 0
    max_examples: int = 50


@dataclass
class Outcome:
    """One property of one task: passed or not, and what the student is told."""

    task: Task
    name: str
    statement: str
    passed: bool
    output: str = ""


@dataclass
class TaskResult:
    task: Task
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.outcomes) and all(o.passed for o in self.outcomes)


def check_workspace(folder: str | os.PathLike) -> Path:
    """The workspace folder, or ConfigError (one line) when it is not one."""
    path = Path(folder)
    if not path.exists():
        raise ConfigError(f"--dir {folder}: no such directory "
                          f"(create a workspace with `minidyn course start {folder}`)")
    if not path.is_dir():
        raise ConfigError(f"--dir {folder}: not a directory")
    if not any((path / f"{name}.py").is_file() for name in MODULE_NAMES):
        raise ConfigError(f"--dir {folder}: not a course workspace (no task1_fosc.py ... task6_algorithm1.py in it; "
                          f"create one with `minidyn course start DIR`)")
    return path


def load_module(folder: Path, name: str) -> ModuleType:
    """Import the student's `name`.py from `folder`. ConfigError, one line naming the file and
    line, when it is missing or fails to import."""
    if not (folder / f"{name}.py").is_file():
        raise ConfigError(f"{folder / (name + '.py')} is missing (`minidyn course start` writes it)")
    forget_student_modules()
    importlib.invalidate_caches()  # a file written since the last import in this process
    # no __pycache__ in the workspace: a .pyc is trusted by mtime and size, so a quick edit
    # that keeps both would be graded as the old code
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    sys.path.insert(0, str(folder.resolve()))
    try:
        return importlib.import_module(name)
    except SyntaxError as error:
        raise ConfigError(f"{error.filename}, line {error.lineno}: SyntaxError: {error.msg}") from None
    except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the student's module raises at import
        raise ConfigError(f"{student_frame(error, folder)}: {type(error).__name__}: {error}") from None
    finally:
        if str(folder.resolve()) in sys.path:  # the student's module may have taken it out
            sys.path.remove(str(folder.resolve()))
        sys.dont_write_bytecode = bytecode


def forget_student_modules() -> None:
    for name in MODULE_NAMES:
        sys.modules.pop(name, None)


def student_frame(error: BaseException, folder: Path) -> str:
    """'file, line N' of the innermost frame of the error in the workspace (else the last one)."""
    frames = traceback.extract_tb(error.__traceback__)
    root = str(folder.resolve())
    mine = [f for f in frames if f.filename.startswith(root)] or frames
    if not mine:
        return "?"
    name = mine[-1].filename
    return f"{Path(name).name if name.startswith(root) else name}, line {mine[-1].lineno}"


def grade(folder: str | os.PathLike, tasks: list[Task], settings: Settings) -> list[TaskResult]:
    """Each task's properties run against the student's module in `folder`."""
    from minidyn.course.properties import properties_of  # needs Hypothesis: see require_hypothesis

    path = check_workspace(folder)
    results = []
    for task in tasks:
        result = TaskResult(task)
        props = properties_of(task.number)
        try:
            module = load_module(path, task.module)
        except ConfigError as error:
            result.outcomes = [Outcome(task, p.name, p.statement, False, str(error)) for p in props]
        else:
            result.outcomes = run_properties(module, props, settings, path)
        results.append(result)
    forget_student_modules()
    return results


def run_properties(module: ModuleType, props, settings: Settings, folder: Path) -> list[Outcome]:
    import numpy as np

    with warnings.catch_warnings(), np.errstate(all="ignore"):  # overflow in a student's exp, ...
        warnings.simplefilter("ignore")
        return [run_property(module, prop, settings, folder) for prop in props]


def task_of(prop) -> Task:
    return next(t for t in TASKS if t.number == prop.task)


def run_property(module: ModuleType, prop, settings: Settings, folder: Path) -> Outcome:
    """One property under Hypothesis. On failure the output holds the shrunk counterexample
    (Hypothesis re-raises the failure of the smallest example it found) and the hint."""
    from hypothesis import HealthCheck, Verbosity, given, seed
    from hypothesis import settings as hypothesis_settings

    from minidyn.course.properties import Failure

    stub = []  # a NotImplementedError: reported as such, not shrunk (nothing to learn from it)

    def test(example):
        if stub:
            return
        try:
            prop.check(module, example)
        except Failure:
            raise
        except NotImplementedError as error:
            stub.append(f"not implemented yet: {error} ({student_frame(error, folder)})")
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the student's code may raise anything, exit() too
            raise Failure(f"your code raised {type(error).__name__}: {error} "
                          f"({student_frame(error, folder)})\non the input (shrunk by Hypothesis): "
                          f"{show_example(example, prop.check)}") from None

    test = hypothesis_settings(max_examples=settings.max_examples, deadline=None, database=None,
                               derandomize=False, print_blob=False, verbosity=Verbosity.quiet,
                               report_multiple_bugs=False,  # one failure, the smallest, per property
                               suppress_health_check=list(HealthCheck))(given(prop.strategy())(test))
    if settings.seed is not None:
        test = seed(settings.seed)(test)
    task = task_of(prop)
    try:
        test()
    except Failure as failure:
        text = failure.message
        if not text.startswith(("not implemented yet", "your code raised")):
            text = "counterexample (shrunk by Hypothesis):\n" + text
        if failure.hint:
            text += f"\nhint: {failure.hint}"
        return Outcome(task, prop.name, prop.statement, False, text)
    except Exception as error:  # noqa: BLE001 - e.g. Hypothesis' Flaky: results that change between calls
        first = (str(error).splitlines() or [""])[0]
        flaky = "Flaky" in type(error).__name__
        return Outcome(task, prop.name, prop.statement, False,
                       f"Hypothesis stopped: {type(error).__name__}: {first}"
                       + (" (does your function give the same result every time it is called with the same input?)"
                          if flaky else ""))
    if stub:
        return Outcome(task, prop.name, prop.statement, False, stub[0])
    return Outcome(task, prop.name, prop.statement, True)


def show_example(example, check) -> str:
    """A property's example on one line, its parts named: arrays by numpy, dicts by shapes."""
    from minidyn.course.properties import EXAMPLE_NAMES, fmt

    parts = example if isinstance(example, tuple) else (example,)
    names = EXAMPLE_NAMES.get(check, ())
    shown = [fmt(p) if hasattr(p, "shape") else
             ("{" + ", ".join(f"{k}: {v.shape}" for k, v in p.items()) + "}" if isinstance(p, dict) else repr(p))
             for p in parts]
    return ", ".join(f"{n}={v}" for n, v in zip(names, shown)) if len(names) == len(shown) else ", ".join(shown)


def report_lines(results: list[TaskResult]) -> list[str]:
    """What `course check` prints: per task a header, then PASS/FAIL per property with the
    failure's explanation indented under it, and a summary line."""
    lines = []
    for result in results:
        task = result.task
        lines.append(f"Task {task.number} ({task.key}): {task.title} - {task.module}.py")
        for o in result.outcomes:
            lines.append(f"  {'PASS' if o.passed else 'FAIL'}  {o.statement}")
            lines += [f"        {line}" for line in o.output.splitlines()]
        done = sum(o.passed for o in result.outcomes)
        lines.append(f"  -> Task {task.number}: {done} of {len(result.outcomes)} properties hold")
        lines.append("")
    passed = [r.task.number for r in results if r.passed]
    lines.append(f"{len(passed)} of {len(results)} tasks pass"
                 + (f" ({', '.join(map(str, passed))})" if passed else "")
                 + ("; Task 7 is written, read by your instructor" if len(results) > 1 else ""))
    return lines


def gradescope_json(results: list[TaskResult]) -> dict:
    """Gradescope's results.json: one test per property (score 1 or 0 of max_score 1)."""
    tests = [{"name": f"Task {o.task.number} ({o.task.key}): {o.statement}",
              "score": 1.0 if o.passed else 0.0, "max_score": 1.0,
              "output": o.output or "passed"} for r in results for o in r.outcomes]
    return {"score": sum(t["score"] for t in tests), "tests": tests}


def write_json(path: str | os.PathLike, results: list[TaskResult]) -> None:
    Path(path).write_text(json.dumps(gradescope_json(results), indent=2) + "\n")


def require_hypothesis() -> None:
    """ConfigError, one line, where Hypothesis is not installed."""
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise ConfigError("the course checks run on Hypothesis, which is not installed: "
                          "pip install 'minidyn[test]' (or pip install hypothesis)") from None
