"""FOSC as a convergence check of an attack: how far its final points are from stationary.

An iterative white-box attack maximises a loss f over S = {x : ||x - x0||_inf <= eps} intersected
with [0, 1]^d. At its final point x_k, with g = grad_x f(x_k), the FOSC of the set it searches is

    c(x_k) = max_{x in S} <x - x_k, g>                       (paper Eq. 3; Eq. 4 over S:
           = sum_i g_i (corner_i - x_k,i),                   corner_i = min(x0_i + eps, 1) where
                                                             g_i > 0, max(x0_i - eps, 0) else)

(`minidyn.fosc.fosc` with bounds (0, 1)): the first-order gain still on offer, 0 exactly at a
stationary point. It is reported relative to

    c(x0) = max_{x in S} <x - x0, g> = eps * ||g||_1          inside [0, 1]^d (Eq. 4 at x_k = x0),

the gain a full FGSM step from the natural point would promise along the same g; where the pixel
box clips the ball (an MNIST pixel at 0 cannot move down), c(x0) counts only the moves S allows,
so a point converged into the box's corner reads 0, not the share of eps * ||g||_1 no attack may
take. The normalised FOSC r = c(x_k) / c(x0) is 1 at x0 (and, in expectation, at a uniform random
start), 0 at a stationary point (2 at the worst vertex of the ball).

Threshold: a point is *not converged* when r > THRESHOLD = 0.25. Along a fixed gradient each PGD
step of eps/4 in the direction sign(g) lowers r by 0.25 (from 1 at x0 to 0 at the best vertex after
four), so r > 0.25 means the point is more than one such step, first order, from where the attack
is heading. An attack is flagged when more than SHARE = 50% of its points are not converged, i.e.
when the median r exceeds 0.25: the typical point it left correct is still far from stationary,
so more steps or restarts are due. Measured (docs/evaluation.md, tests/evaluation/
test_convergence.py: an MLP trained naturally on 2,000 MNIST-sample digits, eps 0.05, the first
200 test digits): the median r of PGD-1 is 0.67, PGD-2 0.43 (accuracy 83.0% against 69.5% under
PGD-100), PGD-5 0.04, PGD-10 0.0007, PGD-100 0.0002; on an adversarially trained MLP (eps 0.1)
PGD-10, CW-30 and APGD-CE leave medians of 0.003, 0.002 and 0.001, nine points in ten below 0.02. The
paper's 0.5 (c_max) is a FOSC in the units of the loss, not this ratio.

Which points: those the attack left correctly classified. A misclassified point has done its
job, and white-box APGD stops at its first misclassified iterate, which is far from stationary
by design; a survivor that is far from stationary is a failure that more steps may turn. The
loss is the one the attack maximises (`Attack.stationary`: cross-entropy for PGD and APGD-CE,
the margin for CW, DLR for APGD-DLR, the targeted DLR towards the last target for APGD-T, whose
survivors return the last run's point). Cost: one gradient evaluation per point checked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minidyn.backend import Array, Backend, Model
from minidyn.fosc import fosc

THRESHOLD = 0.25  # r above this: the point is not converged
SHARE = 0.5      # flag an attack when more than this share of its points is not converged
BOUNDS = (0.0, 1.0)


def normalised_fosc(backend: Backend, x_adv: Array, x0: Array, grad: Array, eps: float,
                    bounds: tuple[float, float] = BOUNDS) -> np.ndarray:
    """r = c(x_adv) / c(x0), numpy float64 (B,), for x_adv, x0, grad (B, ...) of one backend:
    the FOSC over the eps-ball intersected with `bounds` (module docstring) relative to its value
    at the natural point along the same gradient, eps * ||g||_1 where the box does not clip.
    r = 0 where c(x0) = 0 (a zero gradient, or one pointing out of the box everywhere)."""
    c = backend.to_numpy(fosc(x_adv, x0, grad, eps, bounds=bounds, backend=backend)).astype(np.float64)
    reach = backend.to_numpy(fosc(x0, x0, grad, eps, bounds=bounds, backend=backend)).astype(np.float64)
    out = np.zeros_like(c)
    np.divide(c, reach, out=out, where=reach > 0)
    return out


def fosc_of_points(backend: Backend, model: Model, x_adv: Array, x0: Array, y: Array, eps: float,
                   loss: str = "ce", target: Array | None = None) -> np.ndarray:
    """Normalised FOSC (B,) of the points x_adv (B, ...) of natural examples x0 with labels y
    under `loss` (and its `target` classes for a targeted loss): one gradient evaluation each."""
    if int(x_adv.shape[0]) == 0:
        return np.zeros(0)
    kwargs = {} if target is None else {"target": target}
    _, grad = backend.loss_and_grad(model, x_adv, y, loss, **kwargs)
    return normalised_fosc(backend, x_adv, x0, grad, eps)


@dataclass
class FoscSummary:
    """The FOSC distribution of one attack's points: n points checked, their median normalised
    FOSC r (None without points) and the share (0..1) with r > THRESHOLD."""

    n: int
    median: float | None
    above: float | None

    @classmethod
    def of(cls, r: np.ndarray) -> "FoscSummary":
        r = np.asarray(r, dtype=np.float64)
        if r.size == 0:
            return cls(0, None, None)
        return cls(int(r.size), float(np.median(r)), float(np.mean(r > THRESHOLD)))

    @property
    def converged(self) -> bool:
        """False when more than SHARE of the points are not converged (nothing to say: True)."""
        return self.above is None or self.above <= SHARE

    def to_dict(self) -> dict:
        return {"n": self.n, "median": self.median, "above": self.above, "threshold": THRESHOLD}


def convergence_flag(label: str, summary: dict) -> str | None:
    """The sentence `minidyn eval` prints for attack `label` whose summary (FoscSummary.to_dict())
    shows it far from stationary; None when it is not."""
    above = summary.get("above")
    if above is None or above <= SHARE:
        return None
    return (f"{label} not converged: {100 * above:.0f}% of the {summary['n']} points it left correct "
            f"have a normalised FOSC above {summary.get('threshold', THRESHOLD):g} (median "
            f"{summary['median']:.2f}; 0 is stationary): more steps or restarts are due, and its "
            "accuracy overstates the robustness")
