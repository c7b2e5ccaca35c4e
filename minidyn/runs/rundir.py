"""The files of a training run on disk (`RunDir`): what they are, how they are written.

A run directory holds:
    config.json      the resolved TrainConfig and the c_max actually used
    metrics.jsonl    one JSON object per finished epoch (see runs.epoch_record)
    fosc/epoch_NNN.npy  final FOSC of every training example that epoch (dataset order)
    checkpoint.pt | checkpoint.npz   weights, optimiser state and the epoch count, every epoch
                     (and every N SGD steps with checkpoint_every=N: then also the batch
                     position, the attack generator's state and the epoch's partial statistics)
    summary.json     clean and PGD accuracy on the whole test set, at the end

Files are replaced atomically (temporary file, fsync, rename), so a crash leaves either the old
or the new version, never a torn one. The checkpoint is the commit point: on resume, metric
lines logged after it are dropped, and training continues from it (see docs/reliability.md).
Under torchrun only rank 0 writes: the RunDir of every other rank is not `writable`.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

from minidyn.errors import ConfigError
from minidyn.fileio import atomic_write
from minidyn.readers import read_config, read_metrics, read_summary

CHECKPOINT_NAMES = {"torch": "checkpoint.pt", "numpy": "checkpoint.npz", "cupy": "checkpoint.npz"}


def _writes(method):
    """A RunDir method that writes files: it does nothing where the RunDir is not writable
    (ranks > 0 of a torchrun job; rank 0 writes for all)."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self.writable:
            method(self, *args, **kwargs)
    return guarded


class RunDir:
    """The files of one run under `path`."""

    def __init__(self, path: str | os.PathLike, writable: bool = True):
        self.writable = writable  # False on ranks > 0 of a torchrun job: only rank 0 writes
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.fosc_dir = self.path / "fosc"

    def checkpoint(self, backend: str) -> Path:
        return self.path / CHECKPOINT_NAMES[backend]

    def has_run(self) -> bool:
        """Whether a run was started here (its config.json was written)."""
        return self.config.is_file()

    def leftovers_only(self) -> bool:
        """True if the directory is missing or holds only what a run killed before writing its
        config.json can leave: an empty fosc/ directory and temporary files."""
        if not self.path.exists():
            return True
        try:
            for entry in self.path.iterdir():
                if entry == self.fosc_dir and entry.is_dir() and not any(entry.iterdir()):
                    continue
                if _is_temporary(entry):
                    continue
                return False
        except OSError:
            return False
        return True

    @_writes
    def prepare(self, resume: bool) -> None:
        """Create the directory; refuse to overwrite a run unless resuming, or to resume nothing.

        `resume` where no run was started yet (killed before it wrote config.json) starts one.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a directory")
        if resume and not self.has_run() and not self.leftovers_only():
            raise ConfigError(f"--resume: {self.path} holds no minidyn run to resume (no config.json) "
                              "and is not empty; choose another --out")
        if not resume and self.path.exists() and any(self.path.iterdir()):
            raise ConfigError(f"{self.path} is not empty; pass --resume to continue the run "
                              "there, or choose another --out")
        try:
            self.fosc_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out {self.path}: {exc.strerror or exc}") from None
        if not os.access(self.path, os.W_OK) or not os.access(self.fosc_dir, os.W_OK):
            raise ConfigError(f"cannot write to --out {self.path}: permission denied")

    @_writes
    def remove_temporary_files(self) -> None:
        """Delete the temporary files of writes that a crash interrupted (never the real files)."""
        for folder in (self.path, self.fosc_dir):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if _is_temporary(entry) and entry.is_file():
                        entry.unlink(missing_ok=True)

    @_writes
    def write_json(self, path: Path, obj: dict) -> None:
        atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True))

    def read_json(self, path: Path) -> dict:
        """config.json or summary.json, validated by minidyn.readers (ConfigError otherwise)."""
        return read_summary(path) if path == self.summary else read_config(path)

    @_writes
    def log(self, record: dict) -> None:
        """Append one epoch's record: the whole file is rewritten atomically (never a torn line)."""
        records = self.read_metrics() + [record]
        atomic_write(self.metrics, lambda f: f.writelines(json.dumps(r) + "\n" for r in records))

    def read_metrics(self) -> list[dict]:
        """The epoch records of metrics.jsonl (minidyn.readers.read_metrics)."""
        return read_metrics(self.metrics)

    @_writes
    def keep_metrics_before(self, epoch: int) -> None:
        """Drop metric lines of epochs >= epoch (logged after the last checkpoint was written)."""
        records = self.read_metrics()
        kept = [r for r in records if r["epoch"] < epoch]
        if kept != records or not self.metrics.exists():
            atomic_write(self.metrics, lambda f: f.writelines(json.dumps(r) + "\n" for r in kept))

    @_writes
    def save_fosc(self, t: int, fosc: np.ndarray) -> None:
        atomic_write(self.fosc_dir / f"epoch_{t:03d}.npy", lambda f: np.save(f, fosc), mode="wb")


def _is_temporary(entry: Path) -> bool:
    """A temporary file of `atomic_write` (".NAME.XXXXXXXX.tmp")."""
    return entry.name.startswith(".") and entry.name.endswith(".tmp")
