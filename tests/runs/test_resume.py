"""Crash-safe checkpoints and exact resume (docs/reliability.md).

The in-process tests crash a run (an exception where a SIGKILL could land) at every checkpoint
of a small NumPy run, resume it, and compare everything it wrote with an uninterrupted run. The
subprocess tests at the end do it for real: `minidyn train` on torch, killed with SIGKILL, then
`minidyn train ... --resume`, weights compared with torch.equal.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.files.config import TrainConfig
from minidyn.runs.reporter import Notes
from minidyn.runs import backend_from_config, train_run


class Crash(Exception):
    """Stands for the process dying at that point."""


def small_config(data_dir, **changes) -> TrainConfig:
    # 96 examples in batches of 32: 3 SGD steps per epoch; 3 epochs so that c_t and lr change
    values = dict(backend="numpy", model="softmax", dataset="mnist", data_dir=str(data_dir), epochs=3,
                  batch_size=32, steps=2, eval_limit=16, eval_steps=1)
    return TrainConfig(**{**values, **changes})


def run_files(run: Path) -> dict:
    """Everything a run wrote, comparable: metrics without their "seconds", the checkpoint's
    arrays and meta, other files as bytes."""
    files = {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        name = str(path.relative_to(run))
        if name == "metrics.jsonl":
            records = [json.loads(line) for line in path.read_text().splitlines()]
            files[name] = [{k: v for k, v in r.items() if k != "seconds"} for r in records]
        elif name == "checkpoint.npz":
            with np.load(path, allow_pickle=False) as f:
                files[name] = {k: f[k].tobytes() + str(f[k].dtype).encode() for k in f.files}
        else:
            files[name] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def reference(tiny_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    train_run(small_config(tiny_mnist), out)
    return run_files(out)


def crash_at_checkpoint(monkeypatch, cfg, number, when):
    """Make the `number`-th checkpoint write raise Crash, `when` "before" or "after" it."""
    backend = backend_from_config(cfg.resolved())
    real, calls = backend.save_checkpoint, []

    def save(*args, **kwargs):
        calls.append(1)
        if len(calls) == number and when == "before":
            raise Crash
        real(*args, **kwargs)
        if len(calls) == number and when == "after":
            raise Crash

    monkeypatch.setattr(backend, "save_checkpoint", save)


# 3 epochs x 3 steps with a checkpoint every 2 steps: mid-epoch ones after steps 2, 4, 8 and
# one after each epoch (steps 3, 6, 9; step 6's mid-epoch one is the epoch's own): 6 writes
@pytest.mark.parametrize("number", range(1, 7))
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_at_any_checkpoint_resumes_exactly(tiny_mnist, tmp_path, monkeypatch, reference,
                                                   number, when):
    cfg, out = small_config(tiny_mnist), tmp_path / "run"
    crash_at_checkpoint(monkeypatch, cfg, number, when)
    with pytest.raises(Crash):
        train_run(cfg, out, checkpoint_every=2)
    monkeypatch.undo()
    (out / ".checkpoint.npz.minidyn-x1y2z3ab.tmp").write_bytes(b"torn")  # a write that SIGKILL cut short
    notes = Notes()
    train_run(cfg, out, resume=True, checkpoint_every=2, reporter=notes)
    assert notes.lines[0].startswith("resuming") or "all 3 epochs were trained" in notes.lines[0]
    assert run_files(out) == reference  # weights, momentum, metrics, FOSC files, summary


def test_a_crash_between_the_metrics_and_the_checkpoint_resumes_exactly(tiny_mnist, tmp_path,
                                                                        monkeypatch, reference):
    """Epoch 1's metrics line and FOSC file are written, its checkpoint is not: the line goes."""
    from minidyn.runs import RunDir

    cfg, out = small_config(tiny_mnist), tmp_path / "run"
    real_log = RunDir.log

    def log(self, record):
        real_log(self, record)
        if record["epoch"] == 1:
            raise Crash

    monkeypatch.setattr(RunDir, "log", log)
    with pytest.raises(Crash):
        train_run(cfg, out)
    monkeypatch.undo()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    train_run(cfg, out, resume=True)
    assert run_files(out) == reference


def test_resume_after_the_end_only_evaluates_again(tiny_mnist, tmp_path, reference):
    cfg, out = small_config(tiny_mnist), tmp_path / "run"
    train_run(cfg, out)
    (out / "summary.json").unlink()  # killed during the final evaluation
    notes = Notes()
    train_run(cfg, out, resume=True, reporter=notes)
    assert "all 3 epochs were trained" in notes.lines[0]
    assert run_files(out) == reference


def test_resume_before_anything_was_saved_starts_the_run(tiny_mnist, tmp_path, reference):
    """Killed before config.json was written: the directory holds an empty fosc/ at most."""
    cfg, out = small_config(tiny_mnist), tmp_path / "run"
    (out / "fosc").mkdir(parents=True)
    (out / ".config.json.minidyn-abc_1234.tmp").write_text("{")
    notes = Notes()
    train_run(cfg, out, resume=True, reporter=notes)
    assert "starting the run from the beginning" in notes.lines[0]
    assert run_files(out) == reference
    # and with no directory at all (killed while still importing)
    train_run(cfg, tmp_path / "never-made", resume=True)
    assert run_files(tmp_path / "never-made") == reference


