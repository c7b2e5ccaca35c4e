"""Projection onto the feasible set of the inner maximisation.

The set is the l_inf ball of radius eps around x0 intersected with the pixel box [lo, hi]^d
(images live in [0, 1]). Both are boxes, so their intersection is the box

    [lower, upper] = [max(x0 - eps, lo), min(x0 + eps, hi)]      (for x0 in [lo, hi]^d)

and the Euclidean projection onto it is a coordinate-wise clip. Attacks compute the box once
(`feasible_box`) and clip into it at every step.
"""
from __future__ import annotations

from minidyn.backend import Array, Backend, backend_for


def is_eps(eps: float, *, zero: bool = False) -> bool:
    """Whether eps is an L_inf budget on pixels in [0, 1]: a number in (0, 1], or in [0, 1] with
    `zero` (an attack accepts eps 0). The one test of eps's range: the attacks (attacks.check_eps),
    the evaluation, study specs, result files and the CLI all call it, each with its own message.
    """
    return 0 <= eps <= 1 if zero else 0 < eps <= 1


def feasible_box(x0: Array, eps: float, bounds: tuple[float, float] = (0.0, 1.0),
                 backend: Backend | None = None) -> tuple[Array, Array]:
    """(lower, upper), each of x0's shape (B, ...): the feasible set as per-coordinate bounds.

    Computed as clip(x0 -+ eps, lo, hi), which equals the formula above whenever x0 is in the
    pixel box and keeps lower <= upper (a non-empty box inside [lo, hi]^d) even when it is not.
    """
    B = backend or backend_for(x0)
    lo, hi = bounds
    return B.clip(x0 - eps, lo, hi), B.clip(x0 + eps, lo, hi)


def project(x: Array, x0: Array, eps: float, bounds: tuple[float, float] = (0.0, 1.0),
            backend: Backend | None = None) -> Array:
    """Clip x (B, ...) into {z : ||z - x0||_inf <= eps} intersected with [lo, hi]^d."""
    B = backend or backend_for(x)
    return B.clip(x, *feasible_box(x0, eps, bounds, B))
