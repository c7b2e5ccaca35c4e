"""The report of a study: every number of every cell, aggregated over seeds, as tables and figures.

    write_report("studies/t1")   # -> studies/t1/report/{report.md, results.csv, results.json, *.png}

A *setting* is a cell's grid values without the seed; its cells are the replicates. Per setting,
checkpoint (last epoch / best on validation) and test eps: mean and sample std over seeds of
every attack's accuracy (Table 1's layout), and the paired difference to the baseline method's
setting with the same other values, seed by seed, with its 95% Student t interval
(minidyn.evaluation.aggregate, as `minidyn compare`). Cells that are not done are listed and
left out of the means, never silently: each mean says its n.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minidyn.evaluation.aggregate import grad_evals_per_example, paired_difference, summarize
from minidyn.evaluation.attack_table import ATTACKS, WORST, WORST_LABEL
from minidyn.fileio import atomic_write
from minidyn.readers import read_metrics
from minidyn.studies.spec import Spec, cell_name
from minidyn.studies.tasks import StudyDir, Task, read_result

CHECKPOINT_WORDS = {"last": "last epoch", "best": "best on validation"}


@dataclass
class CellResult:
    """What one cell left: its state, its evaluations, what it cost, its per-epoch record."""

    name: str
    values: dict
    setting: str                      # the grid values without the seed, as a name
    seed: object
    state: str                        # "done", "failed", "unfinished", "not started"
    white: dict = field(default_factory=dict)   # study-eval.json "results"
    black: dict = field(default_factory=dict)   # study-eval-blackbox.json "results"
    metrics: list = field(default_factory=list)
    grad_evals: float | None = None   # training attack gradient evaluations per example
    train_seconds: float | None = None
    eval_seconds: float | None = None


def collect(study: StudyDir, spec: Spec) -> list[CellResult]:
    """Every cell of the study with what it has on disk (nothing is required to exist)."""
    out = []
    for cell in spec.cells():
        directory = study.cell_dir(cell)
        train, black = Task(cell, "train"), Task(cell, "blackbox")
        white_record = read_result(study.result(train)) if study.done(spec, train) else None
        black_record = read_result(study.result(black)) if study.done(spec, black) else None
        metrics = read_metrics(directory / "metrics.jsonl")
        if white_record is not None:
            state = "done"
        elif study.failure(train).is_file():
            state = "failed"
        else:
            state = "unfinished" if (directory / "config.json").is_file() else "not started"
        setting = cell_name({k: v for k, v in cell.values.items() if k != "seed"}) or spec.name
        result = CellResult(cell.name, dict(cell.values), setting, cell.values.get("seed", 0), state,
                            (white_record or {}).get("results", {}), (black_record or {}).get("results", {}),
                            metrics)
        if state == "done":
            result.grad_evals = grad_evals_per_example(directory)
            result.train_seconds = float(sum(r.get("seconds", 0.0) for r in metrics))
            result.eval_seconds = float(white_record.get("seconds", 0.0))
        out.append(result)
    return out


def columns(spec: Spec) -> list[str]:
    """The attack columns in [eval]'s order, then the worst case."""
    return list(spec.eval.attacks) + [WORST]


def label(column: str) -> str:
    return WORST_LABEL if column == WORST else ATTACKS[column].label


def accuracy(cell: CellResult, which: str, eps_key: str | None, column: str, black: bool = False):
    """The cell's accuracy (%) under `column` for checkpoint `which` at eps `eps_key` (None:
    the cell's only or first eps), or None."""
    results = (cell.black if black else cell.white).get(which)
    if not results:
        return None
    by_eps = results["eps"]
    key = eps_key if eps_key is not None else next(iter(by_eps))
    return by_eps.get(key, {}).get("accuracy", {}).get(column)


def settings_of(cells: list[CellResult]) -> list[str]:
    return list(dict.fromkeys(c.setting for c in cells))


