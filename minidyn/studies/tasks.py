"""A study on disk and the work it holds: one training task per cell (its training, then the
study's white-box evaluation of it), and one black-box task per cell with a surrogate.

    STUDY/
        study.toml                 the spec the study runs (copied at each `study run`)
        cells/NAME/                the cell's run directory (config.json, metrics.jsonl, ...)
        cells/NAME/study-eval.json             the [eval] results, per checkpoint and eps
        cells/NAME/study-eval-blackbox.json    black-box results (crafted on the surrogate)
        failed/NAME.KIND.json      why a task failed (exit code, last log lines)
        locks/NAME.KIND.lock       the claim of a running task (lock.py)
        logs/NAME.KIND.log         what the task printed

A task is done when its result file exists and was made with the spec's [eval] settings (a
black-box task's also with its resolved surrogate); an [eval] that changed makes the
evaluation be done again (the training is kept).
"""
from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from minidyn.errors import ConfigError, MinidynError
from minidyn.files.compare_configs import config_differences
from minidyn.files.fileio import atomic_write
from minidyn.files.readers import read_config, read_study_eval
from minidyn.studies.lock import STALE_AFTER, check_locks, live_runners, mark_runner
from minidyn.studies.spec import Cell, Spec, load_spec

KINDS = ("train", "blackbox")
SPEC_CHANGED = 78  # exit code of a worker whose study.toml is not its runner's (EX_CONFIG)
RESULT_FILES = {"train": "study-eval.json", "blackbox": "study-eval-blackbox.json"}


class SpecChanged(MinidynError):
    """study.toml is not the spec a runner (or its worker) runs: another `study run` rewrote it."""

    exit_code = SPEC_CHANGED


@dataclass(frozen=True, eq=False)
class Task:
    cell: Cell
    kind: str  # "train" | "blackbox"

    @property
    def name(self) -> str:
        return f"{self.cell.name}.{self.kind}"

    def __eq__(self, other) -> bool:  # a task is its name (cells are rebuilt from the spec)
        return isinstance(other, Task) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class StudyDir:
    """The files of a study under `path`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.spec_file = self.path / "study.toml"
        self.cells_dir, self.locks_dir, self.logs_dir, self.failed_dir = (
            self.path / d for d in ("cells", "locks", "logs", "failed"))

    def spec_digest(self) -> str | None:
        """The sha256 of study.toml as it is now; None when it cannot be read (it is replaced
        atomically, so a read never sees half of it)."""
        try:
            return digest(self.spec_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None

    def spec(self) -> Spec:
        if not self.spec_file.is_file():
            raise ConfigError(f"{self.path} is not a study directory (no study.toml); "
                              "start one with `minidyn study run SPEC --out DIR`")
        return load_spec(self.spec_file, name=self.path.name)

    def cell_dir(self, cell: Cell) -> Path:
        return self.cells_dir / cell.name

    def result(self, task: Task) -> Path:
        return self.cell_dir(task.cell) / RESULT_FILES[task.kind]

    def failure(self, task: Task) -> Path:
        return self.failed_dir / f"{task.name}.json"

    def lock(self, task: Task) -> Path:
        return self.locks_dir / f"{task.name}.lock"

    def log(self, task: Task) -> Path:
        return self.logs_dir / f"{task.name}.log"

    def prepare(self, spec: Spec, *, mark: bool = False, stale_after: float = STALE_AFTER):
        """Create the study's folders and copy the spec in, after checking that no trained
        cell would change (ConfigError naming the cell and the option) and that no live runner
        of this study runs another spec (the spec is fixed per study while one runs: ConfigError
        naming the first difference). Several runners of one spec may prepare one study at
        once. `mark`: register this process as a runner of `spec` first and return its mark
        (lock.mark_runner: keep it alive, release it at the end); None otherwise."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a directory")
        foreign = [p.name for p in self.path.iterdir() if not _ours(p.name)] if self.path.is_dir() else []
        if foreign:
            raise ConfigError(f"{self.path} holds files that are not a study's ({foreign[0]}); "
                              "choose another --out")
        check_locks(self.locks_dir)
        check_trained_cells(self, spec)
        for folder in (self.cells_dir, self.locks_dir, self.logs_dir, self.failed_dir):
            folder.mkdir(parents=True, exist_ok=True)
        me = mark_runner(self.locks_dir, digest(spec.text)) if mark else None
        try:  # registered first: of two runners starting at once, one at least sees the other
            self._refuse_other_runners(spec, me, stale_after)
            if not self.spec_file.is_file() or self.spec_file.read_text(encoding="utf-8") != spec.text:
                atomic_write(self.spec_file, lambda f: f.write(spec.text))
        except BaseException:
            if me is not None:
                me.release()
            raise
        return me

    def _refuse_other_runners(self, spec: Spec, me, stale_after: float) -> None:
        """ConfigError when a live runner of this study (not `me`) runs a spec other than `spec`."""
        ours = digest(spec.text)
        for other in live_runners(self.locks_dir, stale_after):
            if other.get("token") == getattr(me, "token", None) or other.get("spec") == ours:
                continue
            try:
                running = self.spec_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                running = None
            what = f" ({spec_difference(running, spec.text)})" \
                if running is not None and digest(running) == other.get("spec") else ""
            raise ConfigError(f"{self.path} is being run by another `study run` (host {other.get('host')}, "
                              f"pid {other.get('pid')}) with another spec{what}; the spec is fixed while a "
                              "runner runs it: wait for it to end, or use another --out")

    def tasks(self, spec: Spec) -> list[Task]:
        """Every task of the study: the training tasks first, seed by seed (a study stopped
        halfway has whole seeds to compare), then the black-box ones."""
        cells = sorted(spec.cells(), key=lambda c: _seed_order(c.values.get("seed", 0)))
        return ([Task(c, "train") for c in cells]
                + [Task(c, "blackbox") for c in cells if spec.eval.surrogate is not None])

    def done(self, spec: Spec, task: Task) -> bool:
        """Whether the task's result exists, made with the task's settings (`settings`)."""
        record = read_result(self.result(task))
        return record is not None and record.get("settings") == settings(spec, task)

    def orphans(self, spec: Spec) -> list[str]:
        """The cell directories holding a run (config.json) that are no cell of `spec` (left by
        an edited grid, or named by earlier versions, which left one-value grid keys out)."""
        if not self.cells_dir.is_dir():
            return []
        names = {c.name for c in spec.cells()}
        return sorted(p.name for p in self.cells_dir.iterdir()
                      if p.name not in names and (p / "config.json").is_file())

    def ready(self, spec: Spec, task: Task) -> bool:
        """A black-box task waits for the training of its cell and of its surrogate."""
        if task.kind == "train":
            return True
        needed = [task.cell, spec.surrogate_of(task.cell)]
        return all(self.done(spec, Task(c, "train")) for c in needed)


