"""minidyn.studies.cost: a study's work in passes, predicted before it runs and counted after
(as benchmarks/count_passes.py counts it), and the --dry-run that prints it."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn import get_backend
from minidyn.cli.main import main
from minidyn.files.config import TrainConfig
from minidyn.data import load_dataset
from minidyn.evaluation.evaluate import evaluate_attacks
from minidyn.runs import train_run
from minidyn.studies.cost import (FORWARD, PARTS, TRAINING_PARTS, counted_passes, evaluation_work,
                                  equal_cost_steps, measure_rate, study_work, training_work)
from minidyn.studies.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
TINY_RUN = dict(backend="numpy", model="softmax", epochs=3, batch_size=16, limit=40, steps=2,
                eval_limit=12, eval_steps=2, final_eval_limit=10, lr_milestones=[3])


@pytest.mark.parametrize("options", [
    dict(method="standard", val_size=30),
    dict(method="standard"),                                   # monitor and final on the test set
    dict(method="curriculum", val_size=30, curriculum_epochs=2),  # 0, 1, 2 steps: exact
    dict(method="fgsm-pgd", val_size=30, fgsm_epochs=1, record_fosc=False),
    dict(method="standard", val_size=30, eval_limit="all", final_eval=False),
    dict(method="trades", val_size=30),                        # KL's clean forward, 2-pass SGD
    dict(method="mart", val_size=30),
    dict(method="gairat", val_size=30),
    dict(method="fgsm-rs", val_size=30),
], ids=["standard-val", "standard-test", "curriculum", "fgsm-pgd", "whole-validation", "trades", "mart",
        "gairat", "fgsm-rs"])
def test_predicted_training_passes_are_the_counted_ones(tmp_path, options):
    """Without early stopping the prediction from the config is exactly what the finished run
    did, part by part, as benchmarks/count_passes.py counts it."""
    cfg = TrainConfig(**{**TINY_RUN, **options}).resolved()
    train_run(cfg, tmp_path / "run")
    counted = counted_passes(tmp_path / "run")
    predicted = training_work(cfg)
    assert not predicted.bounds
    for part in TRAINING_PARTS:
        assert predicted.parts[part] == pytest.approx(counted[part], rel=1e-12, abs=1e-9), part
    assert predicted.total == pytest.approx(counted["total"], rel=1e-12)
    assert counted["attack"] > 0


def test_dynamic_is_at_most_the_prediction(tmp_path):
    cfg = TrainConfig(**TINY_RUN, method="dynamic", val_size=30, c_max=5.0).resolved()
    train_run(cfg, tmp_path / "run")
    counted, predicted = counted_passes(tmp_path / "run"), training_work(cfg)
    assert predicted.bounds == {"attack"}
    assert 0 < counted["attack"] < predicted.parts["attack"]  # c_max 5: examples do stop
    for part in ("sgd", "monitor", "final"):
        assert predicted.parts[part] == pytest.approx(counted[part], rel=1e-12)


def test_fat_is_at_most_the_prediction(tmp_path):
    cfg = TrainConfig(**TINY_RUN, method="fat", val_size=30, tau=0).resolved()
    train_run(cfg, tmp_path / "run")
    counted, predicted = counted_passes(tmp_path / "run"), training_work(cfg)
    assert predicted.bounds == {"attack"}
    assert 0 < counted["attack"] <= predicted.parts["attack"]
    for part in ("sgd", "monitor", "final"):
        assert predicted.parts[part] == pytest.approx(counted[part], rel=1e-12)


def test_the_script_prints_what_the_library_counts(tmp_path):
    cfg = TrainConfig(**TINY_RUN, method="standard").resolved()
    train_run(cfg, tmp_path / "run")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "count_passes.py"), str(tmp_path / "run")],
                         capture_output=True, text=True, check=True).stdout
    p = counted_passes(tmp_path / "run")
    parts = ", ".join(f"{k} {p[k] / 1e6:.3f} M" for k in ("attack", "sgd", "monitor", "final"))
    assert out.startswith(f"{tmp_path / 'run'}: {p['total'] / 1e6:.3f} M image forward+backward passes ({parts}); "
                          f"3 epochs on 40 training examples, ")


def test_the_script_refuses_a_folder_that_is_no_run_or_an_unfinished_one_in_one_line(tmp_path):
    for args in (["--help"], [str(tmp_path)], ["--equal-cost", str(tmp_path)]):
        run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "count_passes.py"), *args],
                             capture_output=True, text=True)
        if args == ["--help"]:
            assert run.returncode == 0 and run.stdout.startswith("usage: count_passes.py")
        else:
            assert run.returncode == 1 and run.stderr == f"error: {tmp_path} is not a run directory (no config.json and metrics.jsonl)\n"
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "count_passes.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr == f"error: {tmp_path} has not finished (no summary.json); count it when its training is done\n"
    (tmp_path / "summary.json").write_text("not json")
    for args in ([str(tmp_path)], ["--equal-cost", str(tmp_path)]):
        run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "count_passes.py"), *args],
                             capture_output=True, text=True)
        assert run.returncode == 1 and run.stderr.startswith(f"error: {tmp_path} is not a run directory minidyn wrote")
        assert "Traceback" not in run.stderr


class PassCounter:
    """Counts the passes a backend spends: a gradient is 1 per example, a forward 1/3."""

    def __init__(self, backend, monkeypatch):
        self.passes = 0.0
        grad, logits = backend.loss_and_grad, backend.logits

        def counted_grad(model, x, y, loss="ce"):
            self.passes += int(x.shape[0])
            return grad(model, x, y, loss)

        def counted_logits(model, x):
            self.passes += int(x.shape[0]) * FORWARD
            return logits(model, x)

        monkeypatch.setattr(backend, "loss_and_grad", counted_grad)
        monkeypatch.setattr(backend, "logits", counted_logits)


@pytest.mark.parametrize("attacks, restarts, exact", [
    (["clean", "fgsm", "pgd10", "cw"], 1, True),
    (["clean", "pgd10"], 3, False),       # restarts attack only the survivors
    (["apgd-ce"], 1, False),              # stops at a misclassified point
])
def test_evaluation_passes_are_counted_as_the_evaluation_spends_them(monkeypatch, attacks, restarts, exact):
    backend = get_backend("numpy")
    model = backend.make_model("softmax", (1, 28, 28), 10, seed=0)
    data = load_dataset("mnist-sample", "test").subset(70)
    counter = PassCounter(backend, monkeypatch)
    evaluate_attacks(backend, model, data, eps=0.1, attacks=attacks, batch_size=32, restarts=restarts,
                     limit=60, apgd_steps=5)
    predicted, bound = evaluation_work(attacks, 60, restarts, 5, transfer=False)
    assert bound == (not exact)
    if exact:
        assert counter.passes == pytest.approx(predicted, rel=1e-12)
    else:
        assert 0 < counter.passes <= predicted


def test_a_study_cell_adds_its_evaluation_and_black_box_work(tiny_spec):
    text = tiny_spec.read_text().replace('limit = 40\n', 'limit = 40\nsurrogate = {method = "standard"}\n'
                                         'eps = [0.1, 0.2]\nrestarts = 2\n')
    tiny_spec.write_text(text)
    spec = load_spec(tiny_spec)
    work = study_work(spec)
    assert list(work) == [c.name for c in spec.cells()]
    standard, dynamic = work["standard_seed-0"], work["dynamic_seed-0"]
    one_eval, _ = evaluation_work(["clean", "fgsm", "pgd10"], 40, 2, 100, transfer=False)
    assert standard.parts["eval"] == pytest.approx(one_eval * 2 * 2)  # checkpoints last, best x 2 eps
    assert standard.parts["blackbox"] == pytest.approx(one_eval * 2)  # at the training eps
    assert dynamic.bounds == {"attack", "eval", "blackbox"} and "attack" not in standard.bounds
    assert standard.parts["attack"] == dynamic.parts["attack"] == 2 * 150 * (2 + 1)  # 2 epochs, K + 1


def _stderr_numbers(text: str) -> dict:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"# (\S+(?: \(\d+ cells\))?)\s+((?:<=)?[\d.]+(?:\s+(?:<=)?[\d.]+)*)", line)
        if m and not line.startswith("# cell"):
            rows[m.group(1)] = [float(v.replace("<=", "")) for v in m.group(2).split()]
    return rows


def test_dry_run_prints_the_work_after_the_commands(tiny_spec, tmp_path):
    """stdout stays the train commands; stderr has a row of millions of passes per cell and the
    total, the bound marked, and the measured rate with a wall time."""
    result = CliRunner().invoke(main, ["study", "run", str(tiny_spec), "--dry-run", "--out", str(tmp_path / "s")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert all(line.startswith("minidyn train") for line in result.stdout.splitlines())
    err = result.stderr
    work = study_work(load_spec(tiny_spec))
    rows = _stderr_numbers(err)
    for name, w in work.items():
        parts = [p for p in PARTS if any(v.parts.get(p) for v in work.values())]
        expected = [w.parts.get(p, 0.0) / 1e6 for p in parts] + [w.total / 1e6]
        assert rows[name][:len(expected)] == pytest.approx(expected, abs=5e-4), name
    assert rows[f"total ({len(work)} cells)"][len(parts)] == pytest.approx(sum(w.total for w in work.values()) / 1e6,
                                                                          abs=5e-4)
    assert re.search(r"dynamic_seed-0\s+<=", err) and re.search(r"standard_seed-0\s+\d", err)
    assert re.search(r"Measured here: numpy softmax on mnist-sample \(device auto\), batch 50: [\d,]+ passes/s", err)
    assert "Wall time at that rate: at most about" in err
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    quiet = CliRunner().invoke(main, ["study", "run", str(tiny_spec), "--dry-run", "--no-measure",
                                      "--out", str(tmp_path / "s")], catch_exceptions=False)
    assert quiet.stdout == result.stdout
    assert "Measured" not in quiet.stderr and "not estimated (--no-measure)" in quiet.stderr


def test_a_backend_that_cannot_run_here_is_said_not_measured(tiny_spec, tmp_path):
    tiny_spec.write_text(tiny_spec.read_text().replace('backend = "numpy"', 'backend = "torch"\ndevice = "cuda:7"')
                         .replace('model = "softmax"', 'model = "mlp"'))
    pytest.importorskip("torch")
    result = CliRunner().invoke(main, ["study", "run", str(tiny_spec), "--dry-run", "--out", str(tmp_path / "s")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Not measured here: torch mlp on mnist-sample (device cuda:7), batch 50:" in result.stderr
    assert "Wall time" not in result.stderr


def test_the_measured_rate_is_passes_per_second_of_training_steps(monkeypatch):
    cfg = TrainConfig(backend="numpy", model="softmax", batch_size=8).resolved()
    backend = get_backend("numpy")
    counter = PassCounter(backend, monkeypatch)
    monkeypatch.setattr("minidyn.runs.loop.backend_from_config", lambda cfg: backend)
    rate = measure_rate(cfg, seconds=0.05)
    assert rate > 0 and np.isfinite(rate)
    assert counter.passes >= 4 * 8  # the warm-up and at least three timed steps' gradients


def test_every_attack_of_the_table_has_a_cost_and_the_query_attacks_are_bounds():
    """A row added to the attack table must be costed (a dry run must not fail on it); APGD-T's
    nine targets and Square's forward-only queries are upper bounds (both stop early)."""
    from minidyn.evaluation.attack_table import APGD_T_TARGETS, TABLE
    from minidyn.square import N_QUERIES
    from minidyn.studies.cost import FORWARD, attack_passes

    for attack in TABLE:
        passes, bound = attack_passes(attack.name, 100, transfer=False)
        assert passes >= 0 and isinstance(bound, bool), attack.name
    # APGD-T reads each iterate's verdict from the logits of its gradient's pass: no forward more
    assert attack_passes("apgd-t", 100, False) == (APGD_T_TARGETS * 101, True)
    assert attack_passes("fab-t", 100, False)[1] and attack_passes("autoattack", 100, False)[1]
    assert attack_passes("square", 100, False) == ((N_QUERIES + 1) * FORWARD, True)
    # Fig. 2a's PGD-20 at eps/2 and eps/8 cost what PGD-20 at eps/4 does: 20 gradients, exact
    for name in ("pgd20", "pgd20-eps-over-2", "pgd20-eps-over-8"):
        assert attack_passes(name, 100, False) == (20, False)


def test_the_equal_cost_standard_of_a_standard_run_is_itself(tmp_path):
    """K of the equal-cost Standard: Standard's own K for a Standard run (with or without the
    FOSC record), fewer steps for a Dynamic run whose examples stop early."""
    for record in (True, False):
        cfg = TrainConfig(**{**TINY_RUN, "steps": 3}, method="standard", record_fosc=record).resolved()
        train_run(cfg, tmp_path / f"std-{record}")
        assert equal_cost_steps(tmp_path / f"std-{record}") == 3
    cfg = TrainConfig(**{**TINY_RUN, "steps": 6}, method="dynamic", c_max=5.0).resolved()
    train_run(cfg, tmp_path / "dyn")
    counted = counted_passes(tmp_path / "dyn")
    k = equal_cost_steps(tmp_path / "dyn")
    assert 1 <= k < 6
    assert abs((k + 1) * counted["train_examples"] * counted["epochs"] - counted["attack"]) \
        <= counted["train_examples"] * counted["epochs"] / 2  # the nearest K
