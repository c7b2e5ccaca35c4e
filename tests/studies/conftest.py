"""Shared by the study tests: cells written as the workers write them, without training."""
import json

import pytest

from minidyn.evaluation.evaluate import EvalResult
from minidyn.studies.examples import write_examples
from minidyn.studies.spec import load_spec
from minidyn.studies.tasks import StudyDir, Task, settings, write_result


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


@pytest.fixture
def three_seed_study(tmp_path, tiny_text, monkeypatch):
    """make(where) -> (StudyDir, spec): tiny with seeds 0-2 and [report] fosc_epochs = [2],
    prepared at `where` (no figures drawn: matplotlib's time is not what these tests test)."""
    monkeypatch.setattr("minidyn.studies.figures.available", lambda: False)

    def make(where):
        spec_file = tmp_path / "tiny.toml"
        spec_file.write_text(tiny_text.replace("seed = [0, 1]", "seed = [0, 1, 2]") + "[report]\nfosc_epochs = [2]\n")
        spec = load_spec(spec_file)
        study = StudyDir(where)
        study.prepare(spec)
        return study, spec
    return make
