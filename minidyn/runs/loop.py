"""A training run: `train_run` sets one up, `epoch_loop` trains it, epoch after epoch.

    train_run(cfg, out)
        setup            backend, data, model, optimiser, the run directory (rundir.RunDir)
        start | resume   c_max and config.json | the last checkpoint, the metric lines after it
                         dropped
        epoch_loop       per epoch: lr and c_t, Algorithm 1's steps (`recorded_steps`: each
                         one recorded, NaN-checked, then the mid-epoch checkpoint), the
                         accuracy monitor (monitor.py), metrics.jsonl, fosc/, the checkpoint;
                         then the final evaluation and summary.json
    standalone_epoch     one epoch of Algorithm 1 outside a run (tests, benchmarks), through
                         the same `recorded_steps`

What the run tells its user goes to one `Reporter` (reporter.py). Randomness is derived from
(seed, epoch) (epoch_state.py), so resuming at an epoch boundary reproduces the run exactly; a
mid-epoch checkpoint adds the epoch's generator states and partial statistics, so resuming
there is exact too. Under torchrun every rank runs this loop on its share of every batch
(distributed.py) and only rank 0 writes.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from minidyn import __version__
from minidyn.backend import Backend, Model, get_backend
from minidyn.files.config import TrainConfig, cuda_index
from minidyn.files.compare_configs import RESUMABLE_CHANGES, config_differences
from minidyn.data import Dataset, load_dataset
from minidyn.data.batches import to_backend
from minidyn.data.validation import split_validation
from minidyn.errors import CheckpointError, ConfigError, NumericalError
from minidyn.methods import AttackPlan, Method, attack_plan, loss_plan
from minidyn.runs.distributed import check_batch_shares, check_finite_loss, from_rank_0
from minidyn.runs.epoch_state import EpochState, EpochStats, epoch_batches
from minidyn.runs.monitor import monitor
from minidyn.runs.reporter import Reporter
from minidyn.runs.rundir import CHECKPOINT_NAMES, RunDir
from minidyn.runs.weights import loss_weighting
from minidyn.schedules import StepLR
from minidyn.train import Step, estimate_c_max, train_epoch

__all__ = ["CHECKPOINT_NAMES", "Run", "RunDir", "RunStopped", "backend_from_config", "c_t_warnings",
           "check_batch_shares", "epoch_loop", "epoch_record", "method_of", "recorded_steps",
           "standalone_epoch", "train_run"]

# What a checkpoint's meta records of its run (Run.save_checkpoint): meta key -> config.json key
RECORDED_OPTIONS = {"eps": "eps", "model": "model", "dataset": "dataset", "method": "method",
                    "c_max": "c_max_used"}


class RunStopped(Exception):
    """The run stopped where `train_run`'s `stop` asked it to, after saving a mid-epoch checkpoint."""


def train_run(cfg: TrainConfig, out: str | os.PathLike | None, *, resume: bool = False,
              checkpoint_every: int | None = None, reporter: Reporter | None = None,
              stop: Callable[[], bool] | None = None) -> dict:
    """Train `cfg` (resolving its defaults), writing the run directory `out` if given.

    A checkpoint is written after every epoch and, with `checkpoint_every` N, after every N-th
    SGD step (counted over the whole run) as well. `resume` continues the run in `out` from
    its last checkpoint, exactly: the result is bit-identical to an uninterrupted run on the
    same machine. Returns the summary: the final clean and PGD-`eval_steps` accuracy on the
    whole test set. `reporter` is told the progress, each epoch's record and one-line notes
    (what is resumed from where, warnings); by default nothing is said. `stop` (one process,
    with `out`) is asked after every SGD step: when it says True, the run saves a mid-epoch
    checkpoint there and raises RunStopped, and a resume continues from that step exactly
    (a job asked to stop before its time limit or preemption: minidyn/studies/slurm.py).
    """
    report = reporter if reporter is not None else Reporter()
    run = setup(cfg.resolved(), out, resume, checkpoint_every)
    run.stop = stop
    try:
        if resume and run.files.has_run():
            resume_from_checkpoint(run, report)
        else:
            start(run, resume, report)
        return epoch_loop(run, report)
    finally:
        if run.files is not None:
            run.files.unlock()  # taken by setup (RunDir.prepare)


