"""A finished study's small files, copied where a repository keeps them (`minidyn study publish`).

    publish("/scratch/studies/budget-fashion", "docs/results/budget-fashion")

The copy is itself a study directory that `minidyn study report` and `minidyn study claims` read:
study.toml, report/ (report.md, results.csv, results.json, the PNGs) and, per cell, what the
report reads: config.json, summary.json, metrics.jsonl, each result file (study-eval.json,
study-eval-blackbox.json) and its per-example records (*.examples.npz, a bit per test example
and attack), the FOSC arrays of the epochs [report] fosc_epochs names (4 bytes per training
example), which the FOSC shares and figure read, and the Fig. 1a files `minidyn study fig1a`
wrote (FOSC, loss and correctness per test example). Left behind: the checkpoints (*.pt), the logs,
the locks and the FOSC arrays of the other epochs. So the copy's `minidyn study report` gives the
same numbers and figures as the original's.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from minidyn.errors import ConfigError, MinidynError
from minidyn.evaluation.analysis import fosc_files
from minidyn.studies.examples import examples_path
from minidyn.studies.fig1a import file_name as fig1a_file
from minidyn.studies.tasks import StudyDir

CELL_FILES = ("config.json", "summary.json", "metrics.jsonl")


def publish(study_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy the finished study at `study_dir` to `dest` (replacing an earlier copy of the same
    study there) and return the files written. ConfigError, naming what is missing, if a task is
    not done, the report is missing or older than a result, or `dest` holds anything else."""
    study, dest = StudyDir(study_dir), Path(dest)
    spec = study.spec()
    tasks = study.tasks(spec)
    waiting = [t.name for t in tasks if not study.done(spec, t)]
    if waiting:
        raise ConfigError(f"{study.path}: {len(waiting)} of {len(tasks)} tasks not done ({waiting[0]}); "
                          f"`minidyn study run {spec.name} --out {study.path}` finishes them")
    numbers = study.path / "report" / "results.json"
    measured = [p for t in tasks if t.kind == "train" for w in spec.eval.checkpoints
                if (p := study.cell_dir(t.cell) / fig1a_file(w)).is_file()]
    newest = max(p.stat().st_mtime for p in [*(study.result(t) for t in tasks), *measured])
    if not numbers.is_file() or numbers.stat().st_mtime < newest:
        raise ConfigError(f"{study.path}: {'no report' if not numbers.is_file() else 'its report is older than a result or a Fig. 1a file'}; "
                          f"`minidyn study report {study.path}` writes it")
    _check_dest(dest, study)
    files = [study.spec_file, *sorted(p for p in (study.path / "report").iterdir() if p.is_file())]
    files += measured
    for task in tasks:
        cell = study.cell_dir(task.cell)
        result = study.result(task)
        files += [result, *[p for p in (examples_path(result),) if p.is_file()]]
        if task.kind == "train":
            files += [cell / name for name in CELL_FILES if (cell / name).is_file()]
            fosc = fosc_files(cell)
            files += [fosc[e] for e in spec.report.get("fosc_epochs") or [1] if e in fosc]
    return _copy(study.path, sorted(set(files)), dest)


def _check_dest(dest: Path, study: StudyDir) -> None:
    """Refuse a `dest` that is a file, or a folder holding anything but an earlier copy of this study."""
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} is a file, not a folder")
    if dest.is_dir() and dest.resolve() == study.path.resolve():
        raise ConfigError(f"{dest} is the study itself; publish it to another folder")
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    earlier = dest / "study.toml"
    foreign = [p.name for p in dest.iterdir() if p.name not in ("study.toml", "report", "cells")]
    if foreign or not earlier.is_file():
        raise ConfigError(f"{dest} holds files that are not a published study ({(foreign or ['no study.toml'])[0]}); "
                          "choose an empty or new folder")


def _copy(source: Path, files: list[Path], dest: Path) -> list[Path]:
    """Copy `files` (under `source`) into a fresh folder beside `dest`, then swap it in, so that
    a failed copy leaves `dest` as it was."""
    staging = dest.with_name(dest.name + ".publishing")
    old = dest.with_name(dest.name + ".replaced")
    moved = False
    try:
        shutil.rmtree(staging, ignore_errors=True)
        for path in files:
            target = staging / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        if dest.exists():
            dest.rename(old)
            moved = True
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        if moved and not dest.exists():
            old.rename(dest)
        shutil.rmtree(staging, ignore_errors=True)
        raise MinidynError(f"cannot publish to {dest}: {error.strerror or error}") from None
    return [dest / path.relative_to(source) for path in files]
