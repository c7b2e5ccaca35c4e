"""One training loop for all five methods, written against the backend protocol.

`train_epoch` is Algorithm 1 of the paper (for Dynamic; the other methods differ only in the
`AttackPlan` they pass): for each mini-batch, craft adversarial examples with PGD, stopping
each example once its FOSC <= c_t, then take one SGD step on the adversarial batch.
`fit` runs the epochs, with the schedules, evaluation and the run directory.

Randomness is explicit and derived from (seed, epoch): the data order and the random starts of
epoch t depend on nothing else, so resuming at an epoch boundary reproduces the run exactly.
Within an epoch, `EpochState` (epoch_state.py) holds what a mid-epoch checkpoint must add (the
generators' state, the batches done and the partial statistics), so resuming there is exact too.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from minidyn.attacks import fgsm, pgd
from minidyn.backend import Backend, Model
from minidyn.config import TrainConfig
from minidyn.data import Dataset
from minidyn.data.batches import batch_indices, to_backend
from minidyn.epoch_state import EpochState, EpochStats, epoch_seed, gather_json
from minidyn.errors import NumericalError
from minidyn.methods import AttackPlan, attack_plan
from minidyn.schedules import StepLR


def check_finite_loss(batch_loss: float, t: int, batch: int) -> None:
    if not math.isfinite(batch_loss):
        raise NumericalError(f"training loss became {batch_loss} at epoch {t + 1}, batch {batch + 1}; "
                             "lower --lr (the last good checkpoint is kept)")


def train_epoch(B: Backend, model: Model, optimizer, data: Dataset, cfg: TrainConfig, t: int,
                plan: AttackPlan | None, on_batch: Callable[[int, int], None] | None = None, *,
                resume: EpochState | None = None,
                on_step: Callable[[EpochState], None] | None = None) -> EpochStats:
    """Algorithm 1, one epoch: per batch, PGD with the FOSC stopping rule, then one SGD step.

    `resume` continues the epoch from a mid-epoch checkpoint's state; `on_step(state)` is
    called after every SGD step (that is where mid-epoch checkpoints are written).
    """
    order = np.random.default_rng(epoch_seed(cfg.seed, t, 0)).permutation(len(data))
    state = resume if resume is not None else EpochState.begin(B, cfg.seed, t, len(data))
    for batch, idx in enumerate(batch_indices(order, cfg.batch_size)):
        if batch < state.batches:
            continue  # trained before the checkpoint this epoch resumed from
        mine = np.array_split(idx, B.world_size)[B.rank]  # this process's share (torchrun)
        x, y = to_backend(B, data, mine)
        if cfg.augment:  # random crop and flip (CIFAR-10), before the attack
            x = B.crop_flip(x, state.rngs["augment"])
        if plan is not None:  # adversarial examples; each one stops once its FOSC <= c_t
            adv = pgd(model, x, y, eps=cfg.eps, step_size=plan.step_size, steps=plan.steps,
                      random_start=plan.random_start, stop_fosc=plan.stop_fosc,
                      final_stats=cfg.record_fosc, rng=state.rngs["attack"], backend=B)
            x = adv.x_adv
            state.record_attack(B, mine, adv)
        batch_loss, batch_correct = B.train_step(model, optimizer, x, y, len(idx))  # SGD on the batch
        # summed over the ranks under torchrun, so that every rank stops at the same batch
        # (a rank that stopped alone would leave the others waiting in the next all-reduce)
        check_finite_loss(float(B.all_reduce_sum(np.array([batch_loss]))[0]), t, batch)
        state.record_step(batch_loss, batch_correct)
        if on_step:
            on_step(state)
        if on_batch:
            on_batch(len(idx), len(data))
    return state.stats(B)


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
    return {"clean_acc": 100.0 * clean / len(data), "clean_n": len(data),
            "pgd_acc": 100.0 * robust / n_adv, "pgd_n": n_adv}


def estimate_c_max(B: Backend, model: Model, data: Dataset, cfg: TrainConfig) -> float:
    """The paper's estimate of c_max: the mean FOSC of FGSM examples on one batch. Under torchrun
    every rank takes rank 0's estimate, so c_t agrees on every rank even where GPU kernels are
    not deterministic."""
    x, y = to_backend(B, data, np.arange(min(cfg.batch_size, len(data))))
    adv = fgsm(model, x, y, eps=cfg.eps, final_stats=True, backend=B)
    return gather_json(B, float(B.to_numpy(adv.fosc).mean()))[0]


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
        "test_clean_acc": test["clean_acc"], "test_clean_n": test["clean_n"],
        "test_pgd_acc": test["pgd_acc"], "test_pgd_n": test["pgd_n"], "seconds": seconds,
    }


def fit(cfg: TrainConfig, B: Backend, model: Model, optimizer, train_set: Dataset,
        test_set: Dataset, *, c_max: float, start_epoch: int = 0, resume: EpochState | None = None,
        end_of_epoch: Callable[[int, dict, EpochStats], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        on_step: Callable[[int, EpochState], None] | None = None) -> list[dict]:
    """Train epochs start_epoch .. cfg.epochs-1; call end_of_epoch(t, record, stats) after each.

    `resume` is the saved state of epoch start_epoch when it stopped midway; on_step(t, state)
    is called after every SGD step.
    """
    lr_schedule = StepLR(cfg.lr, tuple(cfg.lr_milestones))
    history = []
    for t in range(start_epoch, cfg.epochs):
        start = time.perf_counter()
        lr = lr_schedule.at(t)
        B.set_lr(optimizer, lr)
        plan = attack_plan(cfg, t, c_max)
        step_hook = (lambda state, t=t: on_step(t, state)) if on_step else None
        stats = train_epoch(B, model, optimizer, train_set, cfg, t, plan, on_batch,
                            resume=resume if t == start_epoch else None, on_step=step_hook)
        test = evaluate(B, model, test_set, eps=cfg.eps, steps=cfg.eval_steps,
                        batch_size=cfg.batch_size, seed=cfg.seed, limit=cfg.eval_limit)
        record = epoch_record(t, cfg, plan, lr, stats, test, time.perf_counter() - start)
        history.append(record)
        if end_of_epoch:
            end_of_epoch(t, record, stats)
    return history
