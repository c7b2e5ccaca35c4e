"""A training run on disk, and `train_run`, which sets one up and trains it.

A run directory holds:
    config.json      the resolved TrainConfig and the c_max actually used
    metrics.jsonl    one JSON object per finished epoch (see train.epoch_record)
    fosc/epoch_NNN.npy  final FOSC of every training example that epoch (dataset order)
    checkpoint.pt | checkpoint.npz   weights, optimiser state and the epoch count, every epoch
                     (and every N SGD steps with checkpoint_every=N: then also the batch
                     position, the attack generator's state and the epoch's partial statistics)
    summary.json     clean and PGD accuracy on the whole test set, at the end

Files are replaced atomically (temporary file, fsync, rename), so a crash leaves either the old
or the new version, never a torn one. The checkpoint is the commit point: on resume, metric
lines logged after it are dropped, and training continues from it (see docs/reliability.md).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from minidyn import __version__
from minidyn.backend import Backend, get_backend
from minidyn.config import TrainConfig, cuda_index
from minidyn.data import load_dataset
from minidyn.errors import CheckpointError, ConfigError, NumericalError
from minidyn.fileio import atomic_write
from minidyn.epoch_state import EpochState, EpochStats
from minidyn.train import estimate_c_max, evaluate, fit

CHECKPOINT_NAMES = {"torch": "checkpoint.pt", "numpy": "checkpoint.npz", "cupy": "checkpoint.npz"}
# Options that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = {"data_dir", "device"}


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
        try:
            obj = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
            raise ConfigError(f"{path} cannot be read as a minidyn run file ({reason})") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{path} is not a minidyn run file (not a JSON object)")
        return obj

    @_writes
    def log(self, record: dict) -> None:
        """Append one epoch's record: the whole file is rewritten atomically (never a torn line)."""
        records = self.read_metrics() + [record]
        atomic_write(self.metrics, lambda f: f.writelines(json.dumps(r) + "\n" for r in records))

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        try:
            lines = self.metrics.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.metrics} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ConfigError(f"{self.metrics}: line {number} is not a minidyn epoch record")
            records.append(record)
        return records

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


def backend_from_config(cfg: TrainConfig) -> Backend:
    if cfg.backend == "torch":
        return get_backend("torch", device=cfg.device, attack_mode=cfg.attack_mode, **cfg.extras)
    if cfg.backend == "cupy" and cfg.device not in ("auto", "cpu"):
        return get_backend("cupy", device=cuda_index(cfg.device), **cfg.extras)
    return get_backend(cfg.backend, **cfg.extras)


def check_batch_shares(B: Backend, model, cfg: TrainConfig, n: int) -> None:
    """ConfigError if some process would get fewer examples of a batch than the model trains on
    (a BatchNorm model needs 2); the smallest share is that of the last rank in the last batch."""
    size = (n - 1) % cfg.batch_size + 1  # the last batch's
    share, need = size // B.world_size, B.min_train_batch(model)
    if share < need:
        split = "" if B.world_size == 1 else f" split over {B.world_size} processes gives one of them {share}"
        why = f"{cfg.model}'s BatchNorm needs at least {need}" if need > 1 else "every process needs at least 1"
        raise ConfigError(f"a batch of {size} example{'s' * (size != 1)}{split}, and {why} to train; "
                          f"change --batch-size or --limit ({n} training examples)")


def config_differences(saved: dict, current: dict) -> list[str]:
    """Names of the options whose values differ between a saved config and the current one."""
    keys = (set(saved) | set(current)) - RESUMABLE_CHANGES - {"c_max_used", "version"}
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def weights_are_finite(B: Backend, model) -> bool:
    return all(np.isfinite(v).all() for v in B.get_params(model).values() if v.dtype.kind == "f")


