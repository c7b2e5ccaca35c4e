"""The study report: its means, standard deviations and paired intervals against a hand computation."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from minidyn.errors import ConfigError
from minidyn.evaluation.bootstrap import two_way_bootstrap
from minidyn.evaluation.evaluate import EvalResult
from minidyn.evaluation.significance import holm, mcnemar_exact
from minidyn.studies.examples import examples_path, write_examples
from minidyn.studies.report import write_report
from minidyn.studies.spec import load_spec, parse_spec
from minidyn.studies.tasks import StudyDir, Task, settings, write_result

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


def done_study(spec_file, out, accuracies, examples=None) -> StudyDir:
    """The study of spec_file in `out` with every cell 'done': two epochs of metrics and, for
    both checkpoints, accuracies(cell) = {eps: {attack: accuracy}} on 40 test examples; or,
    with `examples`, examples(cell) = {eps: {attack: bool (n,)}} saved as the worker saves them
    (a per-example file) with the accuracies they give."""
    if examples is not None:
        return _done_study_with_examples(spec_file, out, examples)
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


def _done_study_with_examples(spec_file, out, examples) -> StudyDir:
    spec = load_spec(spec_file)
    study = StudyDir(out)
    study.prepare(spec)
    for cell in spec.cells():
        done_cell(study, spec, cell, examples(cell))
    return study


def done_cell(study, spec, cell, by_eps, best_epoch=2, kind="train"):
    """Write cell's metrics, config and its result with per-example files (both checkpoints)."""
    directory = study.cell_dir(cell)
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cell.config().to_dict()))
    (directory / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": t, "grad_evals": 300, "seconds": 30.0, "val_clean_acc": 50.0,
                    "val_clean_n": 60, "val_pgd_acc": 10.0 + 5 * (t == best_epoch - 1), "val_pgd_n": 30}) + "\n"
        for t in range(2)))
    evaluations = {(which, eps): EvalResult(list(correct), correct, float(eps), len(next(iter(correct.values()))))
                   for which in ("last", "best") for eps, correct in by_eps.items()}
    reference = write_examples(study.result(Task(cell, kind)), evaluations)
    results = {which: {"epoch": 2 if which == "last" else best_epoch, "seconds": 1.0, "examples": reference,
                       "eps": {eps: evaluations[which, eps].to_dict() for eps in by_eps}}
               for which in ("last", "best")}
    write_result(study.result(Task(cell, kind)), {"settings": settings(spec, Task(cell, kind)), "results": results})


def correct_of(count, n=50, offset=0):
    """bool (n,) with `count` examples correct, from example `offset` on (cyclically)."""
    out = np.zeros(n, dtype=bool)
    out[(offset + np.arange(count)) % n] = True
    return out


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
    assert f"+2.00; t [{2 - half:+.2f}, {2 + half:+.2f}]; boot n/a" in text and "6 of 6 cells done." in text
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


def read_numbers(study):
    return json.loads((study.path / "report" / "results.json").read_text())


def test_a_zero_width_interval_is_never_starred(fake_study):
    # dynamic - standard is +2 for every seed: a t interval of zero width, which excludes 0
    spec = load_spec(fake_study.spec_file)
    for cell in spec.cells():
        record = json.loads(fake_study.result(Task(cell, "train")).read_text())
        seed = cell.values["seed"]
        value = 80.0 + seed + 2 * (cell.values["method"] == "dynamic")
        for result in record["results"].values():
            result["eps"]["0.1"]["accuracy"]["pgd10"] = value
        write_result(fake_study.result(Task(cell, "train")), record)
    write_report(fake_study.path)
    text = (fake_study.path / "report" / "report.md").read_text()
    assert "+2.00; t [+2.00, +2.00]; boot n/a |" in text and "[+2.00, +2.00] *" not in text
    assert "never starred" in text


