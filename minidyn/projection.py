"""Projection onto the feasible set of the inner maximisation.

The set is the l_inf ball of radius eps around x0 intersected with the pixel box [lo, hi]^d
(images live in [0, 1]). Both are boxes, so their intersection is the box
[max(x0 - eps, lo), min(x0 + eps, hi)] and the Euclidean projection onto it is a coordinate-wise
clip. It is non-empty whenever x0 itself lies in [lo, hi].
"""
from __future__ import annotations

from minidyn.backend import Array, Backend, backend_for


def project(x: Array, x0: Array, eps: float, bounds: tuple[float, float] = (0.0, 1.0),
            backend: Backend | None = None) -> Array:
    """Clip x (B, ...) into {z : ||z - x0||_inf <= eps} intersected with [lo, hi]^d."""
    B = backend or backend_for(x)
    lo, hi = bounds
    return B.clip(B.clip(x, x0 - eps, x0 + eps), lo, hi)