def settings(spec: Spec, task: Task) -> dict:
    """What the task's result depends on (recorded with it): the spec's [eval] settings, and
    for a black-box task the name of the surrogate its attacks are crafted on."""
    if task.kind == "blackbox":
        return spec.eval.settings(surrogate=spec.surrogate_of(task.cell).name)
    return spec.eval.settings()


def digest(text: str) -> str:
    """The sha256 (hex) of a spec's text: what a worker checks it runs the runner's spec."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _seed_order(seed) -> tuple:
    """Seeds in numeric order (0, 1, 2, 10), any other value after them by its repr."""
    if isinstance(seed, (int, float)) and not isinstance(seed, bool):
        return (0, seed, "")
    return (1, 0, repr(seed))


def _ours(name: str) -> bool:
    """A name a study directory holds: its spec (or one being written), folders and report."""
    return name in ("study.toml", "cells", "locks", "logs", "failed", "report") or (
        name.startswith(".study.toml.") and name.endswith(".tmp"))


def read_result(path: Path) -> dict | None:
    """A task's result file, or None where it is missing or not a valid result (an
    interrupted write leaves the old file or none: atomic_write; a tampered one is made
    again). load_result says why."""
    try:
        return load_result(path)
    except ConfigError:
        return None


def load_result(path: Path) -> dict | None:
    """A task's result file (readers.read_study_eval), None where there is none; ConfigError
    naming the file and the problem where it is not a valid result."""
    if not path.exists():
        return None
    return read_study_eval(path)


def write_result(path: Path, record: dict) -> None:
    atomic_write(path, lambda f: json.dump(record, f, indent=2, sort_keys=True, allow_nan=False,
                                           default=_finite_or_none))


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON")


def check_trained_cells(study: StudyDir, spec: Spec) -> None:
    """Refuse a spec under which a cell that was already started would train differently."""
    for cell in spec.cells():
        config = study.cell_dir(cell) / "config.json"
        if not config.is_file():
            continue
        saved = read_config(config)
        current = cell.config().to_dict()
        differing = config_differences(saved, current)
        if differing:
            key = cell.changed_option(differing)
            raise ConfigError(f"the spec changes cell {cell.name}, which was trained with "
                              f"{key} = {saved.get(key)!r} (the spec now gives {current.get(key)!r}); "
                              "restore the spec or use another --out")


def spec_difference(old: str, new: str) -> str:
    """The first setting in which spec text `new` differs from `old`, in words ("[train] lr =
    0.05 there, 0.02 here"), or "only comments or layout differ"."""
    try:
        before, after = _flat(tomllib.loads(old)), _flat(tomllib.loads(new))
    except (tomllib.TOMLDecodeError, RecursionError):
        return "its study.toml cannot be read"
    for key in sorted(set(before) | set(after)):
        if before.get(key, _MISSING) != after.get(key, _MISSING):
            section, _, name = key.partition(".")
            label = f"[{section}] {name}" if name else f"[{section}]"
            return f"{label} = {_shown(before.get(key, _MISSING))} there, {_shown(after.get(key, _MISSING))} here"
    return "only comments or layout differ"


def _shown(value) -> str:
    return "nothing" if value is _MISSING else (repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "...")


_MISSING = object()


def _flat(table: dict) -> dict:
    """{"section.key": value} of a parsed spec (arrays of tables kept whole)."""
    out = {}
    for section, body in table.items():
        if isinstance(body, dict):
            out.update({f"{section}.{k}": v for k, v in body.items()})
        else:
            out[section] = body
    return out