def test_the_bootstrap_intervals_are_the_two_way_bootstrap_of_the_per_example_results(tmp_path, tiny_text):
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    counts = {("standard", 0): 30, ("standard", 1): 35, ("standard", 2): 32,
              ("dynamic", 0): 33, ("dynamic", 1): 36, ("dynamic", 2): 37}

    def examples(cell):
        key = (cell.values["method"], cell.values["seed"])
        return {"0.1": {"clean": correct_of(50), "fgsm": correct_of(40, offset=key[1]),
                        "pgd10": correct_of(counts[key], offset=3 * key[1])}}

    study = done_study(spec_file, tmp_path / "study", None, examples)
    write_report(study.path)
    rows = {r["setting"]: r for r in read_numbers(study)["tables"]["last/eps=0.1"]}
    standard = np.stack([examples(c)["0.1"]["pgd10"] for c in load_spec(spec_file).cells()
                         if c.values["method"] == "standard"])
    dynamic = np.stack([examples(c)["0.1"]["pgd10"] for c in load_spec(spec_file).cells()
                        if c.values["method"] == "dynamic"])
    assert rows["standard"]["bootstrap"]["pgd10"] == vars(two_way_bootstrap(standard))
    assert rows["dynamic"]["difference_bootstrap"]["pgd10"] == vars(two_way_bootstrap(dynamic.astype(np.int8) - standard))
    assert rows["dynamic"]["columns"]["pgd10"]["mean"] == pytest.approx(100 * dynamic.mean())
    assert rows["standard"]["bootstrap"]["clean"]["low"] == rows["standard"]["bootstrap"]["clean"]["high"] == 100.0
    b = rows["standard"]["bootstrap"]["pgd10"]
    text = (study.path / "report" / "report.md").read_text()
    assert f"{100 * standard.mean():.2f} ± {100 * standard.mean(axis=1).std(ddof=1):.2f} (n=3) [{b['low']:.2f}, {b['high']:.2f}]" in text
    assert "3 seeds per setting, 50 test examples per cell" in text
    assert "2,000 resamples, bootstrap seed 0" in text and "two-way percentile bootstrap" in text
    # per table: 8 means (2 settings x 4 columns) + 4 bootstrap and 4 t intervals of differences
    assert "This report prints 32 intervals (8 t, 24 bootstrap)" in text


def test_one_seed_per_side_gets_the_exact_mcnemar_test(tmp_path, tiny_text):
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text.replace("seed = [0, 1]", "seed = [0]"))
    by_method = {"standard": correct_of(20), "dynamic": correct_of(26, offset=2)}
    study = done_study(spec_file, tmp_path / "study", None, lambda cell: {"0.1": {
        "clean": correct_of(45), "fgsm": correct_of(40), "pgd10": by_method[cell.values["method"]]}})
    write_report(study.path)
    row = {r["setting"]: r for r in read_numbers(study)["tables"]["last/eps=0.1"]}["dynamic"]
    test = mcnemar_exact(by_method["dynamic"], by_method["standard"])
    assert (test.k_ab, test.k_ba) == (8, 2)
    assert row["mcnemar"]["pgd10"] == vars(test) and row["mcnemar"]["clean"]["p"] == 1.0
    assert "+12.00 (n=1); boot [" in (study.path / "report" / "report.md").read_text()
    assert f"McNemar p {test.p:.3g} (8:2)" in (study.path / "report" / "report.md").read_text()


PRIMARY = """
[report]
primary = [{setting = {method = "dynamic"}, attack = "pgd10", checkpoint = "best"},
           {setting = {method = "dynamic"}, attack = "fgsm", checkpoint = "last"}]
"""