def epoch_loop(run: Run, report: Reporter) -> dict:
    """The run from epoch run.start_epoch on: per epoch the lr and the attack (c_t), Algorithm 1
    with the NaN check and the mid-epoch checkpoints after each SGD step, the test monitor, the
    metrics line, the FOSC file and the checkpoint; then the final evaluation (returned)."""
    cfg, backend, n = run.cfg, run.backend, len(run.train_set)
    lr_schedule = StepLR(cfg.lr, tuple(cfg.lr_milestones))
    method = method_of(cfg, run.c_max)
    accuracy = functools.partial(monitor, backend, run.model, eps=cfg.eps, steps=cfg.eval_steps,
                                 batch_size=cfg.batch_size, seed=cfg.seed)
    watched = "val" if run.val_set is not None else "test"  # what the per-epoch monitor attacks
    # a diverging run is caught explicitly (NumericalError), not by numpy's warnings
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(run.start_epoch, cfg.epochs):
            started = time.perf_counter()
            lr = lr_schedule.at(t)
            backend.set_lr(run.optimizer, lr)
            plan = attack_plan(method, t)  # the epoch's attack; Dynamic: c_t
            state = run.epoch_state(t)
            for _ in recorded_steps(backend, run.model, run.optimizer, run.train_set, cfg, t, plan, state):
                stopping = run.stop is not None and run.files is not None and run.stop()
                if stopping or run.checkpoint_due(t, state):
                    run.save_checkpoint(t, state)
                if stopping:
                    raise RunStopped(f"stopped at epoch {t + 1}, batch {state.batches}, checkpoint saved")
                report.progress(t, min(n, state.batches * cfg.batch_size), n)
            stats = state.stats(backend)  # summed over the ranks
            watch = accuracy(run.val_set if run.val_set is not None else run.test_set, limit=cfg.eval_limit)
            record = epoch_record(t, cfg, plan, lr, stats, watch, time.perf_counter() - started, watched)
            if run.files is not None:
                run.check_weights(f"in epoch {t + 1}")  # before anything of this epoch is written
                run.files.save_fosc(t, stats.fosc)
                if run.val_set is not None and run.is_best(record):
                    run.save_checkpoint(t + 1, best=True)  # pending until the epoch's commit point
                run.files.log(record)
                run.save_checkpoint(t + 1)  # the commit point of the epoch
                run.files.commit_best(cfg.backend, t + 1)
            report.epoch(record)
            if t == 0 and record["c_t"]:
                for line in c_t_warnings(record["c_t"], stats.steps, cfg.steps):
                    report.note(line)
    summary = {"eps": cfg.eps, "epochs": cfg.epochs, "c_max_used": run.c_max}
    if cfg.final_eval:
        final = accuracy(run.test_set, limit=cfg.final_eval_limit)
        summary.update({"test_clean_acc": final["clean_acc"], f"test_pgd{cfg.eval_steps}_acc": final["pgd_acc"],
                        "test_n": len(run.test_set), "test_pgd_n": final["pgd_n"]})
    if run.val_set is not None and run.files is not None:
        summary["best_val"] = best_on_validation(run.files.read_metrics())
    if run.files is not None:
        run.files.write_json(run.files.summary, summary)
    return summary


