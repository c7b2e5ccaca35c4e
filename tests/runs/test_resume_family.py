"""Dynamic's family resumes exactly: each method of the family, killed at a mid-epoch checkpoint
(an exception where a SIGKILL could land) and resumed, writes what the uninterrupted run writes,
on the numpy backend (hand-written losses) and on torch. FAT's step noise, TRADES' and MART's
normal start and GAIRAT's kappa all draw from or depend on the epoch's saved generator state."""
import json
from pathlib import Path

import numpy as np
import pytest

from minidyn.files.config import TrainConfig
from minidyn.runs import backend_from_config, train_run


class Crash(Exception):
    """Stands for the process dying at that point."""


def config(data_dir, backend, **changes) -> TrainConfig:
    # 96 examples in batches of 32: 3 SGD steps per epoch; 3 epochs so that tau, c_t and
    # GAIRAT's weights change (begin 2)
    values = dict(backend=backend, model="softmax" if backend == "numpy" else "mlp", dataset="mnist",
                  data_dir=str(data_dir), epochs=3, batch_size=32, steps=3, eval_limit=16, eval_steps=1,
                  gairat_begin=2)
    return TrainConfig(**{**values, **changes})


def run_files(run: Path) -> dict:
    """What a run wrote, comparable: metrics without "seconds", every other file's bytes
    (checkpoints included: the same weights, optimiser and generator states)."""
    files = {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        name = str(path.relative_to(run))
        if name == "metrics.jsonl":
            files[name] = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                           for line in path.read_text().splitlines()]
        elif name == "checkpoint.npz":
            with np.load(path, allow_pickle=False) as f:
                files[name] = {k: f[k].tobytes() for k in f.files}
        elif name == "checkpoint.pt":
            import torch
            state = torch.load(path, weights_only=True)
            files[name] = repr({k: v for k, v in state.items() if k != "model"}) + repr(
                {k: v.numpy().tobytes() for k, v in state["model"].items()})
        else:
            files[name] = path.read_bytes()
    return files


FAMILY = [("fat", {}), ("trades", {}), ("mart", {}), ("gairat", {}), ("fgsm-rs", {}),
          ("trades", {"stop": "fosc", "c_max": 0.05})]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name, changes", FAMILY, ids=[f"{m}{'-' + c['stop'] if c else ''}" for m, c in FAMILY])
def test_a_family_run_killed_mid_epoch_resumes_exactly(tiny_mnist, tmp_path, monkeypatch, backend, name, changes):
    if backend == "torch":
        pytest.importorskip("torch")
    cfg = config(tiny_mnist, backend, method=name, **changes)
    train_run(cfg, tmp_path / "reference")
    real = backend_from_config(cfg.resolved()).save_checkpoint
    calls = []

    def save(*args, **kwargs):  # the 4th write: mid-epoch, after step 5 (epoch 2, batch 2)
        calls.append(1)
        real(*args, **kwargs)
        if len(calls) == 4:
            raise Crash

    monkeypatch.setattr(backend_from_config(cfg.resolved()), "save_checkpoint", save)
    with pytest.raises(Crash):
        train_run(cfg, tmp_path / "run", checkpoint_every=2)
    monkeypatch.undo()
    train_run(cfg, tmp_path / "run", resume=True, checkpoint_every=2)
    assert run_files(tmp_path / "run") == run_files(tmp_path / "reference")