def test_checkpoint_every_does_not_change_the_result(tiny_mnist, tmp_path, reference):
    train_run(small_config(tiny_mnist), tmp_path / "run", checkpoint_every=1)
    assert run_files(tmp_path / "run") == reference


# --- the CLI's refusals ---------------------------------------------------------------------------
def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tiny_args(data_dir):
    return ["--backend", "numpy", "--model", "softmax", "--dataset", "mnist", "--data-dir", data_dir,
            "--epochs", "3", "--batch-size", "32", "--steps", "2", "--eval-limit", "16",
            "--eval-steps", "1"]


def test_resume_with_a_different_config_is_refused_naming_the_options(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    assert cli("train", *tiny_args(tiny_mnist), "--out", out).exit_code == 0
    before = run_files(out)
    r = cli("train", *tiny_args(tiny_mnist), "--eps", "0.2", "--lr", "0.05", "--out", out, "--resume")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: --resume with options that differ")
    assert "eps (0.3 saved, 0.2 now)" in r.stderr and "lr (0.01 saved, 0.05 now)" in r.stderr
    assert "seed" not in r.stderr
    assert run_files(out) == before
    # where the data lives may change between a run and its resumption
    moved = tmp_path / "moved-data"
    moved.symlink_to(tiny_mnist, target_is_directory=True)
    args = [a if a != tiny_mnist else moved for a in tiny_args(tiny_mnist)]
    assert cli("train", *args, "--out", out, "--resume").exit_code == 0


def test_an_existing_run_is_never_overwritten_without_resume(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    assert cli("train", *tiny_args(tiny_mnist), "--out", out).exit_code == 0
    before = run_files(out)
    for extra in ([], ["--seed", "1"], ["--epochs", "1"]):
        r = cli("train", *tiny_args(tiny_mnist), *extra, "--out", out)
        assert r.exit_code == 1 and "not empty" in r.stderr and "--resume" in r.stderr
        assert run_files(out) == before


# --- numerical faults -----------------------------------------------------------------------------
def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_mnist, tmp_path, monkeypatch):
    """The loss turns NaN in epoch 2 (its second step): exit 3, one line, checkpoint of epoch 1."""
    cfg = small_config(tiny_mnist).resolved()
    backend = backend_from_config(cfg)
    out, real_step, calls, saved = tmp_path / "run", backend.train_step, [], {}

    def train_step(*args, **kwargs):
        calls.append(1)
        loss, correct = real_step(*args, **kwargs)
        if len(calls) == 3 + 2:
            saved["checkpoint"] = run_files(out)["checkpoint.npz"]
            return float("nan"), correct
        return loss, correct

    monkeypatch.setattr(backend, "train_step", train_step)
    r = cli("train", *tiny_args(tiny_mnist), "--out", out)
    assert r.exit_code == 3
    assert r.stderr.splitlines()[-1] == ("Error: training loss became nan at epoch 2, batch 2; "
                                         "lower --lr (the last good checkpoint is kept)")
    assert sum(line.startswith("Error") for line in r.stderr.splitlines()) == 1
    assert "Traceback" not in r.output + r.stderr
    assert run_files(out)["checkpoint.npz"] == saved["checkpoint"]  # untouched since the NaN
    assert json.loads(np.load(out / "checkpoint.npz")["meta"].item())["epoch"] == 1
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0]


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_a_huge_learning_rate_diverges_cleanly(tiny_mnist, tmp_path, name):
    """A real divergence, with a checkpoint after every step: whatever is on disk is finite."""
    if name == "torch":
        pytest.importorskip("torch")
    out = tmp_path / "run"  # an MLP: a linear model's weights grow only linearly in the lr
    args = [{"numpy": name, "softmax": "mlp"}.get(a, a) for a in tiny_args(tiny_mnist)]
    r = cli("train", *args, "--lr", "1e12", "--checkpoint-every", "1", "--out", out)
    assert r.exit_code == 3, r.output
    last = r.stderr.splitlines()[-1]
    assert last.startswith("Error: ") and ("nan" in last or "inf" in last or "NaN" in last)
    assert "RuntimeWarning" not in r.stderr and "Traceback" not in r.stderr
    cfg = small_config(tiny_mnist, backend=name, lr=1e12).resolved()
    backend = backend_from_config(cfg)
    model = backend.make_model("mlp", (1, 28, 28), 10, seed=0)
    ckpt = out / ("checkpoint.pt" if name == "torch" else "checkpoint.npz")
    if ckpt.exists():
        backend.load_checkpoint(str(ckpt), model)
        assert all(np.isfinite(v).all() for v in backend.get_params(model).values())


