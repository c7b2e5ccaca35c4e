"""train --val-size: the monitor attacks the held-out examples, and best-val keeps the epoch the metrics say."""
import json

import numpy as np
from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.data import load_dataset
from minidyn.data.validation import split_validation
from minidyn.evaluation.checkpoints import load_checkpoint
from minidyn.runs.monitor import monitor

ARGS = ["train", "--backend", "numpy", "--model", "softmax", "--epochs", "5", "--limit", "300",
        "--val-size", "100", "--eval-limit", "60", "--eval-steps", "3", "--steps", "2", "--eps", "0.1",
        "--lr", "0.5", "--lr-milestones", "4", "--batch-size", "50", "--seed", "4"]


def test_the_best_on_validation_checkpoint_is_the_epoch_the_metrics_say(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ARGS + ["--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("test_pgd_acc" not in r and r["val_clean_n"] == 100 and r["val_pgd_n"] == 60 for r in records)
    robust = [r["val_pgd_acc"] for r in records]
    assert len(set(robust)) > 1, robust  # the choice is not a tie
    best = int(np.argmax(robust))        # the first of the highest
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_val"]["epoch"] == best + 1 and summary["best_val"]["val_pgd_acc"] == robust[best]
    backend, model, meta = load_checkpoint(out / "best-val.npz")
    assert meta["epoch"] == best + 1
    # the weights in best-val.npz are that epoch's: its monitor result comes out again exactly
    _, val = split_validation(load_dataset("mnist-sample", "train"), 100, seed=4)
    again = monitor(backend, model, val, eps=0.1, steps=3, batch_size=50, seed=4, limit=60)
    assert (again["pgd_acc"], again["clean_acc"]) == (robust[best], records[best]["val_clean_acc"])
    assert f"best on validation: epoch {best + 1}" in result.output


def test_without_val_size_the_monitor_stays_on_the_test_set_and_no_best_is_kept(tmp_path):
    args = [a for a in ARGS]
    i = args.index("--val-size")
    del args[i:i + 2]
    out = tmp_path / "run"
    assert CliRunner().invoke(main, args + ["--out", str(out)], catch_exceptions=False).exit_code == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert "test_pgd_acc" in record and "val_pgd_acc" not in record
    assert not (out / "best-val.npz").exists()
    assert "best_val" not in json.loads((out / "summary.json").read_text())
