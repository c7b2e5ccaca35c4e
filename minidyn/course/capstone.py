"""The capstone, `minidyn course run DIR`: the NumPy MLP trained by Dynamic Adversarial Training
on the embedded MNIST sample with the student's pieces in place of minidyn's, into an ordinary
run directory (config.json, metrics.jsonl, fosc/, checkpoint.npz, summary.json) that
`minidyn eval` and `minidyn analyze` read.

Where the student's code goes (nothing in minidyn's algorithm modules or run layer changes):
    the gradients   `StudentBackend`, the numpy backend with its `loss_and_grad` and
                    `train_step` computed by the student's softmax_cross_entropy and mlp_backward
                    (Task 5): every gradient of the attack and of SGD
    c_t             the student's c_t (Task 4), epoch by epoch
    the epoch       the student's train_epoch (Task 6), hence their attack_batch, fosc (Task 1),
                    stop_mask and pgd_step (Task 3) and project (Task 2)
and this module's loop (`capstone_loop`) is the run layer's epoch loop (runs.loop.epoch_loop)
rebuilt from its public parts around the student's epoch. The monitor, the final evaluation and
the files are minidyn's own: the student's model is measured by the reference code.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from minidyn.attacks import AttackResult
from minidyn.backends.array import ArrayBackend
from minidyn.course.grader import Settings, grade, load_module, student_frame
from minidyn.course.tasks import CAPSTONE_NEEDS, task_named
from minidyn.errors import ConfigError, MinidynError
from minidyn.files.config import TrainConfig
from minidyn.methods import AttackPlan
from minidyn.runs.distributed import check_finite_loss
from minidyn.runs.epoch_state import epoch_batches
from minidyn.runs.loop import Run, epoch_record, setup, start
from minidyn.runs.monitor import monitor
from minidyn.runs.reporter import Reporter
from minidyn.schedules import StepLR

# The default budget: 2 epochs on 4,000 digits, the monitor on 200 test examples, the final PGD
# on 500 (docs/course.md gives its time on a 2-core CPU).
BUDGET = {"epochs": 2, "limit": 4000, "eval_limit": 200, "final_eval_limit": 500}


@dataclass(frozen=True)
class Pieces:
    """The student's functions the capstone trains with."""

    fosc: Callable
    project: Callable
    c_t: Callable
    softmax_cross_entropy: Callable
    mlp_backward: Callable
    train_epoch: Callable
    folder: Path


def load_pieces(folder: str | os.PathLike, settings: Settings = Settings(max_examples=25)) -> Pieces:
    """The student's pieces, once every task the capstone needs passes its check; ConfigError
    naming the first task that does not."""
    results = grade(folder, [task_named(n) for n in CAPSTONE_NEEDS], settings)
    for result in results:
        if not result.passed:
            task = result.task
            raise ConfigError(f"the capstone needs Task {task.number} ({task.key}, {task.module}.py), which does not "
                              f"pass its check yet: run `minidyn course check {task.number} --dir {folder}`")
    path = Path(folder)
    modules = {n: load_module(path, task_named(n).module) for n in CAPSTONE_NEEDS}
    return Pieces(modules[1].fosc, modules[2].project, modules[4].c_t, modules[5].softmax_cross_entropy,
                  modules[5].mlp_backward, modules[6].train_epoch, path)


class StudentBackend(ArrayBackend):
    """The numpy backend whose gradients are the student's (Task 5): the cross-entropy's
    gradient and the MLP's backward pass, for the attack (d loss_i / d x_i) and for SGD."""

    def __init__(self, pieces: Pieces, dtype: str = "float32"):
        super().__init__(np, "numpy", dtype)
        self.pieces = pieces

    def loss_and_grad(self, model, x, y, loss="ce"):
        if loss != "ce":
            return super().loss_and_grad(model, x, y, loss)
        logits, cache = model.forward(x)
        losses, dlogits = self.pieces.softmax_cross_entropy(logits, y)
        dx, _ = self.pieces.mlp_backward(model.params, cache, dlogits)
        return np.asarray(losses), np.asarray(dx)

    def train_step(self, model, optimizer, x, y, batch_size=None, weights=None):
        """One SGD step on the batch-mean cross-entropy (the student's per-example gradients
        divided by the batch size here, as ArrayBackend.train_step does)."""
        logits, cache = model.forward(x)
        losses, dlogits = self.pieces.softmax_cross_entropy(logits, y)
        _, grads = self.pieces.mlp_backward(model.params, cache, np.asarray(dlogits) / (batch_size or x.shape[0]))
        optimizer.step({name: np.asarray(g, dtype=model.params[name].dtype) for name, g in grads.items()})
        return float(np.sum(losses)), self.count(logits.argmax(axis=1) == y)


def capstone_config(epochs: int, limit: int, seed: int, eval_limit: int = BUDGET["final_eval_limit"]) -> TrainConfig:
    """Dynamic training of the NumPy MLP on the embedded MNIST sample: the paper's MNIST settings
    (eps 0.3, PGD-10 with step eps/4, c_max 0.5, SGD lr 0.01 with momentum 0.9) on a small budget.
    eval_limit: test examples attacked by PGD-20 at the end (the per-epoch monitor: at most 200)."""
    return TrainConfig(backend="numpy", model="mlp", dataset="mnist-sample", method="dynamic", epochs=epochs,
                       limit=limit, seed=seed, eval_limit=min(eval_limit, BUDGET["eval_limit"]),
                       final_eval_limit=eval_limit).resolved()


