"""Hostile study specs (issue 25, "Hostile input, round three"): each is refused by `minidyn
study run` with one `Error:` line naming the spec file and the option, before the study
directory (or anything else) is made; the inputs that used to hang run under a timeout.

Every case runs `minidyn study run SPEC --out OUT` in-process (click's CliRunner, exceptions
not caught: a traceback fails the test), as helpers.assert_one_error_line checks a `train` case.
"""
import json
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.studies import shipped, spec_path
from minidyn.studies.spec import load_spec

from .helpers import assert_one_error_line, snapshot

# a study that trains in seconds on the embedded MNIST sample (numpy, softmax)
TRAIN = {"backend": "numpy", "model": "softmax", "dataset": "mnist-sample", "epochs": 1, "batch_size": 32,
         "steps": 1, "limit": 64, "eval_limit": 16, "eval_steps": 1}
GRID = {"method": ["standard", "dynamic"], "seed": [0, 1]}
EVAL = {"attacks": ["clean", "fgsm"], "limit": 16}


def toml_value(value) -> str:
    """`value` as TOML: JSON's strings, numbers and arrays are TOML's; tables inline."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return json.dumps(value)


def toml(sections: dict) -> str:
    lines = []
    for section, table in sections.items():
        for item in table if section == "exclude" else [table]:
            lines.append("[[exclude]]" if section == "exclude" else f"[{section}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def sections(train=None, grid=None, **more) -> dict:
    """The small study with [train] and [grid] entries replaced (None: removed) and more sections."""
    train = {k: v for k, v in {**TRAIN, **(train or {})}.items() if v is not None}
    grid = {k: v for k, v in {**GRID, **(grid or {})}.items() if v is not None}
    return {"train": train, "grid": grid, "eval": EVAL, **more}


@contextmanager
def within(seconds: int):
    """Fail the test where its body runs longer than `seconds` (a hang, not a slow machine)."""
    def hung(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def study_run(tmp_path: Path, text: str, *extra, name: str = "spec.toml"):
    spec = tmp_path / name
    spec.write_text(text, encoding="utf-8")
    with within(60):
        return CliRunner().invoke(main, ["study", "run", str(spec), *extra], catch_exceptions=False)


def nested(depth: int) -> str:
    """The small study with its grid's method an array `depth` arrays deep."""
    method = '"method" = ' + "[" * depth + '"standard"' + "]" * depth
    return re.sub(r'"method" = \[.*\]', lambda _: method, toml(sections()), count=1)


