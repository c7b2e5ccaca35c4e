"""The reference solutions, each one a call into minidyn's own implementation (nothing is
written twice): the oracle of the checks, and what the instructor's solution workspace
(`course start --solutions`) delegates to. Arrays are NumPy, computed in float64 by the checks.
"""
from __future__ import annotations

import numpy as np

from minidyn.attacks import pgd
from minidyn.backends import numpy_models as nm
from minidyn.backends.array import ArrayBackend, numpy_backend
from minidyn.fosc import fosc as library_fosc
from minidyn.projection import project as library_project
from minidyn.schedules import DynamicSchedule

_BACKEND = numpy_backend("float64")


def fosc(x_k, x_0, g, eps):
    """Task 1: Eq. 4 over the eps-ball, (B,)."""
    return library_fosc(x_k, x_0, g, eps, backend=_BACKEND)


def project(x, x_0, eps, lo=0.0, hi=1.0):
    """Task 2: the clip into the eps-ball of x_0 intersected with [lo, hi]^d."""
    return library_project(x, x_0, eps, (lo, hi), backend=_BACKEND)


def stop_mask(c, c_t):
    """Task 3: V (B,) bool, True where the example goes on (FOSC > c_t), as minidyn.attacks.pgd."""
    return np.asarray(c) > c_t


def pgd_step(x_k, x_0, g, v, eps, alpha):
    """Task 3: x^{k+1} = Proj(x^k + V * alpha * sign(g)) (minidyn.attacks.pgd's update line)."""
    v = np.asarray(v, dtype=bool).reshape((-1,) + (1,) * (np.ndim(x_k) - 1))
    return project(np.where(v, x_k + alpha * np.sign(g), x_k), x_0, eps)


def c_t(t, c_max, dynamic_epochs):
    """Task 4: DynamicSchedule(c_max, T').c_t(t)."""
    return DynamicSchedule(c_max, dynamic_epochs).c_t(t)


def softmax_cross_entropy(logits, y):
    """Task 5: (per-example losses (B,), d loss_i / d z_i (B, C))."""
    return nm.cross_entropy(np, logits, y)


def mlp_backward(params, cache, dlogits):
    """Task 5: LinearNet.backward with the parameters `params` -> (dL/dx, {name: dL/dparam})."""
    return _net(params).backward(cache, dlogits)


def mlp_forward(params, x):
    """The forward pass the stub hands out: LinearNet.forward -> (logits, cache)."""
    return _net(params).forward(x)


def _net(params) -> nm.LinearNet:
    net = nm.LinearNet.__new__(nm.LinearNet)  # the parameters are given, nothing to initialise
    net.xp, net.params, net.num_layers = np, params, len(params) // 2
    return net


class _GradientModel:
    """A model for minidyn.attacks.pgd whose gradients are the caller's `loss_and_grad`."""

    def __init__(self, loss_and_grad):
        self.loss_and_grad = loss_and_grad


class _CallerBackend(ArrayBackend):
    """The float64 numpy backend, its gradients taken from the model (`_GradientModel`)."""

    def loss_and_grad(self, model, x, y, loss="ce"):
        return model.loss_and_grad(x, y)


def attack_batch(loss_and_grad, x_0, y, *, eps, alpha, steps, c_t, rng):
    """Task 6: minidyn.attacks.pgd with Algorithm 1's stop -> (x_adv, steps taken (B,))."""
    backend = _CallerBackend(np, "numpy", "float64")
    out = pgd(_GradientModel(loss_and_grad), x_0, y, eps=eps, step_size=alpha, steps=steps,
              stop_fosc=c_t, rng=rng, backend=backend)
    return out.x_adv, np.asarray(out.steps)


def train_epoch(loss_and_grad, sgd_step, batches, *, c_t, eps, alpha, steps, rng):
    """Task 6: per batch the attack, then one SGD step on it (minidyn.train.train_epoch)."""
    taken = []
    for x, y in batches:
        x_adv, k = attack_batch(loss_and_grad, x, y, eps=eps, alpha=alpha, steps=steps, c_t=c_t, rng=rng)
        sgd_step(x_adv, y)
        taken.append(k)
    return taken
