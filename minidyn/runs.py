"""A training run on disk, and `train_run`, which sets one up and trains it.

A run directory holds:
    config.json      the resolved TrainConfig and the c_max actually used
    metrics.jsonl    one JSON object per finished epoch (see train.epoch_record)
    fosc/epoch_NNN.npy  final FOSC of every training example that epoch (dataset order)
    checkpoint.pt | checkpoint.npz   weights, optimiser state and the epoch count, every epoch
    summary.json     clean and PGD accuracy on the whole test set, at the end

Files are replaced atomically (temporary file, fsync, rename), so a crash leaves either the old
or the new version, never a torn one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from minidyn import __version__
from minidyn.backend import Backend, get_backend
from minidyn.config import TrainConfig
from minidyn.data import load_dataset
from minidyn.errors import ConfigError
from minidyn.fileio import atomic_write
from minidyn.train import EpochStats, estimate_c_max, evaluate, fit

CHECKPOINT_NAMES = {"torch": "checkpoint.pt", "numpy": "checkpoint.npz", "cupy": "checkpoint.npz"}
# Options that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = {"data_dir", "device"}


class RunDir:
    """The files of one run under `path`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.fosc_dir = self.path / "fosc"

    def checkpoint(self, backend: str) -> Path:
        return self.path / CHECKPOINT_NAMES[backend]

    def prepare(self, resume: bool) -> None:
        """Create the directory; refuse to overwrite a run unless resuming, or to resume nothing."""
        if resume and not self.config.exists():
            raise ConfigError(f"--resume: {self.path} holds no run to resume (no config.json)")
        if not resume and self.path.exists() and any(self.path.iterdir()):
            raise ConfigError(f"{self.path} is not empty; pass --resume to continue the run "
                              "there, or choose another --out")
        try:
            self.fosc_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out {self.path}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise ConfigError(f"cannot write to --out {self.path}: permission denied")

    def write_json(self, path: Path, obj: dict) -> None:
        atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True))

    def read_json(self, path: Path) -> dict:
        return json.loads(path.read_text())

    def log(self, record: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def keep_metrics_before(self, epoch: int) -> None:
        """Drop metric lines of epochs >= epoch (logged after the last checkpoint was written)."""
        kept = [r for r in self.read_metrics() if r["epoch"] < epoch]
        atomic_write(self.metrics, lambda f: f.writelines(json.dumps(r) + "\n" for r in kept))

    def save_fosc(self, t: int, fosc: np.ndarray) -> None:
        atomic_write(self.fosc_dir / f"epoch_{t:03d}.npy", lambda f: np.save(f, fosc), mode="wb")


def backend_from_config(cfg: TrainConfig) -> Backend:
    if cfg.backend == "torch":
        return get_backend("torch", device=cfg.device, attack_mode=cfg.attack_mode, **cfg.extras)
    return get_backend(cfg.backend, **cfg.extras)


def config_differences(saved: dict, current: dict) -> list[str]:
    """Names of the options whose values differ between a saved config and the current one."""
    keys = (set(saved) | set(current)) - RESUMABLE_CHANGES - {"c_max_used", "version"}
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def train_run(cfg: TrainConfig, out: str | os.PathLike | None, *, resume: bool = False,
              on_epoch: Callable[[dict], None] | None = None,
              on_batch: Callable[[int, int], None] | None = None) -> dict:
    """Train `cfg` (resolving its defaults), writing the run directory `out` if given.

    Returns the summary: the final clean and PGD-`eval_steps` accuracy on the whole test set.
    """
    cfg = cfg.resolved()
    B = backend_from_config(cfg)
    train_set = load_dataset(cfg.dataset, "train", cfg.data_dir)
    if cfg.limit is not None:
        train_set = train_set.subset(cfg.limit)
    test_set = load_dataset(cfg.dataset, "test", cfg.data_dir)
    model = B.make_model(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes, cfg.seed)
    optimizer = B.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    run = RunDir(out) if out is not None else None
    start_epoch = 0
    if run is not None:
        run.prepare(resume)
    if resume:
        saved = run.read_json(run.config)
        differing = config_differences(saved, cfg.to_dict())
        if differing:
            raise ConfigError("--resume with options that differ from the saved run: "
                              + ", ".join(f"{k} ({saved.get(k)!r} saved, {getattr(cfg, k, None)!r} now)"
                                          for k in differing))
        c_max = saved["c_max_used"]
        if run.checkpoint(cfg.backend).exists():
            start_epoch = B.load_checkpoint(str(run.checkpoint(cfg.backend)), model, optimizer)["epoch"]
        run.keep_metrics_before(start_epoch)
    else:
        c_max = estimate_c_max(B, model, train_set, cfg) if cfg.c_max == "auto" else float(cfg.c_max)
        if run is not None:
            run.write_json(run.config, {**cfg.to_dict(), "c_max_used": c_max, "version": __version__})

    def end_of_epoch(t: int, record: dict, stats: EpochStats) -> None:
        if run is not None:
            run.save_fosc(t, stats.fosc)
            run.log(record)
            meta = {"epoch": t + 1, "c_max": c_max, "model": cfg.model, "dataset": cfg.dataset,
                    "eps": cfg.eps, "input_shape": list(train_set.x.shape[1:]),
                    "num_classes": train_set.num_classes, "method": cfg.method}
            B.save_checkpoint(str(run.checkpoint(cfg.backend)), model, optimizer, meta)
        if on_epoch:
            on_epoch(record)

    fit(cfg, B, model, optimizer, train_set, test_set, c_max=c_max, start_epoch=start_epoch,
        end_of_epoch=end_of_epoch, on_batch=on_batch)
    final = evaluate(B, model, test_set, eps=cfg.eps, steps=cfg.eval_steps,
                     batch_size=cfg.batch_size, seed=cfg.seed)
    summary = {"test_clean_acc": final["clean_acc"], f"test_pgd{cfg.eval_steps}_acc": final["pgd_acc"],
               "test_n": len(test_set), "eps": cfg.eps, "epochs": cfg.epochs, "c_max_used": c_max}
    if run is not None:
        run.write_json(run.summary, summary)
    return summary