# --- the real thing: SIGKILL a `minidyn train` process, resume it ---------------------------------
KILL_SEED = int(os.environ.get("MINIDYN_KILL_SEED", "2019"))
# one thread each: the runs compare bit for bit (same thread count everywhere) and the test
# machine's 2 cores are shared
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def torch_args(data_dir):
    # cnn4 (convolutions, BatchNorm) on 96 digits: 6 SGD steps per epoch, 3 epochs
    return ["train", "--backend", "torch", "--device", "cpu", "--model", "cnn4", "--dataset", "mnist",
            "--data-dir", str(data_dir), "--epochs", "3", "--batch-size", "16", "--steps", "2",
            "--eval-limit", "16", "--eval-steps", "1"]


def launch(args, out, log, *extra):
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "minidyn.cli.main", *args, "--out", str(out), *extra],
                                env=ENV, stdout=f, stderr=subprocess.STDOUT)


def finish(args, out, log, *extra):
    proc = launch(args, out, log, *extra)
    assert proc.wait(timeout=300) == 0, Path(log).read_text()


@pytest.fixture(scope="module")
def torch_reference(tiny_mnist, tmp_path_factory):
    """The uninterrupted run, and when (seconds after launch) it started and ended training."""
    pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("torch-reference")
    out, t0 = base / "run", time.monotonic()
    proc = launch(torch_args(tiny_mnist), out, base / "log")
    started = None
    while proc.poll() is None:
        if started is None and (out / "config.json").exists():
            started = time.monotonic() - t0
        time.sleep(0.01)
    assert proc.returncode == 0, (base / "log").read_text()
    return out, started or 0.0, time.monotonic() - t0


def checkpoint_meta(path):
    import torch

    return torch.load(path, weights_only=True)["meta"]


def assert_same_run(a: Path, b: Path):
    import torch

    ca, cb = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (a, b))
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    for i, state in ca["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], cb["optimizer"]["state"][i]["momentum_buffer"])
    assert ca["meta"] == cb["meta"]
    fa, fb = run_files(a), run_files(b)
    fa.pop("checkpoint.pt"), fb.pop("checkpoint.pt")
    assert fa == fb  # metrics.jsonl except "seconds", fosc/epoch_*.npy, config.json, summary.json


def kill_mid_epoch(proc, checkpoint: Path, target: int, steps_per_epoch: int):
    """Once `checkpoint` is a mid-epoch one at or past SGD step `target`, SIGKILL the process.

    The process is stopped (SIGSTOP) while its checkpoint is read, so nothing changes on disk
    between looking and killing. Returns (epoch, batches) of the checkpoint it was killed at.
    """
    while proc.poll() is None:
        time.sleep(0.01)
        if not checkpoint.exists():
            continue
        proc.send_signal(signal.SIGSTOP)
        meta = checkpoint_meta(checkpoint)
        step = meta["epoch"] * steps_per_epoch + meta.get("progress", {}).get("batches", 0)
        if "progress" in meta and step >= target:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return meta["epoch"], meta["progress"]["batches"]
        proc.send_signal(signal.SIGCONT)
    raise AssertionError(f"the run ended before it reached a mid-epoch checkpoint at step {target}")


def kill_after(proc, delay: float) -> bool:
    """SIGKILL the process `delay` seconds after now unless it ends first; True if killed."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tiny_mnist, tmp_path, torch_reference):
    """A run killed twice and resumed twice ends bit-identical to the uninterrupted one.

    1. a fresh run checkpointing every step is killed inside an epoch (at a random step);
    2. its resumption is killed at a random moment (anywhere: training, evaluation, a
       checkpoint being written, the final evaluation, or still starting up);
    3. the second resumption runs to the end.
    """
    ref, started, total = torch_reference
    rng = random.Random(KILL_SEED)
    steps_per_epoch = 96 // 16
    target = rng.choice([s for s in range(1, 2 * steps_per_epoch) if s % steps_per_epoch])
    delay = started + rng.uniform(0, 0.7) * (total - started)
    args, out, log = torch_args(tiny_mnist), tmp_path / "run", tmp_path / "log"

    epoch, batches = kill_mid_epoch(launch(args, out, log, "--checkpoint-every", "1"),
                                    out / "checkpoint.pt", target, steps_per_epoch)
    killed = kill_after(launch(args, out, log, "--resume", "--checkpoint-every", "1"), delay)
    print(f"MINIDYN_KILL_SEED={KILL_SEED}: killed at epoch {epoch} after batch {batches}, "
          f"then {'killed' if killed else 'not killed (it had ended)'} {delay:.2f}s after resuming")
    finish(args, out, log, "--resume")
    # whichever process resumed first (the second, unless killed before it got that far) went
    # on inside the epoch where the first was killed
    first = next(line for line in log.read_text().splitlines() if line.startswith("resuming"))
    assert first == f"resuming {out} at epoch {epoch + 1}, batch {batches + 1}"
    assert_same_run(ref, out)
