"""Hostile options and output paths: refused in one line, before any work, nothing changed.

As in test_hostile_inputs.py: `minidyn` runs in-process (a traceback fails the test), exits 2 for a
usage error (click's two-line hint may come with it) or 1, prints one `Error:` line with the
expected words, leaves the pre-existing finished run exactly as it was and creates no new run
directory. Every numeric option is a finite number in its range (cli/params.py Number); outputs
are checked before the work (--out, eval --save); an OSError no check found is still one line.
"""
import errno
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from minidyn.cli.main import main

from .helpers import Ctx, assert_one_error_line, snapshot, tiny_args


@dataclass
class Case:
    id: str
    args: Callable[[Ctx], list]
    message: str | tuple
    exit: int = 2
    run: str = "numpy"
    setup: Callable[[Ctx], None] | None = None
    seconds: float | None = None  # refused within this time (a hang once)


def on_run(*extra, backend="numpy"):
    """`train` continuing the pre-existing run with `extra` options."""
    return lambda c: tiny_args(c.tiny, backend) + list(extra) + ["--out", c.run, "--resume"]


def fresh(*extra, backend="numpy"):
    """`train` into a new run directory, which must not be created."""
    return lambda c: tiny_args(c.tiny, backend) + list(extra) + ["--out", c.fresh]


def command(name, *extra):
    """eval, compare or analyze on the pre-existing run."""
    return lambda c: [name, c.run, *extra]


def summary_is_a_directory(c: Ctx) -> None:
    (c.run / "summary.json").unlink()
    (c.run / "summary.json").mkdir()


CASES = [
    # --- train: every numeric option a finite number in range -------------------------------------
    Case("eps-overflow", on_run("--eps", "0.3e400"), ("--eps", "not a finite number")),
    Case("eps-huge-exponent", on_run("--eps", "1e999999999"), ("--eps", "not a finite number"), seconds=10),
    Case("eps-tiny-exponent", on_run("--eps", "1e-99999999"), ("--eps", "eps must be in (0, 1]"), seconds=10),
    Case("eps-huge-fraction", on_run("--eps", "1" * 5000 + "/3"), ("--eps", "5002 characters", "too long")),
    Case("eps-inf", on_run("--eps", "inf"), ("--eps", "not a finite number")),
    Case("eps-nan", on_run("--eps", "nan"), ("--eps", "not a finite number")),
    Case("c-max-inf", fresh("--c-max", "inf"), ("--c-max", "c_max must be a finite number >= 0, got inf")),
    Case("c-max-nan", fresh("--c-max", "nan"), ("--c-max", "finite number")),
    Case("step-size-inf", fresh("--step-size", "inf"), ("--step-size", "finite number > 0, got inf")),
    Case("step-size-nan", on_run("--step-size", "nan"), ("--step-size", "finite number")),
    Case("lr-inf", fresh("--lr", "inf"), ("--lr", "learning rate must be a finite number > 0, got inf")),
    Case("lr-overflow", fresh("--lr", "1e999"), ("--lr", "finite number")),
    Case("seed-negative-torch", fresh("--seed", "-1", backend="torch"), ("--seed", "seed must be >= 0, got -1"),
         run="torch"),
    Case("seed-negative", fresh("--seed", "-1"), ("--seed", ">= 0")),
    Case("seed-beyond-32-bits", fresh("--seed", str(2 ** 32)), ("--seed", "<= 4294967295")),
    Case("epochs-absurd", fresh("--epochs", "1000000000"), ("--epochs", "epochs must be <= 100000")),
    Case("epochs-not-an-integer", on_run("--epochs", "1e3"), ("--epochs", "'1e3' is not an integer")),
    Case("steps-absurd", on_run("--steps", str(10 ** 30)), ("--steps", "<= 100000")),
    Case("batch-size-absurd", on_run("--batch-size", str(2 ** 40)), ("--batch-size", "<= 1048576")),
    Case("train-eval-limit-zero", on_run("--eval-limit", "0"), ("--eval-limit", ">= 1")),
    Case("fgsm-epochs-negative", on_run("--fgsm-epochs", "-1"), ("--fgsm-epochs", ">= 0")),
    Case("option-text-huge", on_run("--steps", "9" * 100000), ("--steps", "100000 characters", "too long")),
    # --- eval, compare, analyze ----------------------------------------------------------------------
    Case("eval-eps-overflow", command("eval", "--eps", "0.3e400"), ("--eps", "not a finite number")),
    Case("eval-limit-zero", command("eval", "--limit", "0"), ("--limit", ">= 1")),
    Case("eval-restarts-zero", command("eval", "--restarts", "0"), ("--restarts", ">= 1")),
    Case("eval-restarts-absurd", command("eval", "--restarts", "1000000000"), ("--restarts", "<= 1000")),
    Case("eval-seed-negative", command("eval", "--seed", "-1"), ("--seed", ">= 0")),
    Case("eval-batch-size-zero", command("eval", "--batch-size", "0"), ("--batch-size", ">= 1")),
    Case("eval-apgd-steps-zero", command("eval", "--apgd-steps", "0"), ("--apgd-steps", ">= 1")),
    Case("compare-limit-zero", command("compare", "--limit", "0"), ("--limit", ">= 1")),
    Case("compare-seed-negative", command("compare", "--seed", "-1"), ("--seed", ">= 0")),
    Case("analyze-bins-absurd", command("analyze", "--bins", "1000000000"), ("--bins", "<= 10000")),
    Case("analyze-batch-size-zero", command("analyze", "--batch-size", "0"), ("--batch-size", ">= 1")),
    Case("analyze-fosc-range-inf", command("analyze", "--fosc-range", "0,inf"), ("--fosc-range", "finite")),
    Case("analyze-limit-zero", command("analyze", "--limit", "0"), ("--limit", ">= 1")),
    Case("analyze-seed-negative", command("analyze", "--seed", "-1"), ("--seed", ">= 0")),
    Case("analyze-eps-grid-overflow", command("analyze", "--eps-grid", "0.1,1e999"), ("--eps-grid", "finite")),
    # --- outputs, before the work --------------------------------------------------------------------
    Case("out-name-too-long", lambda c: tiny_args(c.tiny) + ["--out", c.fresh / ("a" * 300)],
         ("cannot create --out", "File name too long"), exit=1),
    Case("resume-summary-is-a-directory", on_run(), ("summary.json is a directory",), exit=1,
         setup=summary_is_a_directory),
    Case("eval-save-onto-a-directory", command("eval", "--save", "--attacks", "clean"),
         ("cannot write --save", "eval.json", "is a directory"), exit=1,
         setup=lambda c: (c.run / "eval.json").mkdir()),
]


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def ctx(tiny_mnist, finished_runs, tmp_path, request):
    case = request.param
    if case.run not in finished_runs:
        pytest.skip("torch is not installed")
    c = Ctx(tmp=tmp_path, tiny=tiny_mnist, run=tmp_path / "run", fresh=tmp_path / "fresh")
    shutil.copytree(finished_runs[case.run], c.run)
    if case.setup:
        case.setup(c)
    return c