def baseline_setting(spec: Spec, cells: list[CellResult], setting: str) -> str | None:
    """The setting with the grid values of `setting` but [report] baseline's (None where that
    is `setting` itself or not in the study)."""
    for c in cells:
        if c.setting == setting:
            values = {k: v for k, v in c.values.items() if k != "seed"}
            base = {k: v for k, v in spec.report["baseline"].items() if k in values}
            wanted = {**values, **base}
            if not base or wanted == values:
                return None
            name = cell_name(wanted) or spec.name
            return name if any(o.setting == name for o in cells) else None
    return None


def baseline_words(spec: Spec) -> str:
    return ", ".join(f"{k} {v}" for k, v in spec.report["baseline"].items())


def table(spec: Spec, cells: list[CellResult], which: str, eps_key: str | None = None,
          black: bool = False) -> list[dict]:
    """One row per setting: {"setting", "seeds", "columns": {col: Summary dict}, "difference":
    {col: Difference dict} (None for the baseline), "grad_evals", "train_minutes"}."""
    rows = []
    cols = columns(spec) if not black else [c for c in columns(spec) if c != "clean"]
    for setting in settings_of(cells):
        members = [c for c in cells if c.setting == setting and c.state == "done"]
        row = {"setting": setting, "seeds": [c.seed for c in members], "columns": {}, "difference": None}
        for col in cols:
            row["columns"][col] = vars(summarize(accuracy(c, which, eps_key, col, black) for c in members))
        base = baseline_setting(spec, cells, setting)
        if base is not None:
            base_members = {c.seed: c for c in cells if c.setting == base and c.state == "done"}
            row["baseline"] = base
            row["difference"] = {}
            for col in cols:
                d = paired_difference(
                    {c.seed: accuracy(c, which, eps_key, col, black) for c in members},
                    {s: accuracy(b, which, eps_key, col, black) for s, b in base_members.items()})
                row["difference"][col] = vars(d)
        row["grad_evals"] = vars(summarize(c.grad_evals for c in members))
        row["train_minutes"] = vars(summarize(None if c.train_seconds is None else c.train_seconds / 60
                                              for c in members))
        rows.append(row)
    return rows


def eps_keys(cells: list[CellResult], which: str = "last") -> list[str]:
    """The test eps values the evaluations used (as recorded), in order."""
    keys: dict[str, None] = {}
    for c in cells:
        for key in (c.white.get(which) or {}).get("eps", {}):
            keys[key] = None
    return list(keys)


def _mean_std(s: dict, digits: int = 2) -> str:
    if not s["n"]:
        return "-"
    if s["std"] is None:
        return f"{s['mean']:.{digits}f} (n={s['n']})"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} (n={s['n']})"


def _difference(d: dict | None) -> str:
    if d is None or not d["n"]:
        return "-"
    if d["low"] is None:
        return f"{d['mean']:+.2f} (n={d['n']})"
    excludes_zero = d["low"] > 0 or d["high"] < 0
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]{' *' if excludes_zero else ''}"