def test_primary_comparisons_are_marked_and_holm_adjusted(tmp_path, tiny_text):
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text.replace("[eval]", PRIMARY + "\n[eval]"))
    study = done_study(spec_file, tmp_path / "study", None, lambda cell: {"0.1": {
        "clean": correct_of(45), "fgsm": correct_of(30 + 6 * (cell.values["method"] == "dynamic")),
        "pgd10": correct_of(20 + cell.values["seed"], offset=cell.values["seed"])}})
    write_report(study.path)
    primary = read_numbers(study)["primary"]
    assert [(p["table"], p["setting"], p["column"]) for p in primary] == [
        ("best/eps=0.1", "dynamic", "pgd10"), ("last/eps=0.1", "dynamic", "fgsm")]
    assert [p["holm"] for p in primary] == pytest.approx(holm([p["p"] for p in primary]))
    assert all(p["p"] == max(p["p_bootstrap"], p["p_seeds"]) for p in primary)
    # fgsm: +12 points for every seed (p_seeds 0); a resample of 50 examples misses all 6 that
    # differ with probability (44/50)^50 = 0.0017, so the bootstrap p is about 2 x 0.0017
    assert primary[1]["p_seeds"] == 0.0 and 0.001 < primary[1]["p"] == primary[1]["p_bootstrap"] < 0.02
    assert primary[0]["p"] == 1.0 and primary[1]["holm"] == pytest.approx(2 * primary[1]["p"])
    text = (study.path / "report" / "report.md").read_text()
    assert "## Primary comparisons" in text and text.count("**primary**") == 3   # the legend and 2 cells
    assert "Holm-adjusted" in text and "every other interval is exploratory" in text


def test_the_report_says_which_epoch_each_seeds_best_checkpoint_chose(tmp_path, tiny_text):
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text)
    spec = load_spec(spec_file)
    study = StudyDir(tmp_path / "study")
    study.prepare(spec)
    for cell in spec.cells():
        done_cell(study, spec, cell, {"0.1": {"clean": correct_of(40), "fgsm": correct_of(30), "pgd10": correct_of(20)}},
                  best_epoch=1 + cell.values["seed"])
    write_report(study.path)
    text = (study.path / "report" / "report.md").read_text()
    assert "| standard_seed-0 | 1 | 2 | 15.00 | 6.52 | 30 / 60 |" in text      # sqrt(.15 .85 / 30)
    assert "| dynamic_seed-1 | 2 | 2 | 15.00 | 6.52 | 30 / 60 |" in text
    assert [r["epoch"] for r in read_numbers(study)["best_epochs"]] == [1, 2, 1, 2]


def test_failed_black_box_tasks_are_listed_as_left_out(tmp_path, tiny_text):
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text.replace("[eval]", '[eval]\nsurrogate = {method = "standard"}'))
    spec = load_spec(spec_file)
    study = done_study(spec_file, tmp_path / "study", None, lambda cell: {"0.1": {
        "clean": correct_of(40), "fgsm": correct_of(30), "pgd10": correct_of(20)}})
    for cell in spec.cells()[:2]:
        done_cell(study, spec, cell, {"0.1": {"clean": correct_of(40), "fgsm": correct_of(33), "pgd10": correct_of(25)}},
                  kind="blackbox")
    (study.failed_dir / "dynamic_seed-0.blackbox.json").write_text(json.dumps({"exit_code": 1}))
    write_report(study.path)
    text = (study.path / "report" / "report.md").read_text()
    assert "- black-box task failed (left out of the black-box tables): dynamic_seed-0" in text
    assert "- black-box task not done (left out of the black-box tables): dynamic_seed-1" in text


def test_an_old_study_without_per_example_files_still_reports_with_its_t_intervals(fake_study):
    write_report(fake_study.path)
    text = (fake_study.path / "report" / "report.md").read_text()
    assert "84.00 ± 2.65 (n=3) [n/a]" in text and "0 of 6 done cells have them" in text
    assert "This report prints 8 intervals (8 t, 0 bootstrap)" in text   # 4 columns x 2 checkpoints


