"""`minidyn train` through click's CliRunner, as a user runs it."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from minidyn import __version__
from minidyn.cli.main import main

TINY = ["--backend", "numpy", "--limit", "256", "--epochs", "2", "--batch-size", "64",
        "--eval-limit", "64", "--eval-steps", "2"]


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_train_writes_a_run_directory(tmp_path):
    out = tmp_path / "run"
    r = run("train", *TINY, "--method", "dynamic", "--out", str(out))
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in records] == [0, 1]
    required = {"epoch", "c_t", "lr", "train_loss", "train_acc", "fosc_mean", "pgd_steps_mean",
                "grad_evals", "test_clean_acc", "test_pgd_acc", "seconds"}
    assert required <= set(records[0])
    assert records[0]["c_t"] == 0.5 and records[1]["c_t"] < records[0]["c_t"]
    assert (out / "checkpoint.npz").exists() and (out / "fosc" / "epoch_001.npy").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "dynamic" and config["c_max_used"] == 0.5
    assert "clean" in r.output and "on 2000 examples, PGD-2" in r.output and "on all 2000" in r.output
    assert "test clean" in r.output and "(n=2000)  pgd2" in r.output  # each column says its n
    assert "epoch 1/" not in r.stderr  # no progress-bar label in a log without a terminal


def test_the_final_evaluation_has_its_own_size(tmp_path):
    out = tmp_path / "run"
    r = run("train", *TINY, "--epochs", "1", "--final-eval-limit", "40", "--out", str(out))
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["test_n"], summary["test_pgd_n"]) == (2000, 40)
    assert "PGD-2" in r.output and "on the first 40" in r.output
    assert json.loads((out / "config.json").read_text())["final_eval_limit"] == 40


def test_one_epoch_is_one_epoch(tmp_path):
    r = run("train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r"))
    first = r.output.splitlines()[0]
    assert ", 1 epoch " in first and "1 epochs" not in r.output


def test_a_budget_that_c_t_never_binds_is_warned_about(tmp_path):
    """At eps 8/255 on MNIST the FOSC after one step is far below the paper's c_max 0.5."""
    r = run("train", *TINY, "--epochs", "1", "--eps", "8/255", "--out", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    assert "warning: c_t 0.5 stopped" in r.output and "--c-max auto" in r.output
    quiet = run("train", *TINY, "--epochs", "1", "--out", str(tmp_path / "q"))
    assert "warning" not in quiet.output


def test_the_device_of_a_cpu_backend_is_not_ignored(tmp_path):
    r = run("train", *TINY, "--device", "cuda", "--out", str(tmp_path / "r"))
    assert r.exit_code == 1 and "--device cuda is for --backend torch" in r.stderr
    assert not (tmp_path / "r").exists()


def test_c_max_auto_is_estimated_from_fgsm(tmp_path):
    r = run("train", *TINY, "--epochs", "1", "--c-max", "auto", "--out", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    c_max = json.loads((tmp_path / "r" / "config.json").read_text())["c_max_used"]
    assert isinstance(c_max, float) and c_max > 0


def test_an_existing_run_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    r = run("train", *TINY, "--out", str(out))
    assert r.exit_code == 1 and "not empty" in r.output and "--resume" in r.output
    assert (out / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("args, message", [
    (["--eps", "8/0"], "division by zero"),
    (["--eps", "0"], "(0, 1]"),
    (["--eps", "1.5"], "(0, 1]"),
    (["--method", "magic"], "magic"),
    (["--c-max", "-1"], "c_max must be >= 0"),
    (["--lr-milestones", "a,b"], "comma-separated"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--step-size", "0"], "step size must be > 0"),
    (["--batch-size", "0"], "batch size must be >= 1"),
    (["--dynamic-epochs", "0"], "T'"),
    (["--eval-steps", "0"], "--eval-steps must be >= 1"),
    (["--curriculum-epochs", "0"], "--curriculum-epochs must be > 0"),
])
def test_bad_options_are_usage_errors(tmp_path, args, message):
    r = run("train", *TINY, *args, "--out", str(tmp_path / "r"))
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--lr-milestones", "0,2"], "epoch numbers >= 1"),
    (["--model", "cnn4"], "cnn4"),
    (["--dataset", "imagenet"], "imagenet"),
    (["--limit", "9000"], "9000"),
])
def test_bad_settings_give_one_line_errors(tmp_path, args, message):
    r = run("train", *TINY, *args, "--out", str(tmp_path / "r"))
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("Error:") and message in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_the_default_backend_is_torch_where_it_is_installed():
    from minidyn.files.config import TrainConfig, torch_installed
    cfg = TrainConfig(epochs=1).resolved()
    assert cfg.backend == ("torch" if torch_installed() else "numpy")
    assert cfg.model == ("cnn4" if cfg.backend == "torch" else "mlp")


def test_without_torch_the_default_backend_is_numpy_and_says_so(tmp_path):
    args = [a for a in TINY if a not in ("--backend", "numpy")]
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from click.testing import CliRunner\n"
        "from minidyn.cli.main import main\n"
        f"r = CliRunner().invoke(main, {['train', *args, '--epochs', '1', '--out', str(tmp_path / 'r')]!r})\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.output.splitlines()[0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "with the numpy backend" in proc.stdout and "torch is not installed" in proc.stdout
    assert json.loads((tmp_path / "r" / "config.json").read_text())["backend"] == "numpy"


def test_numpy_training_works_without_torch(tmp_path):
    """`import minidyn` and a NumPy run must not need torch: block its import and train."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from click.testing import CliRunner\n"
        "from minidyn.cli.main import main\n"
        f"r = CliRunner().invoke(main, {['train', *TINY, '--epochs', '1', '--out', str(tmp_path / 'r')]!r})\n"
        "assert r.exit_code == 0, r.output\n"
        "assert sys.modules['torch'] is None\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_without_epochs_the_quickstart_budget_is_trained(tmp_path):
    """README: no --epochs means 10 epochs, lr /10 at epochs 7 and 10, monitor on 200 examples;
    --epochs E brings the paper's fractions of E back."""
    small = ["--backend", "numpy", "--limit", "64", "--batch-size", "64", "--eval-steps", "1",
             "--final-eval-limit", "8"]
    r = run("train", *small, "--out", str(tmp_path / "q"))
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    assert (cfg["epochs"], cfg["lr_milestones"], cfg["eval_limit"]) == (10, [7, 10], 200)
    r = run("train", *small, "--epochs", "5", "--out", str(tmp_path / "e"))
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    assert (cfg["epochs"], cfg["lr_milestones"], cfg["eval_limit"]) == (5, [2, 4], 500)