def train_run(cfg: TrainConfig, out: str | os.PathLike | None, *, resume: bool = False,
              checkpoint_every: int | None = None,
              on_epoch: Callable[[dict], None] | None = None,
              on_batch: Callable[[int, int], None] | None = None,
              on_resume: Callable[[int, int], None] | None = None,
              log: Callable[[str], None] | None = None) -> dict:
    """Train `cfg` (resolving its defaults), writing the run directory `out` if given.

    A checkpoint is written after every epoch and, with `checkpoint_every` N, after every N-th
    SGD step (counted over the whole run) as well. `resume` continues the run in `out` from
    its last checkpoint, exactly: the result is bit-identical to an uninterrupted run on the
    same machine. Returns the summary: the final clean and PGD-`eval_steps` accuracy on the
    whole test set. `log` receives one-line notes (what is resumed from where);
    `on_resume(epoch, examples)` is told where training continues (examples done in that epoch).
    """
    cfg = cfg.resolved()
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
    B = backend_from_config(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and B.world_size == 1:
        raise ConfigError(f"torchrun trains with --backend torch; the {cfg.backend} backend runs in one process")
    if checkpoint_every is not None:
        B.rng_state(B.rng(0))  # ConfigError now where the backend cannot save its generator
    train_set = load_dataset(cfg.dataset, "train", cfg.data_dir)
    if cfg.limit is not None:
        train_set = train_set.subset(cfg.limit)
    test_set = load_dataset(cfg.dataset, "test", cfg.data_dir)
    model = B.make_model(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes, cfg.seed)
    check_batch_shares(B, model, cfg, len(train_set))
    optimizer = B.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    run = RunDir(out, writable=B.rank == 0) if out is not None else None
    say = log or (lambda line: None)
    start_epoch, resume_state = 0, None
    if resume and run is None:
        raise ConfigError("--resume needs the run directory (--out) to continue")
    if run is not None:
        run.prepare(resume)
    if resume and run is not None and run.has_run():
        saved = run.read_json(run.config)
        differing = config_differences(saved, cfg.to_dict())
        if differing:
            raise ConfigError("--resume with options that differ from the saved run: "
                              + ", ".join(f"{k} ({saved.get(k)!r} saved, {getattr(cfg, k, None)!r} now)"
                                          for k in differing))
        c_max = saved.get("c_max_used")
        if not isinstance(c_max, (int, float)) or isinstance(c_max, bool):
            raise ConfigError(f"{run.config} records no c_max_used; it was not written by minidyn train")
        start_epoch, resume_state = _load_resume_point(B, run, cfg, model, optimizer, len(train_set))
        run.remove_temporary_files()
        run.keep_metrics_before(start_epoch)
        where = f"epoch {start_epoch + 1}" + (f", batch {resume_state.batches + 1}" if resume_state else "")
        say(f"resuming {run.path} at {where}" if start_epoch < cfg.epochs
            else f"{run.path}: all {cfg.epochs} epochs were trained; evaluating the final model")
        if on_resume:
            done = min(len(train_set), resume_state.batches * cfg.batch_size) if resume_state else 0
            on_resume(start_epoch, done)
    else:
        if resume:
            say(f"--resume: nothing was saved in {run.path} yet; starting the run from the beginning")
            run.remove_temporary_files()
        c_max = estimate_c_max(B, model, train_set, cfg) if cfg.c_max == "auto" else float(cfg.c_max)
        if run is not None:
            run.write_json(run.config, {**cfg.to_dict(), "c_max_used": c_max, "version": __version__})

    batches_per_epoch = -(-len(train_set) // cfg.batch_size)

    def check_weights(where: str) -> None:
        if not weights_are_finite(B, model):
            raise NumericalError(f"the weights became NaN or infinite ({where}); lower --lr "
                                 "(the last good checkpoint is kept)")

    def save_checkpoint(epochs_done: int, state: EpochState | None = None) -> None:
        """The checkpoint after `epochs_done` epochs (and `state.batches` batches of the next)."""
        if state is not None:
            check_weights(f"at epoch {epochs_done + 1}, batch {state.batches}")
        meta = {"epoch": epochs_done, "c_max": c_max, "model": cfg.model, "dataset": cfg.dataset,
                "eps": cfg.eps, "input_shape": list(train_set.x.shape[1:]),
                "num_classes": train_set.num_classes, "method": cfg.method}
        if state is not None:
            meta["progress"] = state.to_meta(B)
        if run.writable:
            B.save_checkpoint(str(run.checkpoint(cfg.backend)), model, optimizer, meta)

    def after_step(t: int, state: EpochState) -> None:
        step = t * batches_per_epoch + state.batches  # SGD steps since the start of the run
        if step % checkpoint_every == 0 and state.batches < batches_per_epoch:
            save_checkpoint(t, state)  # the end of an epoch has its own checkpoint

    def end_of_epoch(t: int, record: dict, stats: EpochStats) -> None:
        if run is not None:
            check_weights(f"in epoch {t + 1}")  # before anything of this epoch is written
            run.save_fosc(t, stats.fosc)
            run.log(record)
            save_checkpoint(t + 1)
        if on_epoch:
            on_epoch(record)
        if t == 0 and record["c_t"]:
            for line in c_t_warnings(record["c_t"], stats.steps, cfg.steps):
                say(line)

    # a diverging run is caught explicitly (NumericalError above), not by numpy's warnings
    with np.errstate(over="ignore", invalid="ignore"):
        fit(cfg, B, model, optimizer, train_set, test_set, c_max=c_max, start_epoch=start_epoch,
            resume=resume_state, end_of_epoch=end_of_epoch, on_batch=on_batch,
            on_step=after_step if run is not None and checkpoint_every else None)
    final = evaluate(B, model, test_set, eps=cfg.eps, steps=cfg.eval_steps,
                     batch_size=cfg.batch_size, seed=cfg.seed, limit=cfg.final_eval_limit)
    summary = {"test_clean_acc": final["clean_acc"], f"test_pgd{cfg.eval_steps}_acc": final["pgd_acc"],
               "test_n": len(test_set), "test_pgd_n": final["pgd_n"], "eps": cfg.eps,
               "epochs": cfg.epochs, "c_max_used": c_max}
    if run is not None:
        run.write_json(run.summary, summary)
    return summary


def c_t_warnings(c_t: float, steps: np.ndarray, k: int) -> list[str]:
    """Warnings for a Dynamic first epoch in which c_t = c_max does not do its job: (almost)
    every example stopped after its first step (its FOSC started below c_t, so the epoch
    trained on one-step examples), or none stopped (c_t never bound: Standard training)."""
    if not steps.size:
        return []
    hint = ("FOSC scales with eps and the input size, so the paper's c_max 0.5 fits its own "
            "settings only; --c-max auto estimates c_max for these (README, 'c_max auto')")
    if np.mean(steps <= 1) >= 0.99:
        return [f"warning: c_t {c_t:g} stopped {100 * np.mean(steps <= 1):.0f}% of the examples "
                f"after one of {k} PGD steps (their FOSC is already below it); {hint}"]
    if np.all(steps >= k):
        return [f"warning: c_t {c_t:g} stopped no example before {k} PGD steps (their FOSC stays "
                f"above it), so Dynamic trained as Standard; {hint}"]
    return []


def _load_resume_point(B: Backend, run: RunDir, cfg: TrainConfig, model, optimizer,
                       n: int) -> tuple[int, EpochState | None]:
    """Load the last checkpoint into model and optimizer: (epochs done, state of the next epoch
    when it stopped midway). (0, None) when the run stopped before its first checkpoint."""
    path = run.checkpoint(cfg.backend)
    if not path.exists():
        return 0, None
    meta = B.load_checkpoint(str(path), model, optimizer)
    epoch = meta.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= cfg.epochs:
        raise CheckpointError(f"{path} records epoch {epoch!r}, not one of 0..{cfg.epochs}")
    progress = meta.get("progress")
    if progress is None:
        return epoch, None
    if epoch >= cfg.epochs or not isinstance(progress, dict):
        raise CheckpointError(f"{path} holds a mid-epoch state that does not fit the run")
    try:
        state = EpochState.from_meta(B, progress, cfg.seed, epoch, n)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if state.batches > -(-n // cfg.batch_size):
        raise CheckpointError(f"{path} holds a mid-epoch state past the end of the epoch")
    return epoch, state
