"""The authors' per-example loss weights (`--loss-weights ce`), a plug-in of Algorithm 1.

YisenWang/dynamic_adv_training trains with Keras' `sample_weight`; `loss_weighting` gives
train.train_epoch the `weights(x, y)` callable that reproduces it, or None for the paper's
plain mean loss (the default).
"""
from __future__ import annotations

import numpy as np

from minidyn.backend import Backend, Model
from minidyn.train import Weights


def loss_weights_at(loss_weights: str, t: int) -> str:
    """The loss weighting of epoch t (0-based): `--loss-weights ce` weights from the second
    epoch on, the first is unweighted, as in the authors' code (YisenWang/dynamic_adv_training,
    train_models.py lines 124-127: `ep == 0` trains without sample_weight)."""
    return "none" if t == 0 else loss_weights


def loss_weighting(backend: Backend, model: Model, loss_weights: str, t: int) -> Weights | None:
    """Epoch t's `weights` for train.train_epoch: None (the mean loss) unless
    loss_weights_at(loss_weights, t) is "ce", then the authors' `ce_weights` of the point
    trained on, as a backend array."""
    if loss_weights_at(loss_weights, t) != "ce":
        return None
    return lambda x, y: backend.asarray(ce_weights(backend, model, x, y))


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
