"""The study report: its means, standard deviations and paired intervals against a hand computation."""
import json
import math

import pytest

from minidyn.studies.report import write_report
from minidyn.studies.spec import load_spec
from minidyn.studies.tasks import StudyDir, Task, write_result

PGD20 = {("standard", 0): 80.0, ("standard", 1): 82.0, ("standard", 2): 84.0,
         ("dynamic", 0): 81.0, ("dynamic", 1): 85.0, ("dynamic", 2): 86.0}


@pytest.fixture
def fake_study(tmp_path, tiny_text):
    """A study whose cells are 'done' with chosen accuracies (no training: the report only reads)."""
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text.replace("seed = [0, 1]", "seed = [0, 1, 2]"))

    def accuracies(cell):
        key = (cell.values["method"], cell.values["seed"])
        return {"0.1": {"clean": 90.0, "fgsm": 85.0, "pgd10": PGD20[key], "worst-case": PGD20[key] - 1}}

    return done_study(spec_file, tmp_path / "study", accuracies)


def done_study(spec_file, out, accuracies) -> StudyDir:
    """The study of spec_file in `out` with every cell 'done': two epochs of metrics and, for
    both checkpoints, accuracies(cell) = {eps: {attack: accuracy}} on 40 test examples."""
    spec = load_spec(spec_file)
    study = StudyDir(out)
    study.prepare(spec)
    for cell in spec.cells():
        directory = study.cell_dir(cell)
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(cell.config().to_dict()))
        (directory / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": t, "grad_evals": 300, "seconds": 30.0, "val_clean_acc": 50.0 + t,
                        "val_clean_n": 60, "val_pgd_acc": 10.0 + t, "val_pgd_n": 30}) + "\n" for t in range(2)))
        by_eps = {eps: {"accuracy": accuracy, "n": 40} for eps, accuracy in accuracies(cell).items()}
        result = {"epoch": 2, "seconds": 1.0, "eps": by_eps}
        write_result(study.result(Task(cell, "train")),
                     {"settings": spec.eval.settings(), "results": {"last": result, "best": result}})
    return study


def test_the_report_computes_mean_std_and_the_paired_t_interval_by_hand(fake_study):
    write_report(fake_study.path)
    numbers = json.loads((fake_study.path / "report" / "results.json").read_text())
    rows = {r["setting"]: r for r in numbers["tables"]["last/eps=0.1"]}
    s = rows["standard"]["columns"]["pgd10"]
    assert s == {"mean": 82.0, "std": 2.0, "n": 3}                    # 80, 82, 84
    d = rows["dynamic"]["columns"]["pgd10"]
    assert d["mean"] == pytest.approx(84.0) and d["std"] == pytest.approx(math.sqrt(7))  # 81, 85, 86
    diff = rows["dynamic"]["difference"]["pgd10"]                     # 1, 3, 2 by seed
    half = 4.302652729911275 * 1.0 / math.sqrt(3)                     # t_{0.975, 2} * s_d / sqrt(n)
    assert diff["mean"] == pytest.approx(2.0) and diff["std"] == pytest.approx(1.0)
    assert (diff["low"], diff["high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert rows["standard"]["difference"] is None                     # the baseline itself
    assert rows["dynamic"]["grad_evals"]["mean"] == pytest.approx(600 / 150)  # 2 x 300 over 150 examples
    assert rows["dynamic"]["train_minutes"]["mean"] == pytest.approx(1.0)
    text = (fake_study.path / "report" / "report.md").read_text()
    assert "84.00 ± 2.65 (n=3)" in text
    assert f"+2.00 [{2 - half:+.2f}, {2 + half:+.2f}]" in text and "6 of 6 cells done." in text
    lines = (fake_study.path / "report" / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + 6 * 2 * 4  # cells x checkpoints x (3 attacks + worst case)


def test_unfinished_cells_are_listed_and_left_out(fake_study):
    (fake_study.path / "cells" / "dynamic_seed-2" / "study-eval.json").unlink()
    write_report(fake_study.path)
    text = (fake_study.path / "report" / "report.md").read_text()
    assert "5 of 6 cells done." in text and "unfinished (left out of every number below): dynamic_seed-2" in text
    numbers = json.loads((fake_study.path / "report" / "results.json").read_text())
    rows = {r["setting"]: r for r in numbers["tables"]["last/eps=0.1"]}
    assert rows["dynamic"]["columns"]["pgd10"]["n"] == 2
    assert rows["dynamic"]["difference"]["pgd10"]["n"] == 2


def test_the_report_draws_its_figures(fake_study):
    pytest.importorskip("matplotlib")
    paths = write_report(fake_study.path)
    assert {p.name for p in paths} >= {"report.md", "results.csv", "results.json", "val_curves.png"}
    assert all(p.stat().st_size > 0 for p in paths)


def test_a_swept_option_and_eval_eps_values_get_their_figures(tmp_path, tiny_text):
    # Fig 2a/2b/4b (an option swept in the grid, here steps) and Fig 4a (robustness vs test eps)
    pytest.importorskip("matplotlib")
    spec_file = tmp_path / "sweep.toml"
    spec_file.write_text(tiny_text.replace("\nsteps = 2\n", "\n").replace("seed = [0, 1]", "seed = [0, 1]\nsteps = [1, 2]")
                         .replace("[eval]\n", "[eval]\neps = [0.1, 0.2]\n"))
    study = done_study(spec_file, tmp_path / "study", lambda cell: {
        eps: {"clean": 90.0, "pgd10": 80.0 - 100 * float(eps) + cell.values["steps"]} for eps in ("0.1", "0.2")})
    names = {p.name for p in write_report(study.path)}
    assert {"sweep_steps.png", "eps_curve.png"} <= names, names
