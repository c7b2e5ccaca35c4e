"""One training loop for all five methods, written against the backend protocol.

`train_epoch` is Algorithm 1 of the paper (for Dynamic; the other methods differ only in the
`AttackPlan` they pass): for each mini-batch, craft adversarial examples with PGD, stopping
each example once its FOSC <= c_t, then take one SGD step on the adversarial batch.
`fit` runs the epochs, with the schedules, evaluation and the run directory.

Randomness is explicit and derived from (seed, epoch): the data order and the random starts of
epoch t depend on nothing else, so resuming at an epoch boundary reproduces the run exactly.
Within an epoch, `EpochState` holds what a mid-epoch checkpoint must add (the attack
generator's state, the batches done and the partial statistics), so resuming there is exact too.
"""
from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from minidyn.attacks import fgsm, pgd
from minidyn.backend import Backend, Model
from minidyn.config import TrainConfig
from minidyn.data import Dataset
from minidyn.errors import CheckpointError, NumericalError
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


# The generators an epoch draws from, with their epoch_seed streams (0 is the data order, 2 the
# evaluation). A mid-epoch checkpoint saves the state of each one; add new ones here.
RNG_STREAMS = {"attack": 1}


@dataclass
class EpochState:
    """An epoch in progress: its random generators and what the batches so far measured.

    This is everything a mid-epoch checkpoint must hold besides the model and optimiser (the
    data order is derived from (seed, epoch) again): `to_meta` makes it JSON, `from_meta`
    restores it, and training continues at batch `batches` exactly as if never interrupted.
    """

    rngs: dict           # the epoch's backend generators, by name (see RNG_STREAMS)
    fosc: np.ndarray     # (N,) float32, NaN where not recorded (yet)
    steps: np.ndarray    # (N,) int64
    batches: int = 0     # mini-batches trained so far
    loss_sum: float = 0.0
    correct: int = 0
    grad_evals: int = 0

    @classmethod
    def begin(cls, B: Backend, seed: int, t: int, n: int) -> "EpochState":
        rngs = {name: B.rng(epoch_seed(seed, t, stream)) for name, stream in RNG_STREAMS.items()}
        return cls(rngs, np.full(n, np.nan, dtype=np.float32), np.zeros(n, dtype=np.int64))

    def record_attack(self, B: Backend, idx: np.ndarray, adv) -> None:
        self.grad_evals += adv.grad_evals
        self.steps[idx] = B.to_numpy(adv.steps)
        if adv.fosc is not None:
            self.fosc[idx] = B.to_numpy(adv.fosc)

    def record_step(self, batch_loss: float, batch_correct: int) -> None:
        self.loss_sum += batch_loss
        self.correct += batch_correct
        self.batches += 1

    def stats(self) -> EpochStats:
        n = len(self.steps)
        return EpochStats(self.loss_sum / n, 100.0 * self.correct / n, self.grad_evals,
                          self.fosc, self.steps)

    def to_meta(self, B: Backend) -> dict:
        """JSON-able: counters, the generator state, and fosc/steps as base64 bytes (exact)."""
        return {"batches": self.batches, "loss_sum": self.loss_sum, "correct": self.correct,
                "grad_evals": self.grad_evals,
                "rngs": {name: B.rng_state(rng) for name, rng in self.rngs.items()},
                "fosc": pack_array(self.fosc), "steps": pack_array(self.steps)}

    @classmethod
    def from_meta(cls, B: Backend, meta: dict, seed: int, t: int, n: int) -> "EpochState":
        """The state to_meta saved, checked against an epoch of n examples; CheckpointError if not."""
        state = cls.begin(B, seed, t, n)
        try:
            fosc, steps = unpack_array(meta["fosc"]), unpack_array(meta["steps"])
            state.batches, state.loss_sum = int(meta["batches"]), float(meta["loss_sum"])
            state.correct, state.grad_evals = int(meta["correct"]), int(meta["grad_evals"])
            rng_states = dict(meta["rngs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the checkpoint's mid-epoch state is damaged ({type(exc).__name__}: {exc})") from None
        if fosc.shape != (n,) or fosc.dtype != np.float32 or steps.shape != (n,) or steps.dtype != np.int64 \
                or state.batches < 0 or set(rng_states) != set(state.rngs):
            raise CheckpointError(f"the checkpoint's mid-epoch state is not one of an epoch of {n} examples")
        for name, rng in state.rngs.items():
            B.set_rng_state(rng, rng_states[name])
        state.fosc[:], state.steps[:] = fosc, steps
        return state


def pack_array(a: np.ndarray) -> dict:
    """A numpy array as JSON: dtype, shape and its bytes in base64 (bit-exact, NaN included)."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def unpack_array(d: dict) -> np.ndarray:
    """The array pack_array encoded; ValueError/TypeError/KeyError if `d` is not one."""
    dtype = np.dtype(d["dtype"])
    if dtype.kind not in "fiub":
        raise ValueError(f"unexpected dtype {dtype}")
    raw = base64.b64decode(d["base64"], validate=True)
    return np.frombuffer(raw, dtype=dtype).reshape([int(s) for s in d["shape"]]).copy()


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
        x, y = to_backend(B, data, idx)
        if plan is not None:  # adversarial examples; each one stops once its FOSC <= c_t
            adv = pgd(model, x, y, eps=cfg.eps, step_size=plan.step_size, steps=plan.steps,
                      random_start=plan.random_start, stop_fosc=plan.stop_fosc,
                      final_stats=cfg.record_fosc, rng=state.rngs["attack"], backend=B)
            x = adv.x_adv
            state.record_attack(B, idx, adv)
        batch_loss, batch_correct = B.train_step(model, optimizer, x, y)  # SGD on the batch
        check_finite_loss(batch_loss, t, batch)
        state.record_step(batch_loss, batch_correct)
        if on_step:
            on_step(state)
        if on_batch:
            on_batch(len(idx), len(data))
    return state.stats()


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