@pytest.mark.parametrize("report, message", [
    ('baseline = "standrad"', "[report] baseline: method = 'standrad' matches no grid value (the grid's method values: 'standard', 'dynamic')"),
    ('baseline = {steps = 2}', "[report] baseline: steps is not a grid key"),
    ('baseline = {seed = 0}', "seed is not a grid key"),
    ('primary = [{setting = {method = "dynamc"}, attack = "pgd10", checkpoint = "best"}]', "method = 'dynamc' matches no grid value"),
    ('primary = [{setting = {method = "dynamic"}, attack = "pgd20", checkpoint = "best"}]', "attack 'pgd20' is not one of [eval] attacks"),
    ('primary = [{setting = {method = "dynamic"}, attack = "pgd10"}]', "give checkpoint (last or best)"),
    ('primary = [{setting = {method = "standard"}, attack = "pgd10", checkpoint = "best"}]', "has a baseline cell"),
    ('primary = [{setting = {method = "dynamic"}, attack = "pgd10", checkpoint = "best", eps = 0.3}]', "eps 0.3 is not one of [eval] eps"),
    ('primary = [{setting = {method = "dynamic"}, attack = "pgd10", checkpoint = "best", kind = "black-box"}]', "needs [eval] surrogate"),
    ('primary = [{setting = {method = "dynamic"}, attack = "pgd10", where = "best"}]', "primary 1: unknown key(s) where"),
    ('primary = ["dynamic"]', "[report] primary must be a list of tables"),
    ('sweep = "step_size"', "[report] sweep 'step_size' is not a grid key (the grid's keys: method, seed)"),
])
def test_a_report_section_naming_what_the_grid_does_not_have_is_refused(tiny_text, report, message):
    import tomllib
    raw = tomllib.loads(tiny_text + f"\n[report]\n{report}\n")
    with pytest.raises(ConfigError) as error:
        parse_spec(raw)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_default_baseline_is_not_checked_against_a_grid_without_it(tiny_text):
    import tomllib
    raw = tomllib.loads(tiny_text.replace('method = ["standard", "dynamic"]', 'method = ["dynamic", "curriculum"]'))
    assert parse_spec(raw).report["baseline"] == {"method": "standard"}