def markdown_table(spec: Spec, rows: list[dict], black: bool = False) -> str:
    cols = columns(spec) if not black else [c for c in columns(spec) if c != "clean"]
    head = ["setting"] + [label(c) for c in cols] + ([] if black else ["grad evals / example", "train min"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["setting"]] + [_mean_std(r["columns"][c]) for c in cols]
        if not black:
            cells += [_mean_std(r["grad_evals"], 1), _mean_std(r["train_minutes"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_differences(spec: Spec, rows: list[dict], black: bool = False) -> str:
    cols = columns(spec) if not black else [c for c in columns(spec) if c != "clean"]
    diff_rows = [r for r in rows if r["difference"] is not None]
    if not diff_rows:
        return ""
    head = ["setting - baseline"] + [label(c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in diff_rows:
        lines.append("| " + " | ".join([f"{r['setting']} - {r['baseline']}"]
                                       + [_difference(r["difference"][c]) for c in cols]) + " |")
    return "\n".join(lines)


def csv_rows(spec: Spec, cells: list[CellResult]) -> list[dict]:
    """Every number of every finished cell: one row per (cell, checkpoint, kind, eps, attack)."""
    rows = []
    for c in cells:
        for kind, results in (("white-box", c.white), ("black-box", c.black)):
            for which, result in results.items():
                for eps_key, evaluation in result["eps"].items():
                    for attack, acc in evaluation["accuracy"].items():
                        rows.append({"cell": c.name, "setting": c.setting, "seed": c.seed,
                                     "checkpoint": which, "epoch": result.get("epoch"), "kind": kind,
                                     "eps": float(eps_key), "attack": attack, "accuracy": acc,
                                     "n": evaluation["n"], "grad_evals_per_example": c.grad_evals,
                                     "train_seconds": c.train_seconds})
    return rows


def write_report(study_dir: str | Path) -> list[Path]:
    """Write STUDY/report/ and return the paths written."""
    from minidyn.studies import figures

    study = StudyDir(study_dir)
    spec = study.spec()
    cells = collect(study, spec)
    out = study.path / "report"
    out.mkdir(exist_ok=True)
    numbers = {"study": spec.name, "cells": [vars(c) | {"metrics": None} for c in cells], "tables": {}}
    sections = [f"# Study {spec.name}", "", f"Made by `minidyn study report {study.path}` from "
                f"`{study.spec_file}`.", "", *_state_lines(cells), "", *_table_sections(spec, cells, numbers)]
    written = []
    if figures.available():
        sections += ["## Figures", ""]
        for name, caption in figures.plot_all(spec, cells, out):
            sections += [f"![{caption}]({name})", "", f"*{caption}*", ""]
            written.append(out / name)
    else:
        sections += ["(matplotlib is not installed: `pip install 'minidyn[plot]'` for the figures)", ""]
    report = out / "report.md"
    atomic_write(report, lambda f: f.write("\n".join(sections)))
    _write_csv(out / "results.csv", csv_rows(spec, cells))
    atomic_write(out / "results.json", lambda f: json.dump(numbers, f, indent=1, default=_plain))
    return [report, out / "results.csv", out / "results.json", *written]


def _table_sections(spec: Spec, cells: list[CellResult], numbers: dict) -> list[str]:
    """The markdown of every white-box and black-box table (numbers["tables"] gets their rows)."""
    sections = []
    for which in spec.eval.checkpoints:
        for eps_key in eps_keys(cells, which) or [None]:
            rows = table(spec, cells, which, eps_key)
            numbers["tables"][f"{which}/eps={eps_key}"] = rows
            title = f"White-box accuracy (%), {CHECKPOINT_WORDS[which]}, test eps {float(eps_key):g}" \
                if eps_key else f"White-box accuracy (%), {CHECKPOINT_WORDS[which]}"
            sections += [f"## {title}", "", "mean ± sample std over seeds (n seeds)", "",
                         markdown_table(spec, rows), ""]
            diffs = markdown_differences(spec, rows)
            if diffs:
                sections += [f"Paired difference to {baseline_words(spec)} over seeds, seed by seed, "
                             "mean [95% t interval]; * where the interval excludes 0", "", diffs, ""]
    if any(c.black for c in cells):
        for which in spec.eval.checkpoints:
            rows = table(spec, cells, which, None, black=True)
            numbers["tables"][f"blackbox/{which}"] = rows
            sections += [f"## Black-box accuracy (%), {CHECKPOINT_WORDS[which]} (cf. Table 2)", "",
                         "attacks crafted on each seed's surrogate (the next seed's "
                         f"{json.dumps(spec.eval.surrogate)} cell)", "", markdown_table(spec, rows, black=True), "",
                         markdown_differences(spec, rows, black=True), ""]
    return sections


def _write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _state_lines(cells: list[CellResult]) -> list[str]:
    lines = [f"{sum(c.state == 'done' for c in cells)} of {len(cells)} cells done."]
    for state in ("failed", "unfinished", "not started"):
        names = [c.name for c in cells if c.state == state]
        if names:
            lines.append(f"- {state} (left out of every number below): {', '.join(names)}")
    return lines
