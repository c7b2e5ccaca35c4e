"""L_inf attacks: FGSM, PGD (with the FOSC stopping rule of Algorithm 1) and CW_inf.

Every attack is PGD with different settings, so there is one loop, `pgd`:

    x^0     = project(x_0 + U(-eps, eps))                    (random start, optional)
    x^{k+1} = project(x^k + alpha * sign(grad_x loss(x^k)))   (k = 0 .. K-1)

With `stop_fosc=c_t` it is the inner loop of Algorithm 1 (Dynamic Adversarial Training): after
each step the FOSC of every example is computed from the gradient that the next step needs
anyway, and an example with c(x^k) <= c_t stops where it is. Stopped examples cost nothing:
when some stop, the loop writes their points to the output and keeps working on the smaller
batch of the still-active rows, so gradients are evaluated only for them. Because the
backend's gradients are per example (attacks run the model in eval mode), the result is
identical to the paper's masked full-batch update x + V * alpha * sign(g).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minidyn.backend import Array, Backend, Model, backend_for
from minidyn.errors import ConfigError
from minidyn.fosc import fosc
from minidyn.projection import feasible_box


@dataclass
class Trace:
    """FOSC and loss of every example at every point x^0 .. x^K, numpy (K+1, B); NaN once stopped."""

    fosc: np.ndarray
    loss: np.ndarray


@dataclass
class AttackResult:
    """What an attack returns. Arrays are on the attack's backend unless stated otherwise.

    x_adv:      (B, ...) adversarial batch.
    fosc:       (B,) FOSC at x_adv (the point where each example stopped), or None when
                final_stats=False.
    loss:       (B,) per-example loss at x_adv, or None when final_stats=False.
    steps:      (B,) int, the PGD steps each example took (K unless it stopped early).
    grad_evals: int, per-example gradient evaluations spent (a batch of 128 costs 128).
    trace:      per-step FOSC and loss when trace=True, else None.
    """

    x_adv: Array
    fosc: Array | None
    loss: Array | None
    steps: Array
    grad_evals: int
    trace: Trace | None = None


def _check(eps: float, step_size: float, steps: int) -> None:
    # eps 0 is allowed (with step size 0): every attack must then return x itself, which is
    # what the eps-0 sanity check of minidyn.evaluate verifies
    if not 0 <= eps <= 1:
        raise ConfigError(f"eps must be in [0, 1], got {eps}")
    if not (step_size > 0 or step_size == eps == 0):
        raise ConfigError(f"step size must be > 0, got {step_size}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")


def pgd(model: Model, x: Array, y: Array, *, eps: float, step_size: float, steps: int,
        random_start: bool = True, loss: str = "ce", stop_fosc: float | None = None,
        final_stats: bool = False, trace: bool = False, bounds: tuple[float, float] = (0.0, 1.0),
        rng=None, backend: Backend | None = None) -> AttackResult:
    """Projected gradient ascent on `loss` within the eps-ball of x (B, ...) and [0, 1]^d.

    x: (B, ...) natural examples x_0 in `bounds`; y: (B,) integer labels; eps, step_size: in
    the units of x (pixels in [0, 1]); steps: K.

    stop_fosc: None runs every example for `steps` steps (Madry's PGD); a number c_t stops each
               example after the first step at which FOSC <= c_t (Algorithm 1).
    final_stats: also return FOSC and loss at x_adv (off by default, as in fgsm and cw). Plain
               PGD spends exactly B * steps gradient evaluations; final_stats adds one more
               for examples that never stopped.
    trace:     also return `Trace`: FOSC and loss of every example at every point x^0 .. x^K,
               numpy arrays (K + 1, B), row k at x^k (NaN after an example stopped). Costs
               the one extra gradient evaluation of the last point, like final_stats.
    bounds:    the pixel box (lo, hi) the iterates are projected into, with the eps-ball.

    FOSC here (the stop rule, final_stats and the trace) is always the paper's Eq. 4 over the
    eps-ball alone, c(x^k) = eps ||g||_1 - <x^k - x_0, g>, whatever `bounds` is: the box
    changes where PGD may go, not how FOSC is measured. The FOSC over the set PGD actually
    searches, the ball intersected with the box, is `minidyn.fosc(..., bounds=(0, 1))`; it is
    never larger, and much smaller where pixels sit on the box's faces (MNIST's are mostly 0 or
    1), because the box removes the vertices that push pixels outside [0, 1] (docs/fosc.md).
    rng:       the backend generator for the random start (default: a fixed seed 0).
    """
    _check(eps, step_size, steps)
    B = backend or backend_for(x)
    n = int(x.shape[0])
    box = feasible_box(x, eps, bounds, B)    # the ball around x_0 = x, intersected with the pixel box
    start = x + B.uniform(rng if rng is not None else B.rng(0), tuple(x.shape), -eps, eps) \
        if random_start else x
    # The active rows, compacted: x^k, x_0, y and the box of each example still moving.
    active = B.arange(n)
    x_adv, taken = B.clip(start, *box), B.zeros((n,), dtype="int")  # x^0; rows written as they stop
    xa, x0a, ya, lower, upper = x_adv, x, y, *box
    c_out, loss_out = B.full((n,), float("nan")), B.full((n,), float("nan"))
    tr = Trace(np.full((steps + 1, n), np.nan), np.full((steps + 1, n), np.nan)) if trace else None
    evals = 0
    for k in range(steps + 1):
        last = k == steps
        if last and not (final_stats or trace):
            break
        losses, g = B.loss_and_grad(model, xa, ya, loss)
        evals += int(active.shape[0])
        check = stop_fosc is not None and 0 < k < steps  # Algorithm 1's stop check, after a step
        if check or trace or last:
            c = fosc(xa, x0a, g, eps)
            if tr is not None:
                idx = B.to_numpy(active)
                tr.fosc[k, idx], tr.loss[k, idx] = B.to_numpy(c), B.to_numpy(losses)
            keep = B.nonzero(c > stop_fosc) if check else None  # V = 0 where FOSC <= c_t
            if last or (keep is not None and int(keep.shape[0]) < int(active.shape[0])):
                # some rows stop here (at the end: all): record x^k, its FOSC and loss for every
                # active row; rows that go on overwrite theirs when they stop or at the end
                B.put(c_out, active, c)
                B.put(loss_out, active, losses)
                if last:
                    break
                B.put(x_adv, active, xa)
                B.put(taken, active, k)
                active, xa, x0a, ya, lower, upper, g = (
                    B.take(a, keep) for a in (active, xa, x0a, ya, lower, upper, g))
                if int(active.shape[0]) == 0:
                    break
        xa = B.clip(xa + step_size * B.sign(g), lower, upper)  # x^{k+1} = project(x^k + alpha sign(g))
    if int(active.shape[0]) == n:              # nobody stopped: no scatter needed
        x_adv, taken = xa, B.full((n,), steps, dtype="int")
    elif int(active.shape[0]) > 0:             # the rows that never stopped took every step
        B.put(x_adv, active, xa)
        B.put(taken, active, steps)
    done = final_stats or trace
    return AttackResult(x_adv, c_out if done else None, loss_out if done else None, taken, evals, tr)


def fgsm(model: Model, x: Array, y: Array, *, eps: float, loss: str = "ce",
         final_stats: bool = False, backend: Backend | None = None) -> AttackResult:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size eps from x."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, loss=loss,
               final_stats=final_stats, backend=backend)


def cw_inf(model: Model, x: Array, y: Array, *, eps: float, steps: int = 30,
           step_size: float | None = None, rng=None, final_stats: bool = False,
           backend: Backend | None = None) -> AttackResult:
    """CW_inf as in the paper: PGD for 30 steps (step eps/4, random start) on the
    Carlini-Wagner margin loss max_{j != y} z_j - z_y."""
    return pgd(model, x, y, eps=eps, step_size=step_size or eps / 4, steps=steps, loss="cw",
               rng=rng, final_stats=final_stats, backend=backend)