@pytest.mark.slow
def test_a_tiny_study_saves_per_example_results_and_reports_their_intervals(tmp_path, tiny_text):
    spec = tmp_path / "tiny.toml"
    spec.write_text(tiny_text)
    run = subprocess.run([sys.executable, "-m", "minidyn.cli.main", "study", "run", str(spec), "--out",
                          str(tmp_path / "study"), "--jobs", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    study = StudyDir(tmp_path / "study")
    for cell in load_spec(spec).cells():
        result = study.result(Task(cell, "train"))
        record = json.loads(result.read_text())
        with np.load(examples_path(result), allow_pickle=False) as z:
            correct = np.unpackbits(z["correct"], axis=1, count=40).astype(bool)
            rows = list(zip(z["checkpoint"].tolist(), z["eps"].tolist(), z["attack"].tolist()))
            np.testing.assert_array_equal(z["indices"], np.arange(40))
            assert str(z["token"]) == record["results"]["last"]["examples"]["token"]
        assert len(rows) == 2 * 3                          # 2 checkpoints x 3 attacks at eps 0.1
        for (which, eps, attack), verdicts in zip(rows, correct):
            assert record["results"][which]["eps"][eps]["accuracy"][attack] == 100.0 * int(verdicts.sum()) / 40
    write_report(study.path)
    text = (study.path / "report" / "report.md").read_text()
    assert "2 seeds per setting, 40 test examples per cell" in text and "4 of 4 done cells have them" in text
    assert "[n/a]" not in text and "boot n/a" not in text and "## The checkpoint chosen on validation" in text
    # an old study: its results without the per-example reference report with n/a
    for cell in load_spec(spec).cells():
        result = study.result(Task(cell, "train"))
        record = json.loads(result.read_text())
        for entry in record["results"].values():
            del entry["examples"]
        write_result(result, record)
        examples_path(result).unlink()
    write_report(study.path)
    assert "boot n/a" in (study.path / "report" / "report.md").read_text()


def test_a_primary_comparison_may_name_its_own_baseline(tmp_path, tiny_text):
    """Dynamic - Standard and Dynamic - the equal-cost Standard (fewer steps) as two primary
    comparisons: the second names its own baseline values over [report] baseline's."""
    grid = 'method = ["standard", "dynamic"]\nsteps = [2, 1]\nseed = [0, 1, 2]\n\n[[exclude]]\nmethod = "dynamic"\nsteps = 1\n'
    report = ('\n[report]\nbaseline = {method = "standard", steps = 2}\nprimary = ['
              '{setting = {method = "dynamic"}, attack = "pgd10", checkpoint = "best"},\n'
              '  {setting = {method = "dynamic"}, attack = "pgd10", checkpoint = "best", baseline = {steps = 1}}]\n')
    spec_text = tiny_text.replace('method = ["standard", "dynamic"]\nseed = [0, 1]\n', grid).replace("\nsteps = 2\n", "\n")
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(spec_text + report)
    extra = {("standard", 2): 0, ("standard", 1): -3, ("dynamic", 2): 5}   # correct pgd10 examples over 20
    study = done_study(spec_file, tmp_path / "study", None, lambda cell: {"0.1": {
        "clean": correct_of(45), "fgsm": correct_of(30),
        "pgd10": correct_of(20 + extra[cell.values["method"], cell.values["steps"]] + cell.values["seed"])}})
    write_report(study.path)
    primary = read_numbers(study)["primary"]
    assert [(p["setting"], p["baseline"]) for p in primary] == [
        ("dynamic_steps-2", "standard_steps-2"), ("dynamic_steps-2", "standard_steps-1")]
    assert [p["difference"]["mean"] for p in primary] == pytest.approx([10.0, 16.0])  # of 50 examples
    assert [p["holm"] for p in primary] == pytest.approx(holm([p["p"] for p in primary]))
    text = (study.path / "report" / "report.md").read_text()
    assert "| dynamic_steps-2 - standard_steps-1 |" in text
    # every setting against the primary's own baseline: a table of its own, exploratory but the primary
    rows = {r["setting"]: r for r in read_numbers(study)["tables"]["best/eps=0.1/baseline=standard_steps-1"]}
    assert rows["standard_steps-2"]["difference"]["pgd10"]["mean"] == pytest.approx(6.0)
    assert rows["dynamic_steps-2"]["difference"]["pgd10"]["mean"] == pytest.approx(16.0)
    assert rows["standard_steps-1"]["difference"] is None
    extra = text.split("Another baseline, named by a [report] primary comparison")[-1].split("\n\n")[1]  # best
    lines = {line.split(" | ")[0].strip("| "): line for line in extra.splitlines() if " - " in line}
    assert "**primary**" not in lines["standard_steps-2 - standard_steps-1"]
    assert lines["dynamic_steps-2 - standard_steps-1"].count("**primary**") == 1   # pgd10 only
    assert text.count("Another baseline, named by") == 2                        # last, best
    from minidyn.studies.claims import judge, parse_claim
    claim = parse_claim({"id": "c", "statement": "s", "distance": "d", "study": "study", "checkpoint": "best",
                         "setting": {"method": "standard", "steps": 2}, "baseline": {"steps": 1, "method": "standard"},
                         "attack": "pgd10", "direction": "greater"}, 1)
    row = judge(claim, tmp_path)
    assert row.ours.startswith("+6.00 [") and "primary" not in row.ours
    # the same baseline named twice, and a primary's own baseline that is [report] baseline's
    same = report.replace("baseline = {steps = 1}}]", "baseline = {steps = 1}},\n  {setting = {method = \"dynamic\"}, "
                          "attack = \"fgsm\", checkpoint = \"best\", baseline = {steps = 1, method = \"standard\"}},\n"
                          "  {setting = {method = \"dynamic\"}, attack = \"clean\", checkpoint = \"best\", baseline = {steps = 2}}]")
    spec_file.write_text(spec_text + same)
    (study.path / "study.toml").write_text(spec_text + same)
    write_report(study.path)
    text = (study.path / "report" / "report.md").read_text()
    assert text.count("Another baseline, named by") == 2
    main_table = text.split("## White-box accuracy (%), best on validation")[1].split("Another baseline")[0]
    [dynamic] = [line for line in main_table.splitlines() if line.startswith("| dynamic_steps-2 - standard_steps-2 |")]
    assert dynamic.split(" | ")[1].endswith("**primary**")   # clean, against [report] baseline's own
    import tomllib
    with pytest.raises(ConfigError, match="baseline must be a table of grid values"):
        parse_spec(tomllib.loads((spec_text + report).replace("baseline = {steps = 1}", 'baseline = "x"')))
    with pytest.raises(ConfigError, match="primary 2 baseline: steps = 3 matches no grid value"):
        parse_spec(tomllib.loads((spec_text + report).replace("baseline = {steps = 1}", "baseline = {steps = 3}")))