def train_capstone(folder: str | os.PathLike, out: str | os.PathLike, *, epochs: int = BUDGET["epochs"],
                   limit: int = BUDGET["limit"], seed: int = 0, eval_limit: int = BUDGET["final_eval_limit"],
                   reporter: Reporter | None = None, pieces: Pieces | None = None) -> dict:
    """Train with the student's pieces of `folder` into the run directory `out`; the summary."""
    pieces = pieces or load_pieces(folder)
    report = reporter or Reporter()
    run = setup(capstone_config(epochs, limit, seed, eval_limit), out, False, None)
    try:
        start(run, False, report)
        return capstone_loop(run, StudentBackend(pieces), pieces, report)
    finally:
        run.files.unlock()  # taken by setup


def capstone_loop(run: Run, student: StudentBackend, pieces: Pieces, report: Reporter) -> dict:
    """runs.loop.epoch_loop with the student's c_t and epoch: per epoch the lr, c_t, the
    student's train_epoch (each SGD step recorded and NaN-checked), minidyn's monitor, the metrics
    line, fosc/ and the checkpoint; then minidyn's final evaluation and summary.json."""
    cfg = run.cfg
    lr_schedule = StepLR(cfg.lr, tuple(cfg.lr_milestones))
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(cfg.epochs):
            started, lr = time.perf_counter(), lr_schedule.at(t)
            student.set_lr(run.optimizer, lr)
            c_t = float(pieces.c_t(t, run.c_max, cfg.dynamic_epochs))
            state = run.epoch_state(t)
            student_epoch(run, student, pieces, t, c_t, state, report)
            stats = state.stats(run.backend)
            watch = monitor(run.backend, run.model, run.test_set, eps=cfg.eps, steps=cfg.eval_steps,
                            batch_size=cfg.batch_size, seed=cfg.seed, limit=cfg.eval_limit)
            plan = AttackPlan(cfg.steps, cfg.step_size, random_start=True, stop_fosc=c_t)
            record = epoch_record(t, cfg, plan, lr, stats, watch, time.perf_counter() - started)
            run.check_weights(f"in epoch {t + 1}")
            run.files.save_fosc(t, stats.fosc)
            run.files.log(record)
            run.save_checkpoint(t + 1)
            report.epoch(record)
        final = monitor(run.backend, run.model, run.test_set, eps=cfg.eps, steps=cfg.eval_steps,
                        batch_size=cfg.batch_size, seed=cfg.seed, limit=cfg.final_eval_limit)
    summary = {"eps": cfg.eps, "epochs": cfg.epochs, "c_max_used": run.c_max,
               "test_clean_acc": final["clean_acc"], f"test_pgd{cfg.eval_steps}_acc": final["pgd_acc"],
               "test_n": len(run.test_set), "test_pgd_n": final["pgd_n"]}
    run.files.write_json(run.files.summary, summary)
    return summary


def student_epoch(run: Run, student: StudentBackend, pieces: Pieces, t: int, c_t: float, state, report) -> None:
    """Epoch t by the student's train_epoch; each SGD step (the student's gradients) is recorded in
    `state` as train.train_epoch's steps are: loss, correct count, each example's FOSC at the
    point trained on (the student's fosc and gradient) and its PGD steps, and the gradient
    evaluations the student's code spent (a masked loop, as the paper writes it, spends K per
    example where minidyn's spends only the steps taken: the metrics show the difference)."""
    cfg, n, current = run.cfg, len(run.train_set), []
    dtype = student.float_dtype

    def batches():
        for batch in epoch_batches(run.backend, run.train_set, state, t, cfg.seed, cfg.batch_size):
            current.append(batch)
            yield batch.x, batch.y

    def sgd_step(x_adv, y):
        batch = current[-1]
        x_adv = np.asarray(x_adv, dtype=dtype)
        _, g = student.loss_and_grad(run.model, x_adv, batch.y)
        state.grad_evals += len(x_adv)
        fosc = np.asarray(pieces.fosc(x_adv, batch.x, g, cfg.eps), dtype=np.float64)
        loss, correct = student.train_step(run.model, run.optimizer, x_adv, batch.y, batch.size)
        state.record_attack(run.backend, batch.index, AttackResult(x_adv, fosc, None, np.zeros(len(y), int), 0))
        state.record_step(loss, correct)
        check_finite_loss(run.backend, loss, t, state.batches)
        report.progress(t, min(n, state.batches * cfg.batch_size), n)

    def loss_and_grad(x, y):
        state.grad_evals += len(x)  # what the student's attack spends, per example evaluated
        return student.loss_and_grad(run.model, np.asarray(x, dtype=dtype), y)

    try:
        taken = list(pieces.train_epoch(loss_and_grad, sgd_step, batches(), c_t=c_t, eps=cfg.eps,
                                        alpha=cfg.step_size, steps=cfg.steps, rng=state.rngs["attack"]))
    except MinidynError:
        raise
    except Exception as error:  # noqa: BLE001 - the student's code on MNIST-shaped batches
        raise ConfigError(f"your code raised {type(error).__name__} in epoch {t + 1} of the capstone: {error} "
                          f"({student_frame(error, pieces.folder)})") from None
    if len(taken) != len(current):
        raise ConfigError(f"your train_epoch returned {len(taken)} steps_taken arrays for {len(current)} batches")
    for batch, steps in zip(current, taken):
        state.steps[batch.index] = np.asarray(steps, dtype=np.int64)