@pytest.mark.parametrize("ctx, case", [(c, c) for c in CASES], ids=[c.id for c in CASES], indirect=["ctx"])
def test_bad_option_is_refused_in_one_line(ctx, case):
    before = snapshot(ctx.run)
    started = time.perf_counter()
    r = invoke(case.args(ctx))
    assert case.seconds is None or time.perf_counter() - started < case.seconds
    assert_one_error_line(r, case.exit, case.message)
    assert snapshot(ctx.run) == before, "the pre-existing run directory was changed"
    assert not ctx.fresh.exists()


def test_eval_save_to_a_read_only_directory_is_refused_before_evaluating(finished_runs, tmp_path, monkeypatch):
    """The file system is made read-only by mocking: the tests may run as root."""
    run = tmp_path / "run"
    shutil.copytree(finished_runs["numpy"], run)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (Path(p) != run or not mode & os.W_OK)
                        and real_access(p, mode, **kw))
    monkeypatch.setattr("minidyn.cli.params._read_only", lambda p: True)

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr("minidyn.files.fileio.atomic_write", read_only)
    evaluated = []
    monkeypatch.setattr("minidyn.evaluation.evaluate.evaluate_attacks",
                        lambda *a, **k: evaluated.append(1) or pytest.fail("evaluated before the check"))
    r = invoke(["eval", run, "--save", "--attacks", "clean"])
    assert_one_error_line(r, 1, ("cannot write to --save", "Read-only file system"))
    assert not evaluated


def test_an_os_error_no_check_found_is_one_line(finished_runs, tmp_path, monkeypatch):
    """The catch-all of last resort: a disk filling up while eval --save writes."""
    run = tmp_path / "run"
    shutil.copytree(finished_runs["numpy"], run)

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr("minidyn.files.fileio.atomic_write", disk_full)
    r = invoke(["eval", run, "--save", "--attacks", "clean", "--limit", "8"])
    assert_one_error_line(r, 1, f"Error: {run / 'eval.json'}: No space left on device")


def test_a_relative_data_dir_is_stored_absolute(tiny_mnist, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(tiny_mnist, work / "data")
    monkeypatch.chdir(work)
    args = [a if a != str(tiny_mnist) else "data" for a in tiny_args(tiny_mnist)]
    r = invoke(args + ["--epochs", "1", "--out", tmp_path / "run"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"]
    assert saved == str(work / "data")
    monkeypatch.chdir(tmp_path)  # eval finds the data from anywhere
    r = invoke(["eval", tmp_path / "run", "--attacks", "clean", "--limit", "8"])
    assert r.exit_code == 0, r.output
