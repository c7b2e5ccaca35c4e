"""Shared by the study tests: cells written as the workers write them, without training."""
import json

import pytest

from minidyn.evaluation.evaluate import EvalResult
from minidyn.studies.examples import write_examples
from minidyn.studies.tasks import Task, settings, write_result


def _done_cells(study, spec, correct):
    """Every cell of `spec` in `study` done with per-example results on 40 test examples, both
    checkpoints: correct(cell) -> bool (40,), the same for clean, fgsm and pgd10 (tiny's attacks)."""
    for cell in spec.cells():
        directory = study.cell_dir(cell)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(cell.config().to_dict()))
        (directory / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "grad_evals": 300, "seconds": 1.0}) + "\n")
        by_attack = {a: correct(cell) for a in ("clean", "fgsm", "pgd10")}
        evaluations = {(w, "0.1"): EvalResult(list(by_attack), by_attack, 0.1, 40) for w in ("last", "best")}
        task = Task(cell, "train")
        reference = write_examples(study.result(task), evaluations)
        write_result(study.result(task), {"settings": settings(spec, task), "results": {
            w: {"epoch": 1, "seconds": 1.0, "examples": reference, "eps": {"0.1": evaluations[w, "0.1"].to_dict()}}
            for w in ("last", "best")}})


@pytest.fixture
def done_cells():
    """The function that writes a study's cells as done (see _done_cells)."""
    return _done_cells
