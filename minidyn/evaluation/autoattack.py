"""AutoAttack's standard suite (Croce & Hein, ICML 2020) as one cascade of the attack table's rows.

    from minidyn.evaluation.attack_table import ATTACKS
    result = cascade(backend, model, x, y, stages=[ATTACKS[s] for s in STANDARD], eps=0.3, rng=rng)
    result.stage       # numpy int (B,): 0 misclassified at x, k broken by the k-th stage, 5 robust

The standard version runs, in this order, APGD-CE (100 iterations, 1 restart), APGD-T (targeted
DLR, 9 targets x 100 iterations), FAB-T (9 targets, 100 iterations) and Square (5,000 queries),
each only on the examples that the natural point and every earlier stage left correctly
classified, deciding by a forward pass of the points the stage returned; the robust accuracy
after each stage is the share still correct (cumulative), the last one AutoAttack's number.

Reference: fra31/auto-attack, commit a392200, autoattack/autoattack.py: `run_standard_evaluation`
(lines 81-260: the clean pass, lines 121-144; the loop over attacks on the examples still
robust, lines 155-240) and `set_version('standard')` (lines 306-320). Read, not copied.
Deviations:
- Each stage is minidyn's attack of the same name (`minidyn.apgd`, `minidyn.fab`,
  `minidyn.square`) with its own listed deviations; the stages draw their random numbers from
  one generator in turn (the reference reseeds torch's global generator with `seed` before
  each attack).
- restarts R (`minidyn eval --restarts`) runs each stage with a random start up to R times,
  each on the examples still robust, like the reference's `n_restarts` (1 in the standard
  version); a stage without one (FAB-T's first run starts at x) runs once.
- The cascade works on one batch: the evaluation streams the test set batch by batch and runs
  every stage on a batch's robust examples before the next batch (the reference runs each
  attack over the whole set first); each example's stages are the same.
- Returned points: the point of the stage that broke an example, x for one misclassified at x
  (as the reference), and for one never broken the last stage's point (the reference returns
  x; the verdict is the same, and the attack's point carries more to another model).
- The checks the reference makes before attacking (randomness, output range, dynamic model,
  classes) are minidyn eval's own sanity checks; its check that Square lowered the accuracy
  after the gradient stages (`checks.check_square_sr`, alpha 0.2 points) is a sanity flag.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from minidyn.backend import Array, Backend, Model

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")  # autoattack.py line 307
VERSION = "standard"
SQUARE_ALPHA = 0.2  # percentage points: checks.check_square_sr's alpha (0.002)


@dataclass
class CascadeResult:
    """x_adv: (B, ...) the returned points (module docstring). fooled: (B,) bool backend array,
    broken by some stage according to the cascade's forward passes. stage: numpy int (B,), 0 for
    an example misclassified at x, k for one the k-th stage broke, len(stages) + 1 for one never
    broken. contradicted: examples a stage recorded as misclassified that its forward pass
    classified correctly (they go on to the next stage)."""

    x_adv: Array
    fooled: Array
    stage: np.ndarray
    contradicted: int = 0

    def correct_after(self, k: int) -> np.ndarray:
        """bool (B,): still correctly classified after stage k (k = 0: the natural point)."""
        return self.stage > k


def cascade(backend: Backend, model: Model, x: Array, y: Array, *, stages: Sequence, eps: float,
            rng=None, apgd_steps: int = 100, restarts: int = 1) -> CascadeResult:
    """Run the `stages` (attack-table rows, `Attack`) in order, each on the examples of x (B, ...)
    with labels y (B,) that are still correctly classified (see the module docstring)."""
    n, robust = int(x.shape[0]), len(stages) + 1
    x_adv = backend.take(x, backend.arange(n))
    stage = np.where(backend.to_numpy(backend.argmax(backend.logits(model, x)) == y), robust, 0)
    contradicted = 0
    for k, attack in enumerate(stages, start=1):
        for _ in range(restarts if attack.random_start else 1):
            rows = np.nonzero(stage == robust)[0]
            if rows.size == 0:
                break
            at = backend.asarray(rows)
            y_rows = backend.take(y, at)
            points, fooled = attack.craft(backend, model, backend.take(x, at), y_rows, eps=eps, rng=rng,
                                          apgd_steps=apgd_steps)
            verdict = backend.to_numpy(backend.argmax(backend.logits(model, points)) == y_rows)
            if fooled is not None:
                contradicted += int((backend.to_numpy(fooled) & verdict).sum())
            backend.put(x_adv, at, points)
            stage[rows[~verdict]] = k
    return CascadeResult(x_adv, backend.asarray(stage != robust), stage, contradicted)


def stage_accuracies(stage_correct: dict) -> dict:
    """{stage: accuracy in percent} of {stage: bool (n,)} (the cumulative robust accuracies)."""
    return {name: 100.0 * int(np.sum(c)) / c.size if c.size else float("nan")
            for name, c in stage_correct.items()}


def square_flag(accuracies: dict, label: str = "AutoAttack") -> str | None:
    """AutoAttack's check_square_sr: Square, which uses no gradient, lowered the robust accuracy
    after the gradient stages by more than SQUARE_ALPHA points; None otherwise."""
    if "square" not in accuracies or len(accuracies) <= 2:
        return None
    before = min(v for k, v in accuracies.items() if k != "square")
    if accuracies["square"] >= before - SQUARE_ALPHA:
        return None
    return (f"{label}: Square lowered the robust accuracy after the gradient attacks from {before:.2f}% "
            f"to {accuracies['square']:.2f}%: the gradients mislead the gradient attacks (masking), "
            "so the number is unreliable; run Square with more queries and restarts, or an adaptive attack")
