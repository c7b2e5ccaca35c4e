"""minidyn.runs: check_batch_shares (the smallest per-process share of any batch, as
np.array_split deals it, must be at least what the model trains on), and what the run loop
tells its reporter."""
import copy

import numpy as np
import pytest

from minidyn.backend import get_backend
from minidyn.files.config import TrainConfig
from minidyn.errors import ConfigError
from minidyn.runs.reporter import Reporter
from minidyn.runs import check_batch_shares, train_run
from minidyn.data.batches import batch_indices


def fake_backend(world: int, need: int):
    backend = copy.copy(get_backend("numpy"))  # a copy: get_backend's instance is shared
    backend.world_size = world
    backend.min_train_batch = lambda model: need
    return backend


def smallest_share(n: int, batch: int, world: int) -> int:
    return min(len(part) for idx in batch_indices(np.arange(n), batch) for part in np.array_split(idx, world))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("need", [1, 2])
def test_refused_exactly_when_some_process_would_get_too_few(world, need):
    for n in range(1, 40):
        for batch in range(1, 20):
            cfg = TrainConfig(batch_size=batch, model="mlp")
            if smallest_share(n, batch, world) >= need:
                check_batch_shares(fake_backend(world, need), None, cfg, n)
            else:
                with pytest.raises(ConfigError):
                    check_batch_shares(fake_backend(world, need), None, cfg, n)


@pytest.mark.parametrize("world, need, words", [
    (1, 2, "a batch of 1 example, and cnn8's BatchNorm needs at least 2 to train; change --batch-size"),
    (2, 2, "a batch of 1 example split over 2 processes gives one of them 0, and cnn8's BatchNorm needs"),
    (2, 1, "a batch of 1 example split over 2 processes gives one of them 0, and every process needs at least 1"),
])
def test_the_message_names_the_batch_and_the_reason(world, need, words):
    with pytest.raises(ConfigError, match=words):
        check_batch_shares(fake_backend(world, need), None, TrainConfig(batch_size=32, model="cnn8"), 33)


class Recorder(Reporter):
    """Every call the run loop makes, in order."""

    def __init__(self, out):
        self.out, self.calls = out, []

    def note(self, line):
        self.calls.append(("note", line))

    def progress(self, t, done, total):
        self.calls.append(("progress", t, done, total))

    def epoch(self, record):
        lines = (self.out / "metrics.jsonl").read_text().splitlines()
        self.calls.append(("epoch", record["epoch"], len(lines)))


def test_the_reporter_sees_every_step_every_epoch_and_the_notes(tiny_mnist, tmp_path):
    """96 examples in batches of 40: steps at 40, 80, 96 of each epoch; each epoch is reported
    once its metrics line is on disk; a resumed run first says where it continues."""
    cfg = TrainConfig(backend="numpy", model="softmax", dataset="mnist", data_dir=str(tiny_mnist),
                      epochs=2, batch_size=40, steps=2, eval_limit=8, eval_steps=1, eps=8 / 255)
    report = Recorder(tmp_path / "run")
    train_run(cfg, tmp_path / "run", reporter=report)
    steps = [("progress", t, done, 96) for t in (0, 1) for done in (40, 80, 96)]
    assert [c for c in report.calls if c[0] == "progress"] == steps
    assert [c for c in report.calls if c[0] == "epoch"] == [("epoch", 0, 1), ("epoch", 1, 2)]
    # at eps 8/255 c_t = 0.5 stops every example at once: the warning follows epoch 1's line
    first_note = next(i for i, c in enumerate(report.calls) if c[0] == "note")
    assert report.calls[first_note - 1] == ("epoch", 0, 1) and "warning: c_t 0.5" in report.calls[first_note][1]
    again = Recorder(tmp_path / "run")
    train_run(cfg, tmp_path / "run", resume=True, reporter=again)
    assert again.calls == [("note", f"{tmp_path / 'run'}: all 2 epochs were trained; evaluating the final model")]
