"""Algorithm 1 of the paper: one epoch of Dynamic Adversarial Training (`train_epoch`).

For each mini-batch, craft adversarial examples with PGD, stopping each example once its
FOSC <= c_t (Eq. 4, fosc.py), then take one SGD step on the adversarial batch. The other
methods differ only in the `AttackPlan` and `LossPlan` they pass (methods.py): the attack's
objective, start and stop rule, and the loss of the SGD step (TRADES' and MART's take the
natural batch too) with its per-example weights (a plug-in the run passes). The run around it
(minidyn/runs/loop.py) chooses the batches, c_t and the lr, records what each step measured,
checks every step and writes the run directory; nothing here knows of a run.

Randomness is explicit: the random starts come from the generator the caller passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from minidyn.attacks import AttackResult, fgsm, pgd
from minidyn.backend import Array, Backend, Model
from minidyn.methods import AttackPlan, LossPlan

# A per-batch loss weighting: (the point trained on, its labels, the attack's result or None) ->
# weights (B,) on the backend, or None for the plain mean loss. runs/weights.py holds the
# authors' code's (Dynamic) and GAIRAT's.
Weights = Callable[[Array, Array, "AttackResult | None"], "Array | None"]


@dataclass(frozen=True)
class Batch:
    """One mini-batch (this process's share of it under torchrun, all of it otherwise)."""

    x: Any                  # (b, C, H, W) backend float array in [0, 1]
    y: Any                  # (b,) backend int labels
    size: int | None = None  # examples in the global batch, over all ranks (the mean loss's
    #                          divisor); None: b
    index: Any = None       # (b,) int, the examples' positions in the training set, if known


@dataclass(frozen=True)
class Step:
    """What one SGD step of Algorithm 1 measured."""

    batch: Batch
    attack: AttackResult | None  # the adversarial examples trained on (None: the clean batch)
    loss: float                  # the batch's loss, summed over this process's examples
    correct: int                 # this process's examples classified correctly


def train_epoch(backend: Backend, model: Model, optimizer, batches: Iterable[Batch],
                plan: AttackPlan | None, rng, *, eps: float, record_fosc: bool = True,
                weights: Weights | None = None, loss: LossPlan | None = None) -> Iterator[Step]:
    """Algorithm 1, one epoch: per batch, PGD with the FOSC stopping rule, then one SGD step.

    For each batch (x, y), with alpha = plan.step_size, K = plan.steps, c_t = plan.stop_fosc:
        x^0 = x + U(-eps, eps) (plan.random_start),  x^{k+1} = Proj(x^k + V * alpha * sign(g^k)),
        V_i = 0 once example i's FOSC c(x_i^k) <= c_t (Eq. 4; c_t None: never), k < K;
        theta <- theta - lr * grad_theta of the mean cross-entropy at each example's last x^k.
    `plan` None trains on the clean batch. `rng`: the backend generator of the random starts.
    The family's parts (methods.py): plan.loss, plan.start, plan.stop_tau and plan.kappa choose
    the attack's objective, start, FAT's stop and GAIRAT's count; `loss` (None: the mean
    cross-entropy) the SGD step's loss (loss.outer "trades"/"mart" also take the natural x).
    record_fosc: each example's FOSC at its last point is measured (one gradient more).
    `weights` (None: the mean loss) replaces the mean by sum_i w_i l_i, w = weights(x^K, y, the
    attack's result) at the point trained on (runs/weights.py).
    Yields a `Step` after each SGD step, so that the caller sees (and records) every step.
    """
    natural = loss is not None and loss.outer != "ce"  # TRADES, MART: the loss sees x too
    for batch in batches:
        x, adv = batch.x, None
        if plan is not None:  # adversarial examples; each one stops once its FOSC <= c_t
            adv = pgd(model, batch.x, batch.y, eps=eps, step_size=plan.step_size, steps=plan.steps,
                      random_start=plan.random_start, stop_fosc=plan.stop_fosc,
                      final_stats=record_fosc, rng=rng, fosc_reference=plan.fosc_reference,
                      loss=plan.loss, start=plan.start, stop_tau=plan.stop_tau, kappa=plan.kappa,
                      omega=plan.omega, backend=backend)
            x = adv.x_adv
        w = weights(x, batch.y, adv) if weights is not None else None
        outer = dict(outer=loss.outer, x_natural=batch.x, beta=loss.beta) if natural else {}
        step_loss, correct = backend.train_step(model, optimizer, x, batch.y, batch.size, weights=w, **outer)
        yield Step(batch, adv, step_loss, correct)


def estimate_c_max(backend: Backend, model: Model, x: Array, y: Array, eps: float) -> float:
    """The paper's estimate of c_max: the mean FOSC of FGSM examples of the batch (x, y) (the
    run passes the first batch of its training set; a torchrun run takes rank 0's)."""
    adv = fgsm(model, x, y, eps=eps, final_stats=True, backend=backend)
    return float(backend.to_numpy(adv.fosc).mean())
