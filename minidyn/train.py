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
from minidyn.files.config import TrainConfig
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



def loss_weights_at(loss_weights: str, t: int) -> str:
    """The loss weighting of epoch t (0-based): `--loss-weights ce` weights from the second
    epoch on, the first is unweighted, as in the authors' code (YisenWang/dynamic_adv_training,
    train_models.py lines 124-127: `ep == 0` trains without sample_weight)."""
    return "none" if t == 0 else loss_weights


def ce_weights(backend: Backend, model: Model, x, y) -> np.ndarray:
    """The authors' per-example loss weights for the batch x (this rank's share), normalised
    as Keras 2.2.2 (their stated version) applies a sample_weight; numpy (B,), float64.

    YisenWang/dynamic_adv_training, train_models.py lines 116-117: p = the model's softmax at
    the adversarial batch in inference mode (`model.predict`), w_i = max_j -y_ij log(p_ij +
    1e-12) = max(-log(p_{i,y_i} + 1e-12), 0), each example's own cross-entropy, computed
    outside the graph (a constant: no gradient through it); line 127 trains with
    `sample_weight=w`. Keras then minimises mean_i(w_i l_i) / mean_i(w_i != 0) =
    sum_i w_i l_i / #{w_i != 0} (keras/engine/training_utils.py, weighted_masked_objective), so
    the weights returned are w_i / #{i: w_i != 0} over the whole batch (every rank's), and a
    batch of all-zero weights gets weights 0 (Keras divides by zero there).
    """
    z = backend.to_numpy(backend.logits(model, x)).astype(np.float64)
    labels = backend.to_numpy(y).astype(np.int64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    w = np.maximum(-np.log(p[np.arange(len(labels)), labels] + 1e-12), 0.0)
    nonzero = float(backend.all_reduce_sum(np.array([np.count_nonzero(w)], dtype=np.float64))[0])
    return w / nonzero if nonzero else np.zeros_like(w)


def train_epoch(backend: Backend, model: Model, optimizer, batches: Iterable[Batch],
                plan: AttackPlan | None, state: EpochState, *, eps: float,
                record_fosc: bool = True, loss_weights: str = "none") -> Iterator[float]:
    """Algorithm 1, one epoch: per batch, PGD with the FOSC stopping rule, then one SGD step.

    For each batch (x, y), with alpha = plan.step_size, K = plan.steps, c_t = plan.stop_fosc:
        x^0 = x + U(-eps, eps) (plan.random_start),  x^{k+1} = Proj(x^k + V * alpha * sign(g^k)),
        V_i = 0 once example i's FOSC c(x_i^k) <= c_t (Eq. 4; c_t None: never), k < K;
        theta <- theta - lr * grad_theta of the mean cross-entropy at each example's last x^k.
    loss_weights "ce" (`--loss-weights ce`, off by default; the caller passes
    loss_weights_at(cfg.loss_weights, t)) replaces the mean by sum_i v_i CE_i with the
    authors' weights v = ce_weights at the point trained on.
    `plan` None trains on the clean batch. Each example's FOSC and PGD steps, the loss, the
    correct count and the gradient evaluations go to `state`. Yields the batch's loss (summed
    over this process's examples) after each SGD step, so that the caller sees every step.
    """
    for batch in batches:
        x = batch.x
        if plan is not None:  # adversarial examples; each one stops once its FOSC <= c_t
            adv = pgd(model, batch.x, batch.y, eps=eps, step_size=plan.step_size, steps=plan.steps,
                      random_start=plan.random_start, stop_fosc=plan.stop_fosc,
                      final_stats=record_fosc, rng=state.rngs["attack"],
                      fosc_reference=plan.fosc_reference, backend=backend)
            x = adv.x_adv
            state.record_attack(backend, batch.index, adv)
        if loss_weights == "ce":
            weights = backend.asarray(ce_weights(backend, model, x, batch.y))
            batch_loss, batch_correct = backend.weighted_train_step(model, optimizer, x, batch.y, weights)
        else:
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
