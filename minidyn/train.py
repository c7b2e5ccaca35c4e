"""Algorithm 1 of the paper, and the test accuracy that monitors training (`monitor`).

`train_epoch` is Algorithm 1 for one epoch (for Dynamic; the other methods differ only in the
`AttackPlan` they pass, see methods.py): for each mini-batch, craft adversarial examples with
PGD, stopping each example once its FOSC <= c_t (Eq. 4, fosc.py), then take one SGD step on
the adversarial batch. The run loop around it (minidyn/runs/loop.py) chooses the batches, c_t and the lr,
checks every step and writes the run directory.

Randomness is explicit: the random starts come from the epoch's "attack" generator
(epoch_state.EpochState), the monitor's from a generator of its own seeded by the run's
seed, so neither depends on anything but (seed, epoch).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from minidyn.attacks import fgsm, pgd
from minidyn.backend import Backend, Model
from minidyn.config import TrainConfig
from minidyn.data import Dataset
from minidyn.data.batches import batch_indices, to_backend
from minidyn.methods import AttackPlan

if TYPE_CHECKING:  # the run layer's types; it imports this module, not the reverse
    from minidyn.runs.epoch_state import Batch, EpochState


def epoch_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """An independent 32-bit seed for (run seed, epoch, stream): 0 data order, 1 attacks,
    2 evaluation, 3 augmentation. Ranks > 0 of a torchrun job get streams of their own."""
    key = [seed, epoch, stream] + ([rank] if rank else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])



def train_epoch(backend: Backend, model: Model, optimizer, batches: Iterable[Batch],
                plan: AttackPlan | None, state: EpochState, *, eps: float,
                record_fosc: bool = True) -> Iterator[float]:
    """Algorithm 1, one epoch: per batch, PGD with the FOSC stopping rule, then one SGD step.

    For each batch (x, y), with alpha = plan.step_size, K = plan.steps, c_t = plan.stop_fosc:
        x^0 = x + U(-eps, eps) (plan.random_start),  x^{k+1} = Proj(x^k + V * alpha * sign(g^k)),
        V_i = 0 once example i's FOSC c(x_i^k) <= c_t (Eq. 4; c_t None: never), k < K;
        theta <- theta - lr * grad_theta of the mean cross-entropy at each example's last x^k.
    `plan` None trains on the clean batch. Each example's FOSC and PGD steps, the loss, the
    correct count and the gradient evaluations go to `state`. Yields the batch's loss (summed
    over this process's examples) after each SGD step, so that the caller sees every step.
    """
    for batch in batches:
        x = batch.x
        if plan is not None:  # adversarial examples; each one stops once its FOSC <= c_t
            adv = pgd(model, batch.x, batch.y, eps=eps, step_size=plan.step_size, steps=plan.steps,
                      random_start=plan.random_start, stop_fosc=plan.stop_fosc,
                      final_stats=record_fosc, rng=state.rngs["attack"], backend=backend)
            x = adv.x_adv
            state.record_attack(backend, batch.index, adv)
        batch_loss, batch_correct = backend.train_step(model, optimizer, x, batch.y, batch.size)
        state.record_step(batch_loss, batch_correct)
        yield batch_loss


def monitor(backend: Backend, model: Model, data: Dataset, *, eps: float, steps: int,
            batch_size: int, seed: int, limit: int | None = None) -> dict:
    """Clean accuracy on all of `data` and PGD-`steps` accuracy (step eps/4, random start) on its
    first `limit` examples, in percent, with their counts: the test accuracy a run measures
    after every epoch and, on more examples, at the end (minidyn.evaluation.evaluate is the full
    evaluation of a trained model)."""
    rng = backend.rng(epoch_seed(seed, 0, 2))
    n_adv = len(data) if limit is None else min(limit, len(data))
    clean = robust = 0
    for idx in batch_indices(np.arange(len(data)), batch_size):
        x, y = to_backend(backend, data, idx)
        clean += backend.count(backend.argmax(backend.logits(model, x)) == y)
    for idx in batch_indices(np.arange(n_adv), batch_size):
        x, y = to_backend(backend, data, idx)
        adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=steps, rng=rng,
                  final_stats=False, backend=backend)
        robust += backend.count(backend.argmax(backend.logits(model, adv.x_adv)) == y)
    return {"clean_acc": 100.0 * clean / len(data), "clean_n": len(data),
            "pgd_acc": 100.0 * robust / n_adv, "pgd_n": n_adv}


def estimate_c_max(backend: Backend, model: Model, data: Dataset, cfg: TrainConfig) -> float:
    """The paper's estimate of c_max: the mean FOSC of FGSM examples on the first batch of
    `data` (this process's; a torchrun run takes rank 0's, see minidyn/runs/loop.py)."""
    x, y = to_backend(backend, data, np.arange(min(cfg.batch_size, len(data))))
    adv = fgsm(model, x, y, eps=cfg.eps, final_stats=True, backend=backend)
    return float(backend.to_numpy(adv.fosc).mean())
