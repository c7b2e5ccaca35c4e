"""The files of a training run on disk (`RunDir`): what they are, how they are written.

A run directory holds:
    config.json      the resolved TrainConfig and the c_max actually used
    metrics.jsonl    one JSON object per finished epoch (see runs.epoch_record)
    fosc/epoch_NNN.npy  final FOSC of every training example that epoch (dataset order)
    checkpoint.pt | checkpoint.npz   weights, optimiser state and the epoch count, every epoch
                     (and every N SGD steps with checkpoint_every=N: then also the batch
                     position, the attack generator's state and the epoch's partial statistics)
    best-val.pt | best-val.npz   with val_size: the checkpoint of the epoch with the best
                     validation PGD accuracy so far, committed with that epoch: it is written
                     as best-val.epoch-N.pending.pt|npz before the epoch's metrics line and
                     moved into place right after the epoch's checkpoint; on resume a pending
                     one is moved into place if the metrics kept call its epoch the best, and
                     deleted otherwise
    summary.json     clean and PGD accuracy on the whole test set, at the end

Files are replaced atomically (temporary file, fsync, rename), so a crash leaves either the old
or the new version, never a torn one. The checkpoint is the commit point: on resume, metric
lines logged after it are dropped, and training continues from it (see docs/reliability.md).
Under torchrun only rank 0 writes: the RunDir of every other rank is not `writable`, and every
method that writes (marked `_writes`, the checkpoints included) does nothing there; that is the
one way the run says "do not write". A run without a directory (no --out) has no RunDir at all
(`Run.files` None): nothing is read, written, checked or selected.

A run that writes holds an exclusive lock on its directory for as long as it trains: `flock` on
`.minidyn.lock`, which records the holder's host and pid and is removed when the run ends. The
OS releases the lock when the process dies (a SIGKILLed run leaves the file, but no lock: the
next run takes it over); reading a run (eval, analyze, compare) takes no lock. On NFS, whether flock excludes processes on other hosts depends on the mount (Linux
NFS clients emulate it with NFS byte-range locks; `local_lock=flock` makes it local only).
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import socket
import stat
from pathlib import Path
from typing import Callable

import numpy as np

from minidyn.errors import ConfigError
from minidyn.files.fileio import sync_directory, atomic_write, temporary_target
from minidyn.files.names import BEST_NAMES, CHECKPOINT_NAMES
from minidyn.files.readers import read_config, read_metrics, read_summary

LOCK_NAME = ".minidyn.lock"
RUN_FILES = {"config.json", "metrics.jsonl", "summary.json", *CHECKPOINT_NAMES.values(), *BEST_NAMES.values()}
FOSC_FILE = re.compile(r"epoch_\d{3,}\.npy")
PENDING_BEST = re.compile(r"best-val\.epoch-(?P<epoch>\d+)\.pending\.(pt|npz)")


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

    def best(self, backend: str) -> Path:
        return self.path / BEST_NAMES[backend]

    def pending_best(self, backend: str, epoch: int) -> Path:
        """Where epoch `epoch`'s (counted from 1) best-on-validation checkpoint waits for the
        epoch's commit point (`commit_best`)."""
        stem, _, suffix = BEST_NAMES[backend].partition(".")
        return self.path / f"{stem}.epoch-{epoch}.pending.{suffix}"

    def pending_bests(self) -> dict[int, Path]:
        """{epoch: path} of the pending best checkpoints in the directory."""
        if not self.path.is_dir():
            return {}
        found = {}
        for entry in self.path.iterdir():
            match = PENDING_BEST.fullmatch(entry.name)
            if match:
                found[int(match["epoch"])] = entry
        return found

    @_writes
    def commit_best(self, backend: str, epoch: int) -> None:
        """Move epoch `epoch`'s pending best checkpoint, if there is one, into place (atomic)."""
        pending = self.pending_best(backend, epoch)
        if pending.exists():
            os.replace(pending, self.best(backend))
            sync_directory(self.path)

    @_writes
    def discard_pending_best(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def has_run(self) -> bool:
        """Whether a run was started here (its config.json was written)."""
        return self.config.is_file()

    def leftovers_only(self) -> bool:
        """True if the directory is missing or holds only what a run killed before writing its
        config.json can leave: an empty fosc/ directory, the lock file and atomic_write's
        temporary files of the run's own files (a user's own files make it not empty)."""
        if not self.path.exists():
            return True
        try:
            for entry in self.path.iterdir():
                if entry == self.fosc_dir and entry.is_dir() and not any(entry.iterdir()):
                    continue
                if _is_temporary(entry) or _is_lock(entry):
                    continue
                return False
        except OSError:
            return False
        return True

    @_writes
    def prepare(self, resume: bool) -> None:
        """Create the directory and lock it (`lock`); refuse to overwrite a run unless resuming,
        or to resume nothing.

        `resume` where no run was started yet (killed before it wrote config.json) starts one.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a directory")
        if resume and not self.has_run() and not self.leftovers_only():
            raise ConfigError(f"--resume: {self.path} holds no minidyn run to resume (no config.json) "
                              "and is not empty; choose another --out")
        if not resume and self.path.exists() and any(not _is_lock(e) for e in self.path.iterdir()):
            raise ConfigError(f"{self.path} is not empty; pass --resume to continue the run "
                              "there, or choose another --out")
        try:
            self.fosc_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out {self.path}: {exc.strerror or exc}") from None
        if not os.access(self.path, os.W_OK) or not os.access(self.fosc_dir, os.W_OK):
            raise ConfigError(f"cannot write to --out {self.path}: permission denied")
        self.lock()

    @_writes
    def lock(self) -> None:
        """Take the run's exclusive lock (held until `unlock` or the process ends) and record
        this process in the lock file; ConfigError naming the holder if another process has it."""
        path = self.path / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise ConfigError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise ConfigError(f"{self.path} is in use by another minidyn run ({holder}); "
                                  "wait for it to finish, or stop it first") from None
            if _same_file(fd, path):
                break
            os.close(fd)  # the holder removed this file after we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock taken by `lock` (nothing if none is held), removing the lock file
        while it is still held (a process waiting on the removed file then locks a new one)."""
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            try:
                (self.path / LOCK_NAME).unlink(missing_ok=True)
            except OSError:
                pass
            finally:
                os.close(fd)  # closing releases the flock

    def check_file_types(self, backend: str) -> None:
        """ConfigError if a file that resuming reads or replaces is there but is not a regular
        file (a FIFO or device would block the read forever; a directory or a dangling link)."""
        names = [self.config, self.metrics, self.summary, self.checkpoint(backend)]
        if self.fosc_dir.is_dir():
            names += sorted(p for p in self.fosc_dir.iterdir() if FOSC_FILE.fullmatch(p.name))
        for path in names:
            kind = _not_regular(path)
            if kind:
                raise ConfigError(f"{path} is {kind}, not a regular file; a minidyn run cannot use it")

    def check_history(self, checkpoint: Path, epoch: int | None) -> None:
        """ConfigError unless the run's history fits its checkpoint: `epoch` is the epochs the
        checkpoint records (None: there is no checkpoint), and metrics.jsonl must hold a line
        for each of them; with no checkpoint there must be no history (metrics or summary)
        beyond epoch 1's line, which a run killed between logging its first epoch and writing
        its first checkpoint leaves (uncommitted, it is dropped on resume)."""
        recorded = {r["epoch"] for r in self.read_metrics()}
        if epoch is None:
            if recorded - {0} or self.summary.exists():
                raise ConfigError(f"--resume: {self.path} has {len(recorded)} epochs of history "
                                  f"but no checkpoint ({checkpoint.name} is missing); resuming would "
                                  "retrain from epoch 1 and rewrite it")
        elif not recorded.issuperset(range(epoch)):
            missing = sorted(set(range(epoch)) - recorded)
            raise ConfigError(f"--resume: {checkpoint} is at epoch {epoch}, but {self.metrics.name} "
                              f"has no line for epoch {missing[0] + 1}; the run's history is incomplete")

    @_writes
    def remove_temporary_files(self) -> None:
        """Delete the temporary files of `atomic_write`s of this run's own files that a crash
        interrupted (`_is_temporary`: never the real files, never a file minidyn did not write)."""
        for folder in (self.path, self.fosc_dir):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if _is_temporary(entry) and entry.is_file():
                        entry.unlink(missing_ok=True)

    @_writes
    def write_json(self, path: Path, obj: dict) -> None:
        atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True))

    def read_json(self, path: Path) -> dict:
        """config.json or summary.json, validated by minidyn.files.readers (ConfigError otherwise)."""
        return read_summary(path) if path == self.summary else read_config(path)

    @_writes
    def log(self, record: dict) -> None:
        """Append one epoch's record: the whole file is rewritten atomically (never a torn line)."""
        records = self.read_metrics() + [record]
        atomic_write(self.metrics, lambda f: f.writelines(json.dumps(r) + "\n" for r in records))

    def read_metrics(self) -> list[dict]:
        """The epoch records of metrics.jsonl (minidyn.files.readers.read_metrics)."""
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

    @_writes
    def save_checkpoint(self, path: Path, save: Callable[[str], None]) -> None:
        """Write the checkpoint `path` with `save` (the backend's writer, which replaces the file
        atomically)."""
        save(str(path))


def _is_temporary(entry: Path) -> bool:
    """A temporary file of `atomic_write` (".NAME.minidyn-XXXXXXXX.tmp") of one of a run's own
    files: NAME in RUN_FILES in the run directory, NAME epoch_NNN.npy in fosc/."""
    target = temporary_target(entry.name)
    if target is None:
        return False
    if entry.parent.name == "fosc" and FOSC_FILE.fullmatch(target):
        return True
    return target in RUN_FILES or PENDING_BEST.fullmatch(target) is not None


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _is_lock(entry: Path) -> bool:
    return entry.name == LOCK_NAME and entry.is_file()


def _not_regular(path: Path) -> str | None:
    """What `path` is when it is there but is not a regular file (after symbolic links)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(path) else None
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")
