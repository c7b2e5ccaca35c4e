"""One training loop for all five methods, written against the backend protocol.

`train_epoch` is Algorithm 1 of the paper (for Dynamic; the other methods differ only in the
`AttackPlan` they pass): for each mini-batch, craft adversarial examples with PGD, stopping
each example once its FOSC <= c_t, then take one SGD step on the adversarial batch.
`fit` runs the epochs, with the schedules, evaluation and the run directory.

Randomness is explicit and derived from (seed, epoch): the data order and the random starts of
epoch t depend on nothing else, so resuming at an epoch boundary reproduces the run exactly.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from minidyn.attacks import fgsm, pgd
from minidyn.backend import Backend, Model
from minidyn.config import TrainConfig
from minidyn.data import Dataset
from minidyn.errors import NumericalError
from minidyn.methods import AttackPlan, attack_plan
from minidyn.schedules import StepLR


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """An independent 32-bit seed for (run seed, epoch, stream): 0 data order, 1 attacks, 2 eval."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def to_backend(B: Backend, data: Dataset, idx: np.ndarray):
    """Examples idx of a uint8 dataset -> (x float in [0, 1], y int) on the backend's device."""
    return B.asarray(data.x[idx], dtype="float") / 255.0, B.asarray(data.y[idx])


def batch_indices(order: np.ndarray, batch_size: int):
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


@dataclass
class EpochStats:
    """What one epoch of training measured; fosc/steps are per training example (dataset order)."""

    loss: float
    acc: float
    grad_evals: int
    fosc: np.ndarray   # (N,) float32, FOSC of the example trained on; NaN where not recorded
    steps: np.ndarray  # (N,) int, PGD steps each example took


def train_epoch(B: Backend, model: Model, optimizer, data: Dataset, cfg: TrainConfig, t: int,
                plan: AttackPlan | None, on_batch: Callable[[int, int], None] | None = None) -> EpochStats:
    """Algorithm 1, one epoch: per batch, PGD with the FOSC stopping rule, then one SGD step."""
    order = np.random.default_rng(epoch_seed(cfg.seed, t, 0)).permutation(len(data))
    attack_rng = B.rng(epoch_seed(cfg.seed, t, 1))
    fosc_all = np.full(len(data), np.nan, dtype=np.float32)
    steps_all = np.zeros(len(data), dtype=np.int64)
    loss_sum, correct, evals = 0.0, 0, 0
    for batch, idx in enumerate(batch_indices(order, cfg.batch_size)):
        x, y = to_backend(B, data, idx)
        if plan is not None:
            adv = pgd(model, x, y, eps=cfg.eps, step_size=plan.step_size, steps=plan.steps,
                      random_start=plan.random_start, stop_fosc=plan.stop_fosc,
                      final_stats=cfg.record_fosc, rng=attack_rng, backend=B)
            x, evals = adv.x_adv, evals + adv.grad_evals
            steps_all[idx] = B.to_numpy(adv.steps)
            if adv.fosc is not None:
                fosc_all[idx] = B.to_numpy(adv.fosc)
        batch_loss, batch_correct = B.train_step(model, optimizer, x, y)
        if not math.isfinite(batch_loss):
            raise NumericalError(f"training loss became {batch_loss} at epoch {t}, batch {batch}; "
                                 "lower --lr (the last good checkpoint is kept)")
        loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
        if on_batch:
            on_batch(len(idx), len(data))
    n = len(data)
    return EpochStats(loss_sum / n, 100.0 * correct / n, evals, fosc_all, steps_all)


def evaluate(B: Backend, model: Model, data: Dataset, *, eps: float, steps: int, batch_size: int,
             seed: int, limit: int | None = None) -> dict:
    """Clean accuracy on all of `data` and PGD-`steps` accuracy (step eps/4, random start) on its
    first `limit` examples, in percent."""
    rng = B.rng(epoch_seed(seed, 0, 2))
    n_adv = len(data) if limit is None else min(limit, len(data))
    clean = robust = 0
    for idx in batch_indices(np.arange(len(data)), batch_size):
        x, y = to_backend(B, data, idx)
        clean += B.count(B.argmax(B.logits(model, x)) == y)
    for idx in batch_indices(np.arange(n_adv), batch_size):
        x, y = to_backend(B, data, idx)
        adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=steps, rng=rng,
                  final_stats=False, backend=B)
        robust += B.count(B.argmax(B.logits(model, adv.x_adv)) == y)
    return {"clean_acc": 100.0 * clean / len(data), "pgd_acc": 100.0 * robust / n_adv, "pgd_n": n_adv}


def estimate_c_max(B: Backend, model: Model, data: Dataset, cfg: TrainConfig) -> float:
    """The paper's estimate of c_max: the mean FOSC of FGSM examples on one batch."""
    x, y = to_backend(B, data, np.arange(min(cfg.batch_size, len(data))))
    adv = fgsm(model, x, y, eps=cfg.eps, final_stats=True, backend=B)
    return float(B.to_numpy(adv.fosc).mean())


def epoch_record(t: int, cfg: TrainConfig, plan: AttackPlan | None, lr: float, stats: EpochStats,
                 test: dict, seconds: float) -> dict:
    """The metrics.jsonl line of epoch t."""
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
        "test_clean_acc": test["clean_acc"], "test_pgd_acc": test["pgd_acc"],
        "test_pgd_n": test["pgd_n"], "seconds": seconds,
    }


def fit(cfg: TrainConfig, B: Backend, model: Model, optimizer, train_set: Dataset,
        test_set: Dataset, *, c_max: float, start_epoch: int = 0,
        end_of_epoch: Callable[[int, dict, EpochStats], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
    """Train epochs start_epoch .. cfg.epochs-1; call end_of_epoch(t, record, stats) after each."""
    lr_schedule = StepLR(cfg.lr, tuple(cfg.lr_milestones))
    history = []
    for t in range(start_epoch, cfg.epochs):
        start = time.perf_counter()
        lr = lr_schedule.at(t)
        B.set_lr(optimizer, lr)
        plan = attack_plan(cfg, t, c_max)
        stats = train_epoch(B, model, optimizer, train_set, cfg, t, plan, on_batch)
        test = evaluate(B, model, test_set, eps=cfg.eps, steps=cfg.eval_steps,
                        batch_size=cfg.batch_size, seed=cfg.seed, limit=cfg.eval_limit)
        record = epoch_record(t, cfg, plan, lr, stats, test, time.perf_counter() - start)
        history.append(record)
        if end_of_epoch:
            end_of_epoch(t, record, stats)
    return history
