"""What the cells of a study left, read back for the report and its figures: per cell its state,
its evaluations, its cost and per-epoch record (CellResult, collect), and the look-ups on them
(a cell's accuracy or per-example correctness under one attack, checkpoint and eps; the settings;
each setting's baseline).

    cells = collect(StudyDir("studies/t1"), spec)
    accuracy(cells[0], "last", None, "pgd20")   # %, or None
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from minidyn.evaluation.aggregate import grad_evals_per_example
from minidyn.evaluation.attack_table import ATTACKS, WORST, WORST_LABEL
from minidyn.files.readers import read_metrics
from minidyn.studies.examples import read_cell_examples
from minidyn.studies.spec import Spec, cell_name
from minidyn.errors import ConfigError
from minidyn.studies.tasks import StudyDir, Task, load_result, settings

CHECKPOINT_WORDS = {"last": "last epoch", "best": "best on validation"}


@dataclass
class CellResult:
    """What one cell left: its state, its evaluations, what it cost, its per-epoch record."""

    name: str
    values: dict
    setting: str                      # the grid values without the seed, as a name
    seed: object
    state: str                        # "done", "invalid", "failed", "unfinished", "not started"
    white: dict = field(default_factory=dict)   # study-eval.json "results"
    black: dict = field(default_factory=dict)   # study-eval-blackbox.json "results"
    metrics: list = field(default_factory=list)
    grad_evals: float | None = None   # training attack gradient evaluations per example
    train_seconds: float | None = None
    examples: dict | None = None      # white-box per-example arrays (studies.examples), None: no file
    black_examples: dict | None = None
    black_state: str | None = None    # "done", "invalid", "failed", "waiting"; None without [eval] surrogate
    problems: list = field(default_factory=list)  # why a result file is not used (one line each)


def collect(study: StudyDir, spec: Spec) -> list[CellResult]:
    """Every cell of the study with what it has on disk (nothing is required to exist). A
    result file that is not a valid one (readers.read_study_eval: a tampered accuracy of 250,
    say) leaves its cell out, in state "invalid" with the reader's line in `problems`."""
    out = []
    for cell in spec.cells():
        directory = study.cell_dir(cell)
        train, black = Task(cell, "train"), Task(cell, "blackbox")
        problems: list[str] = []
        white_record = _valid_result(study, spec, train, problems)
        black_record = _valid_result(study, spec, black, problems) if spec.eval.surrogate is not None else None
        metrics = read_metrics(directory / "metrics.jsonl")
        if white_record is not None:
            state = "done"
        elif problems and problems[0].startswith(str(study.result(train))):
            state = "invalid"
        elif study.failure(train).is_file():
            state = "failed"
        else:
            state = "unfinished" if (directory / "config.json").is_file() else "not started"
        setting = cell_name({k: v for k, v in cell.values.items() if k != "seed"}) or spec.name
        result = CellResult(cell.name, dict(cell.values), setting, cell.values.get("seed", 0), state,
                            (white_record or {}).get("results", {}), (black_record or {}).get("results", {}),
                            metrics, problems=problems)
        if state == "done":
            result.grad_evals = grad_evals_per_example(directory)
            result.train_seconds = float(sum(r.get("seconds", 0.0) for r in metrics))
            result.examples = read_cell_examples(study.result(train), white_record)
        if black_record is not None:
            result.black_examples = read_cell_examples(study.result(black), black_record)
        if spec.eval.surrogate is not None:
            result.black_state = "done" if black_record is not None else (
                "invalid" if any(p.startswith(str(study.result(black))) for p in problems) else
                "failed" if study.failure(black).is_file() else "waiting")
        out.append(result)
    return out


def _valid_result(study: StudyDir, spec: Spec, task: Task, problems: list) -> dict | None:
    """The task's result where it is done (made with the spec's settings) and valid; a result
    file that is not valid adds the reader's line to `problems` and gives None."""
    try:
        record = load_result(study.result(task))
    except ConfigError as error:
        problems.append(str(error))
        return None
    return record if record is not None and record.get("settings") == settings(spec, task) else None


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


def per_example(cell: CellResult, which: str, eps_key: str | None, column: str, black: bool = False):
    """(indices int64 (n,), correct bool (n,)) of the cell under `column` (as `accuracy`), or
    None where the cell has no per-example file (an older study) or no such evaluation."""
    results = (cell.black_examples if black else cell.examples) or {}
    by_eps = results.get(which)
    if not by_eps:
        return None
    arrays = by_eps.get(eps_key if eps_key is not None else next(iter(by_eps)), {})
    return (arrays["indices"], arrays[column]) if column in arrays else None


def stacked(cells: list[CellResult], which: str, eps_key: str | None, column: str,
            black: bool = False) -> np.ndarray | None:
    """bool (len(cells), n): the cells' per-example correctness on one set of test examples, or
    None where a cell has none or the cells were tested on different examples."""
    found = [per_example(c, which, eps_key, column, black) for c in cells]
    if not found or any(f is None for f in found) or any(
            not np.array_equal(found[0][0], f[0]) for f in found[1:]):
        return None
    return np.stack([f[1] for f in found])


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


def other_baseline_key(key: str, baseline: dict) -> str:
    """The results.json key of table `key`'s differences to another baseline: KEY/baseline=NAME,
    NAME the whole baseline's values ([report] baseline's with a primary's own over them) in key
    order, so that any way of naming the same baseline finds it."""
    return f"{key}/baseline={cell_name(dict(sorted(baseline.items())))}"


def baseline_words(spec: Spec) -> str:
    return ", ".join(f"{k} {v}" for k, v in spec.report["baseline"].items())


def eps_keys(cells: list[CellResult], which: str = "last") -> list[str]:
    """The test eps values the evaluations used (as recorded), in order."""
    keys: dict[str, None] = {}
    for c in cells:
        for key in (c.white.get(which) or {}).get("eps", {}):
            keys[key] = None
    return list(keys)