@dataclass
class Run:
    """What a run trains with and where it stands: the resolved config, the backend, the data,
    model and optimiser, its directory (None: nothing is written), Dynamic's c_max, and the
    epoch training starts at (with that epoch's saved state where a checkpoint stopped in it)."""

    cfg: TrainConfig
    backend: Backend
    train_set: Dataset
    test_set: Dataset
    model: Model
    optimizer: Any
    files: RunDir | None
    checkpoint_every: int | None = None  # a mid-epoch checkpoint every N SGD steps of the run
    c_max: float = 0.0
    start_epoch: int = 0
    resume_state: EpochState | None = None
    val_set: Dataset | None = None       # held out of the training set (--val-size)
    stop: Callable[[], bool] | None = None  # asked after every SGD step (train_run)

    def is_best(self, record: dict) -> bool:
        """Whether epoch record's validation PGD accuracy beats every earlier epoch's (a tie
        keeps the earlier epoch)."""
        earlier = [r["val_pgd_acc"] for r in self.files.read_metrics() if r["epoch"] < record["epoch"]]
        return not earlier or record["val_pgd_acc"] > max(earlier)

    def epoch_state(self, t: int) -> EpochState:
        """Epoch t's state: the saved one where the run resumes inside epoch t, else a new one."""
        if t == self.start_epoch and self.resume_state is not None:
            return self.resume_state
        return EpochState.begin(self.backend, self.cfg.seed, t, len(self.train_set))

    def checkpoint_due(self, t: int, state: EpochState) -> bool:
        """Whether the SGD step just taken gets a mid-epoch checkpoint: every checkpoint_every-th
        step of the run, except an epoch's last (the epoch's own checkpoint follows)."""
        if self.files is None or not self.checkpoint_every:
            return False
        per_epoch = -(-len(self.train_set) // self.cfg.batch_size)
        step = t * per_epoch + state.batches  # SGD steps since the start of the run
        return step % self.checkpoint_every == 0 and state.batches < per_epoch

    def save_checkpoint(self, epochs_done: int, state: EpochState | None = None, best: bool = False) -> None:
        """The checkpoint after `epochs_done` epochs (and `state.batches` batches of the next);
        `best`: the best-on-validation one instead, under its pending name (RunDir.commit_best
        moves it into place at the epoch's commit point). Every rank calls it
        (the state of every rank goes in); rank 0 writes it."""
        cfg = self.cfg
        if state is not None:
            self.check_weights(f"at epoch {epochs_done + 1}, batch {state.batches}")
        meta = {"epoch": epochs_done, "c_max": self.c_max, "model": cfg.model, "dataset": cfg.dataset,
                "eps": cfg.eps, "input_shape": list(self.train_set.x.shape[1:]),
                "num_classes": self.train_set.num_classes, "method": cfg.method}
        if state is not None:
            meta["progress"] = state.to_meta(self.backend)
        if best:
            meta["selected"] = "best validation PGD accuracy"
        path = self.files.pending_best(cfg.backend, epochs_done) if best else self.files.checkpoint(cfg.backend)
        self.files.save_checkpoint(path, lambda p: self.backend.save_checkpoint(p, self.model, self.optimizer, meta))

    def check_weights(self, where: str) -> None:
        if not weights_are_finite(self.backend, self.model):
            raise NumericalError(f"the weights became NaN or infinite ({where}); lower --lr "
                                 "(the last good checkpoint is kept)")


def setup(cfg: TrainConfig, out: str | os.PathLike | None, resume: bool,
          checkpoint_every: int | None) -> Run:
    """The backend, data, model, optimiser and run directory of a resolved `cfg`; ConfigError
    for a run that cannot be trained, before anything is written. The run directory is locked
    (RunDir.prepare) on the rank that writes it; `train_run` releases it."""
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
    backend = backend_from_config(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and backend.world_size == 1:
        raise ConfigError(f"torchrun trains with --backend torch; the {cfg.backend} backend runs in one process")
    if checkpoint_every is not None:
        backend.rng_state(backend.rng(0))  # ConfigError now where the backend cannot save its generator
    train_set, val_set = load_dataset(cfg.dataset, "train", cfg.data_dir), None
    if cfg.val_size is not None:  # held out before --limit: the same examples for any limit
        train_set, val_set = split_validation(train_set, cfg.val_size, cfg.seed)
    if cfg.limit is not None:
        train_set = train_set.subset(cfg.limit)
    test_set = load_dataset(cfg.dataset, "test", cfg.data_dir)
    model = backend.make_model(cfg.model, tuple(train_set.x.shape[1:]), train_set.num_classes, cfg.seed)
    check_batch_shares(backend, model, cfg, len(train_set))
    optimizer = backend.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    files = RunDir(out, writable=backend.rank == 0) if out is not None else None
    if resume and files is None:
        raise ConfigError("--resume needs the run directory (--out) to continue")
    if files is not None:
        if resume:
            files.check_file_types(cfg.backend)  # before anything opens them
        files.prepare(resume)
    return Run(cfg, backend, train_set, test_set, model, optimizer, files, checkpoint_every,
               val_set=val_set)


def start(run: Run, resume: bool, report: Reporter) -> None:
    """A new run: its c_max (`auto`: rank 0's estimate, so that c_t agrees on every rank even
    where GPU kernels are not deterministic) and its config.json."""
    cfg = run.cfg
    if resume:
        report.note(f"--resume: nothing was saved in {run.files.path} yet; starting the run from the beginning")
        run.files.remove_temporary_files()
        settle_pending_best(run.files, cfg.backend, 0)
    if cfg.c_max == "auto":  # estimated on the first batch of the training set
        x, y = to_backend(run.backend, run.train_set, np.arange(min(cfg.batch_size, len(run.train_set))))
        run.c_max = from_rank_0(run.backend, estimate_c_max(run.backend, run.model, x, y, cfg.eps))
    else:
        run.c_max = float(cfg.c_max)
    if run.files is not None:
        run.files.write_json(run.files.config, {**cfg.to_dict(), "c_max_used": run.c_max, "version": __version__})


def resume_from_checkpoint(run: Run, report: Reporter) -> None:
    """Continue the run in run.files: the saved options must be the same; c_max is the saved one;
    the model and optimiser come from the last checkpoint, metric lines after it are dropped."""
    files, cfg = run.files, run.cfg
    saved = files.read_json(files.config)
    differing = config_differences(saved, cfg.to_dict())
    if differing:
        raise ConfigError("--resume with options that differ from the saved run: "
                          + ", ".join(f"{k} ({saved.get(k)!r} saved, {getattr(cfg, k, None)!r} now)"
                                      for k in differing))
    run.c_max = saved.get("c_max_used")
    if not isinstance(run.c_max, (int, float)) or isinstance(run.c_max, bool):
        raise ConfigError(f"{files.config} records no c_max_used; it was not written by minidyn train")
    run.start_epoch, run.resume_state = load_resume_point(run, saved)
    files.remove_temporary_files()
    files.keep_metrics_before(run.start_epoch)
    settle_pending_best(files, cfg.backend, run.start_epoch)
    where = f"epoch {run.start_epoch + 1}" + (f", batch {run.resume_state.batches + 1}" if run.resume_state else "")
    report.note(f"resuming {files.path} at {where}" if run.start_epoch < cfg.epochs
                else f"{files.path}: all {cfg.epochs} epochs were trained; evaluating the final model")


def load_resume_point(run: Run, saved: dict) -> tuple[int, EpochState | None]:
    """Load the last checkpoint into the model and optimiser: (epochs done, state of the next
    epoch when it stopped midway). (0, None) when the run stopped before its first checkpoint
    (and has no history). The checkpoint's record of its run must agree with `saved` (the
    run's config.json) and with metrics.jsonl (RunDir.check_history)."""
    cfg, n = run.cfg, len(run.train_set)
    path = run.files.checkpoint(cfg.backend)
    if not path.exists():
        run.files.check_history(path, None)
        return 0, None
    meta = run.backend.load_checkpoint(str(path), run.model, run.optimizer)
    epoch = meta.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= cfg.epochs:
        raise CheckpointError(f"{path} records epoch {epoch!r}, not one of 0..{cfg.epochs}")
    check_recorded_options(path, meta, saved, run.files.config.name)
    run.files.check_history(path, epoch)
    progress = meta.get("progress")
    if progress is None:
        return epoch, None
    if epoch >= cfg.epochs or not isinstance(progress, dict):
        raise CheckpointError(f"{path} holds a mid-epoch state that does not fit the run")
    try:
        state = EpochState.from_meta(run.backend, progress, cfg.seed, epoch, n)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if state.batches > -(-n // cfg.batch_size):
        raise CheckpointError(f"{path} holds a mid-epoch state past the end of the epoch")
    return epoch, state


def settle_pending_best(files: RunDir, backend: str, committed: int) -> None:
    """On resume, after the metrics lines past the last checkpoint (`committed` epochs) were
    dropped: a pending best-on-validation checkpoint that the metrics kept call the best (a
    crash between the epoch's checkpoint and moving it into place) is moved into place; any
    other (written before a crash that lost its epoch's commit) is deleted, so that best-val
    is never an epoch the metrics do not call best."""
    pending = files.pending_bests()
    records = files.read_metrics() if pending else []
    best = best_on_validation(records)["epoch"] if records and "val_pgd_acc" in records[0] else None
    for epoch, path in sorted(pending.items()):
        if epoch <= committed and epoch == best:
            files.commit_best(backend, epoch)
        else:
            files.discard_pending_best(path)


def best_on_validation(records: list[dict]) -> dict:
    """The epoch (counted from 1) whose validation PGD accuracy is the highest (the first of
    ties), with its validation accuracies: what the best-on-validation checkpoint holds."""
    best = max(records, key=lambda r: (r["val_pgd_acc"], -r["epoch"]))
    return {"epoch": best["epoch"] + 1, "val_pgd_acc": best["val_pgd_acc"],
            "val_clean_acc": best["val_clean_acc"], "val_n": best["val_pgd_n"]}


def check_recorded_options(path, meta: dict, saved: dict, config_name: str) -> None:
    """CheckpointError where the checkpoint's meta records a RECORDED_OPTIONS value that differs
    from the saved config's (config.json edited after training); fields it lacks are not checked."""
    for key, option in RECORDED_OPTIONS.items():
        if key in meta and meta[key] != saved.get(option):
            raise CheckpointError(f"{path} was trained with {option} {meta[key]!r}, but {config_name} "
                                  f"says {saved.get(option)!r}; the run's files do not belong together")


def epoch_record(t: int, cfg: TrainConfig, plan: AttackPlan | None, lr: float, stats: EpochStats,
                 test: dict, seconds: float, watched: str = "test") -> dict:
    """The metrics.jsonl line of epoch t; `test` is the monitor's result on the test set, or on
    the validation set (`watched` "val": its keys are then val_clean_acc, ...)."""
    trained = plan is not None
    fosc = stats.fosc[np.isfinite(stats.fosc)]
    return {
        "epoch": t, "method": cfg.method,
        "c_t": plan.stop_fosc if trained else None,
        "pgd_steps": plan.steps if trained else 0,
        "lr": lr, "train_loss": stats.loss, "train_acc": stats.acc,
        "fosc_mean": float(fosc.mean()) if fosc.size else None,
        "fosc_median": float(np.median(fosc)) if fosc.size else None,
        "pgd_steps_mean": float(stats.steps.mean()),
        "grad_evals": stats.grad_evals,
        f"{watched}_clean_acc": test["clean_acc"], f"{watched}_clean_n": test["clean_n"],
        f"{watched}_pgd_acc": test["pgd_acc"], f"{watched}_pgd_n": test["pgd_n"], "seconds": seconds,
    }


def recorded_steps(backend: Backend, model: Model, optimizer, data: Dataset, cfg: TrainConfig,
                   t: int, plan: AttackPlan | None, state: EpochState) -> Iterator[Step]:
    """Algorithm 1 (train.train_epoch) on epoch t's batches of `data` (this rank's shares) from
    batch state.batches on, with the epoch's "attack" generator, the method's loss and its
    per-example weights (methods.loss_plan, runs/weights.py); each step is recorded in `state` and checked for a NaN loss (on every rank,
    the same batch), then yielded."""
    batches = epoch_batches(backend, data, state, t, cfg.seed, cfg.batch_size, cfg.augment)
    loss = loss_plan(method_of(cfg), t)
    for step in train_epoch(backend, model, optimizer, batches, plan, state.rngs["attack"],
                            eps=cfg.eps, record_fosc=cfg.record_fosc, loss=loss,
                            weights=loss_weighting(backend, model, loss, cfg.steps)):
        state.record(backend, step)
        check_finite_loss(backend, step.loss, t, state.batches)
        yield step


def standalone_epoch(backend: Backend, model: Model, optimizer, data: Dataset, cfg: TrainConfig,
                     t: int, plan: AttackPlan | None) -> EpochStats:
    """One epoch of Algorithm 1 outside a run (tests, benchmarks): `recorded_steps` from the
    epoch's first batch, the statistics summed over the ranks."""
    state = EpochState.begin(backend, cfg.seed, t, len(data))
    for _ in recorded_steps(backend, model, optimizer, data, cfg, t, plan, state):
        pass
    return state.stats(backend)


def method_of(cfg: TrainConfig, c_max: float | None = None) -> Method:
    """The training method `cfg` (resolved) names, with Dynamic's c_max: `c_max` (the run's
    resolved one) where given, else cfg.c_max (a number, not "auto")."""
    return Method(cfg.method, cfg.eps, cfg.steps, cfg.step_size, cfg.curriculum_epochs,
                  cfg.fgsm_epochs, cfg.dynamic_epochs, c_max if c_max is not None else cfg.c_max,
                  cfg.fosc_reference, epochs=cfg.epochs, stop=cfg.stop, loss_weights=cfg.loss_weights,
                  tau=cfg.tau, beta=cfg.beta, gairat_begin=cfg.gairat_begin, gairat_lambda=cfg.gairat_lambda)


def backend_from_config(cfg: TrainConfig) -> Backend:
    if cfg.backend == "torch":
        return get_backend("torch", device=cfg.device, attack_mode=cfg.attack_mode, **cfg.extras)
    if cfg.backend == "cupy" and cfg.device not in ("auto", "cpu"):
        return get_backend("cupy", device=cuda_index(cfg.device), **cfg.extras)
    return get_backend(cfg.backend, **cfg.extras)


def weights_are_finite(backend: Backend, model) -> bool:
    return all(np.isfinite(v).all() for v in backend.get_params(model).values() if v.dtype.kind == "f")


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
