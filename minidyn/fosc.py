"""FOSC: the First-Order Stationary Condition of the inner maximisation (paper, Section 3.1).

For an adversarial example x_k of a natural example x_0 and g = grad_x loss(h(x_k), y),

    c(x_k) = max_{x in X} <x - x_k, g>,       X = {x : ||x - x_0||_inf <= eps}      (Eq. 3)
           = eps * ||g||_1 - <x_k - x_0, g>                                         (Eq. 4)

A linear function over a box is maximised at a vertex: x = x_0 + eps * sign(g), which gives
Eq. 4. c >= 0 whenever x_k is in X, and c = 0 exactly at a first-order stationary point of the
constrained problem. Lower FOSC = better converged = stronger adversarial example.
See docs/fosc.md for the derivation.
"""
from __future__ import annotations

from minidyn.backend import Array, Backend, backend_for
from minidyn.projection import feasible_box


def fosc(x: Array, x0: Array, grad: Array, eps: float, bounds: tuple[float, float] | None = None,
         backend: Backend | None = None) -> Array:
    """Per-example FOSC, shape (B,), for x, x0, grad of shape (B, ...).

    `grad` must be each example's own gradient (of the sum of per-example losses, never the
    batch mean: a mean divides every c by B and changes the scale c_max refers to).

    bounds=None (the paper's definition, the default) maximises over the eps-ball alone.
    bounds=(lo, hi) maximises over the ball intersected with the pixel box [lo, hi]^d, the set
    PGD actually searches: per coordinate the maximiser is the upper corner min(x0+eps, hi)
    where g > 0 and the lower corner max(x0-eps, lo) where g < 0.
    backend: the backend of x (an attack passes its own); None finds one from x's type, so this
    works on numpy, cupy and torch arrays alike.
    """
    B = backend or backend_for(x)
    if bounds is None:
        return eps * B.sum_per_example(B.abs(grad)) - B.sum_per_example((x - x0) * grad)
    lower, upper = feasible_box(x0, eps, bounds, B)
    corner = B.where(grad > 0, upper, lower)
    return B.sum_per_example((corner - x) * grad)