CASES = {
    # hangs: `minidyn eval`'s bounds
    "eval-restarts-1e9": (sections(eval={**EVAL, "restarts": 10 ** 9}), "[eval] restarts must be <= 1000"),
    "eval-restarts-float": (sections(eval={**EVAL, "restarts": 1e9}), "[eval] restarts must be an integer"),
    "eval-apgd-steps-1e9": (sections(eval={**EVAL, "apgd_steps": 10 ** 9}), "[eval] apgd_steps must be <= 100000"),
    # tracebacks
    # deeper than any recursion limit a test run leaves: 600 levels parsed once the suite had
    # raised the limit, and the spec was then refused for its shape instead
    "nested-100000-arrays": (nested(100_000), "nested too deeply"),
    "nul-in-grid-value": (sections(grid={"data_dir": ["a\0b"]}), ("[grid] data_dir", "control character")),
    "nul-in-method": (sections(grid={"method": ["dyn\0amic"]}), ("[grid] method", "control character")),
    "report-sweep-list": (sections(report={"sweep": ["seed"]}), "[report] sweep must be the name of a grid key"),
    "report-fosc-epochs-text": (sections(report={"fosc_epochs": "1"}), "[report] fosc_epochs must be a list"),
    "report-fosc-epochs-item": (sections(report={"fosc_epochs": ["1"]}), "[report] fosc_epochs must be an integer"),
    "report-fosc-epochs-zero": (sections(report={"fosc_epochs": [0]}), "[report] fosc_epochs must be >= 1"),
    "report-fosc-epochs-late": (sections(report={"fosc_epochs": [5]}), "fosc_epochs: epoch 5 is past"),
    # silent wrong answers
    "surrogate-is-the-cell": (sections(grid={"seed": [0]}, eval={**EVAL, "surrogate": {"method": "standard"}}),
                              "cell standard_seed-0 would be its own surrogate"),
    "surrogate-not-a-grid-key": (sections(eval={**EVAL, "surrogate": {"model": "mlp"}}),
                                 "[eval] surrogate: model is not a grid key"),
    "exclude-typo": (sections(exclude=[{"method": "dynamc"}]), "[[exclude]] 1: method = 'dynamc' matches no grid value"),
    "exclude-not-in-grid": (sections(exclude=[{"lr": 0.1}]), "[[exclude]] 1: lr is not a grid key"),
    "exclude-unknown-option": (sections(exclude=[{"methd": "dynamic"}]), "[[exclude]] 1 unknown option(s) methd"),
    "record-fosc-text": (sections(train={"record_fosc": "false"}), "[train] record_fosc must be true or false"),
    "grid-seed-text": (sections(grid={"seed": ["0", "1"]}), "[grid] seed must be an integer, got '0'"),
    "train-epochs-float": (sections(train={"epochs": 1.5}), "[train] epochs must be an integer, got 1.5"),
    "train-milestones-text": (sections(train={"lr_milestones": "2,3"}), "[train] lr_milestones must be a list of integers"),
    "grid-data-dir-number": (sections(grid={"data_dir": [1]}), "[grid] data_dir must be a string"),
    # late or untidy
    "val-size-beyond-data": (sections(train={"val_size": 10 ** 6}), "val_size 1000000 must be at most 7,999"),
    "limit-beyond-data": (sections(train={"limit": 9000}), "limit 9000 exceeds the 8,000 training examples"),
    "limit-beyond-val-split": (sections(train={"limit": 7500, "val_size": 1000}),
                               "limit 7500 exceeds the 7,000 training examples of mnist-sample left after val_size"),
    "unknown-model": (sections(train={"backend": "torch", "model": "resnet9000"}), "unknown model 'resnet9000'"),
    "model-not-on-numpy": (sections(train={"model": "cnn4"}), "unknown model 'cnn4' for the numpy backend"),
    "cell-name-too-long": (sections(grid={"data_dir": ["d" * 250]}), "more than the 200 a study's file names allow"),
    "study-unknown-key": (sections(study={"nam": "x"}), "[study] unknown key(s) nam"),
    "eval-batch-size": (sections(eval={**EVAL, "batch_size": 2 ** 40}), "[eval] batch_size must be <= 1048576"),
    "eval-seed-negative": (sections(eval={**EVAL, "seed": -1}), "[eval] seed must be >= 0"),
    "eval-seed-huge": (sections(eval={**EVAL, "seed": 2 ** 40}), "[eval] seed must be <= 4294967295"),
    "eval-limit-zero": (sections(eval={**EVAL, "limit": 0}), "[eval] limit must be >= 1"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_hostile_spec_is_refused_in_one_line_before_the_study_is_made(case, tmp_path):
    spec, words = CASES[case]
    text = spec if isinstance(spec, str) else toml(spec)
    out = tmp_path / "study"
    r = study_run(tmp_path, text, "--out", str(out))
    assert_one_error_line(r, 1, ("spec.toml", *((words,) if isinstance(words, str) else words)))
    assert not out.exists()


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "..", ".", "a/b", "", "x" * 101])
def test_a_study_name_that_is_not_one_folder_name_is_refused(name, tmp_path, monkeypatch):
    """[study] name is the folder studies/NAME: a path or '..' would write outside studies/."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = study_run(tmp_path, toml(sections(study={"name": name})))
    assert_one_error_line(r, 1, ("spec.toml", "[study] name must be one folder name"))
    assert snapshot(tmp_path) == {"spec.toml": (tmp_path / "spec.toml").read_bytes(), "work": None}


def test_a_spec_file_named_dot_dot_toml_needs_a_study_name_or_out(tmp_path, monkeypatch):
    """Without [study] name the study is named by the file's stem: '...toml' would be '..'."""
    monkeypatch.chdir(tmp_path)
    r = study_run(tmp_path, toml(sections()), "--dry-run", "--no-measure", name="...toml")
    assert_one_error_line(r, 1, "the study's name (the spec's file name; give [study] name or --out)")


def test_a_dry_run_of_a_10000_cell_grid_with_a_surrogate_plans_in_linear_time(tmp_path):
    """surrogate_of looked each cell's surrogate up among all cells: 10,000 cells took hours."""
    grid = {"method": ["standard", "dynamic"], "seed": list(range(50)), "lr": [(i + 1) / 1000 for i in range(100)]}
    text = toml(sections(grid=grid, eval={**EVAL, "surrogate": {"method": "standard"}}))
    r = study_run(tmp_path, text, "--out", str(tmp_path / "study"), "--dry-run", "--no-measure")
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 10_000 and "Traceback" not in r.stderr
    assert not (tmp_path / "study").exists()


def trained_study(tmp_path: Path, grid: dict) -> Path:
    """A study directory as `study run` leaves it with cell standard_seed-0 trained (its
    config.json is what marks a cell trained)."""
    out = tmp_path / "study"
    (out / "cells" / "standard_seed-0").mkdir(parents=True)
    (out / "cells" / "standard_seed-0" / "config.json").write_text("{}")
    (out / "study.toml").write_text(toml(sections(grid=grid)))
    return out


def test_a_grid_whose_keys_are_reordered_is_refused_where_cells_were_trained(tmp_path):
    """Cells are named in grid order: seed before method would rename, and retrain, every cell."""
    out = trained_study(tmp_path, GRID)
    before = snapshot(out)
    reordered = {"seed": [0, 1], "method": ["standard", "dynamic"]}
    r = study_run(tmp_path, toml({"train": TRAIN, "grid": reordered, "eval": EVAL}), "--out", str(out))
    assert_one_error_line(r, 1, ("study.toml", "named in its grid order (method, seed)",
                                 "[grid] gives seed, method"))
    assert snapshot(out) == before


def test_a_grid_in_its_order_with_a_value_added_keeps_its_cells_names(tmp_path):
    out = trained_study(tmp_path, GRID)
    grown = {"method": ["standard", "dynamic"], "seed": [0, 1, 2]}
    r = study_run(tmp_path, toml(sections(grid=grown)), "--out", str(out), "--dry-run", "--no-measure")
    assert r.exit_code == 0, r.stderr
    assert str(out / "cells" / "standard_seed-0") in r.stdout


@pytest.mark.parametrize("name", sorted(shipped()))
def test_the_shipped_specs_pass_the_schema(name):
    assert load_spec(spec_path(name)).cells()
