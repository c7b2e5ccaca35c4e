"""best-val is committed with its epoch: a crash between writing it and the epoch's commit
point, then a resume that does not repeat the epoch exactly, leaves best-val at the epoch the
metrics call best."""
import json

from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.evaluation.checkpoints import load_checkpoint
from minidyn.runs import loop
from minidyn.runs.rundir import RunDir

ARGS = ["train", "--backend", "numpy", "--model", "softmax", "--epochs", "3", "--limit", "150",
        "--val-size", "60", "--eval-limit", "20", "--eval-steps", "2", "--steps", "2", "--eps", "0.1",
        "--lr", "0.5", "--batch-size", "50", "--seed", "4", "--no-final-eval"]


def scripted_monitor(monkeypatch, robust):
    """The per-epoch monitor's validation PGD accuracy, epoch by epoch, as `robust` says (a
    resume on another device, or non-deterministic kernels, need not repeat an epoch exactly)."""
    real, epoch = loop.monitor, iter(robust)

    def monitor(*args, **kwargs):
        return {**real(*args, **kwargs), "pgd_acc": next(epoch)}
    monkeypatch.setattr(loop, "monitor", monitor)


class Crash(Exception):
    pass


def crash_before_logging(monkeypatch, epoch):
    """RunDir.log raises Crash when it is about to write epoch `epoch`'s metrics line."""
    real = RunDir.log

    def crashing(self, record):
        if record["epoch"] + 1 == epoch:
            raise Crash
        real(self, record)
    monkeypatch.setattr(RunDir, "log", crashing)


def best_epochs(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    said = max(records, key=lambda r: (r["val_pgd_acc"], -r["epoch"]))["epoch"] + 1
    return said, load_checkpoint(out / "best-val.npz")[2]["epoch"]


def test_a_best_written_before_a_crash_that_lost_its_epoch_is_not_kept(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        scripted_monitor(m, [50.0, 70.0])          # epoch 2 is the best so far
        crash_before_logging(m, 2)                 # killed before epoch 2's metrics line
        result = CliRunner().invoke(main, ARGS + ["--out", str(out)])
        assert isinstance(result.exception, Crash), result.output
    scripted_monitor(monkeypatch, [40.0, 30.0])    # the resumed epochs 2, 3 come out worse
    result = CliRunner().invoke(main, ARGS + ["--out", str(out), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    said, kept = best_epochs(out)
    assert said == 1 and kept == 1
    assert not list(out.glob("*pending*"))


def test_a_best_whose_epoch_was_committed_is_moved_into_place_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        scripted_monitor(m, [50.0, 70.0])
        real = loop.Run.save_checkpoint

        def crash_after_the_checkpoint(self, epochs_done, state=None, best=False):
            real(self, epochs_done, state, best)
            if epochs_done == 2 and not best and state is None:
                raise Crash  # killed right after epoch 2's commit point
        m.setattr(loop.Run, "save_checkpoint", crash_after_the_checkpoint)
        result = CliRunner().invoke(main, ARGS + ["--out", str(out)])
        assert isinstance(result.exception, Crash), result.output
    scripted_monitor(monkeypatch, [30.0])          # epoch 3
    result = CliRunner().invoke(main, ARGS + ["--out", str(out), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    said, kept = best_epochs(out)
    assert said == 2 and kept == 2
    assert not list(out.glob("*pending*"))
