"""Per-example loss weights, a plug-in of Algorithm 1: the authors' code of Dynamic
(`--loss-weights ce`) and GAIRAT's geometry-aware weights (`--method gairat`).

YisenWang/dynamic_adv_training trains with Keras' `sample_weight`; GAIRAT weights each
example by how few PGD iterates it survived. `loss_weighting` gives train.train_epoch the
`weights(x, y, attack)` callable of the epoch's LossPlan, or None for the plain mean loss.
"""
from __future__ import annotations

import numpy as np

from minidyn.backend import Backend, Model
from minidyn.errors import ConfigError
from minidyn.methods import LossPlan
from minidyn.train import Weights


def loss_weighting(backend: Backend, model: Model, plan: LossPlan, steps: int) -> Weights | None:
    """The epoch's `weights` for train.train_epoch: None (the mean loss) for plan.weights
    "none"; the authors' `ce_weights` of the point trained on for "ce"; GAIRAT's weights of the
    attack's kappa (K = `steps`, the run's PGD steps) for "gairat" (None on a clean batch).
    (methods.loss_plan already leaves out the first epoch of "ce" and GAIRAT's burn-in.)"""
    if plan.weights == "ce":
        return lambda x, y, attack: backend.asarray(ce_weights(backend, model, x, y))
    if plan.weights == "gairat":
        if steps < 2:
            raise ConfigError(f"GAIRAT's weights need PGD steps K >= 2 (they use K // 2), got {steps}")
        return lambda x, y, attack: None if attack is None else backend.asarray(
            gairat_weights(backend, backend.to_numpy(attack.kappa), steps, plan.lam))
    return None


def gairat_weights(backend: Backend, kappa: np.ndarray, steps: int, lam: float) -> np.ndarray:
    """GAIRAT's per-example weights for the batch (this rank's share); numpy (B,), float64.

    zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training (commit 16813b5), GAIR.py
    lines 5-9 ('Tanh', the default of GAIRAT.py line 35): with h = int(K / 2),
        r_i = (tanh(Lambda + 5 (h - kappa_i) / h) + 1) / 2,
    where kappa_i counts the PGD iterates x^0 .. x^{K-1} classified correctly (attacks.pgd
    kappa=True, GA_PGD's Kappa); GAIRAT.py line 146 then minimises mean_i(l_i r_i B / sum_j r_j)
    = sum_i r_i l_i / sum_j r_j, so the weights returned are r_i / sum_j r_j over the whole
    batch (every rank's under torchrun; the authors' code runs on one process).
    """
    half = int(steps / 2)
    r = (np.tanh(lam + (half - kappa.astype(np.float64)) * 5 / half) + 1) / 2
    total = float(backend.all_reduce_sum(np.array([r.sum()], dtype=np.float64))[0])
    return r / total


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
