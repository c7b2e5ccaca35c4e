"""L_inf attacks: FGSM, PGD (with the FOSC stopping rule of Algorithm 1) and CW_inf.

Every attack is PGD with different settings, so there is one loop, `pgd`:

    x^0     = project(x_0 + U(-eps, eps))                    (random start, optional;
                                                              fosc_reference="start": unprojected)
    x^{k+1} = project(x^k + alpha * sign(grad_x loss(x^k)))   (k = 0 .. K-1)

With `stop_fosc=c_t` it is the inner loop of Algorithm 1 (Dynamic Adversarial Training): after
each step the FOSC of every example is computed from the gradient that the next step needs
anyway, and an example with c(x^k) <= c_t stops where it is. Stopped examples cost nothing:
when some stop, the loop writes their points to the output and keeps working on the smaller
batch of the still-active rows (`minidyn.active`), so gradients are evaluated only for them.
Because the backend's gradients are per example (attacks run the model in eval mode), the
result is identical to the paper's masked full-batch update x + V * alpha * sign(g).

FOSC here (the stop rule, final_stats and the trace) is always the paper's Eq. 4 over the
eps-ball alone, c(x^k) = eps ||g||_1 - <x^k - x_0, g>, whatever `bounds` is: the box changes
where PGD may go, not how FOSC is measured. The FOSC over the set PGD actually searches, the
ball intersected with the box, is `minidyn.fosc(..., bounds=(0, 1))`; it is never larger, and
much smaller where pixels sit on the box's faces (MNIST's are mostly 0 or 1), because the box
removes the vertices that push pixels outside [0, 1] (docs/fosc.md).

`fosc_reference="start"` (training's `--fosc-reference start`, off by default) is the loop of
the authors' code (YisenWang/dynamic_adv_training, commit 470210e, pgd_attack.py,
`LinfPGDAttack.perturb`, lines 41-101): the random start x_0 + u, u ~ U(-eps, eps)^d, is NOT
projected into the box; the first gradient is taken there and the first step is taken from
there, and FOSC is measured from it, c(x^k) = eps ||g||_1 - <x^k - (x_0 + u), g>, which can be
negative. The noise u is the same draw as under "natural", which projects the start first.
Line by line, against `pgd(..., fosc_reference="start")`:

    45      x = x_nat + U(-eps, eps), not clipped: the same here, but u comes from the backend
            generator `rng` (the authors': numpy's global np.random, over the batch passed)
    59, 62  batch_x and original_batch_x (FOSC's reference) are that unclipped start: the same
    65-69   the first gradient at the unclipped start, the first step from it: the same
    74-75   clip into the eps-ball of x_nat, then into [clip_min, clip_max] (train_models.py
            lines 84-85: the training set's min and max): the same as one clip into
            `feasible_box` (identical numbers for x_nat inside the box); `bounds` is the box
    77      the gradient at every x^1 .. x^K, of every example, stopped or not (K + 1
            evaluations per example): minidyn evaluates only the active examples, and at x^K
            only for final_stats/trace (grad_evals counts what it spends). Same points.
    84-88   FOSC = eps ||g||_1 - <x^k - x^0, g> over the flattened example, with g the gradient
            of the summed per-example losses (line 39): the same (minidyn.fosc, Eq. 4, the ball)
    90-92, 70-72  the mask from FOSC at x^j gates step j + 1 (first at x^1, never at x^0); a
            masked example does not move, so its FOSC stays and it stays stopped. minidyn stops
            an example at the first k in 1 .. K-1 with c(x^k) <= c_t and drops it from the
            batch: the same points and steps (with deterministic gradients). FOSC at x^K is
            computed there but gates nothing: here it is computed only for final_stats/trace.
    72      the mask is repeated 32*32*3 times: the authors' loop runs on CIFAR-10 shapes only;
            minidyn on any shape
    94-97   fosc_batch (B, K) holds FOSC at x^1 .. x^K, repeated after a stop; `Trace` holds
            x^0 .. x^K with NaN after the stop, and out.fosc the value at the point returned
    30      the loss is -sum_j y_j log(softmax_j + 1e-20); minidyn's cross-entropy has no 1e-20
            (the gradients differ by the factor p_y / (p_y + 1e-20): float rounding unless
            p_y < 1e-12). Their 'cw' loss (lines 32-35, -relu(z_y - max_j (1 - y_j) z_j +
            kappa), not used for training: train_models.py line 83) differs from minidyn's
            margin max_{j != y} z_j - z_y.
    45      x_nat (float32) + float64 noise: the authors step and clip in float64 and feed
            float32 to the model; minidyn computes in the backend's dtype (float32 by default)

tests/test_authors_switches.py transcribes lines 44-99 in NumPy and checks that pgd matches it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minidyn.active import ActiveSet
from minidyn.backend import Array, Backend, Model, backend_for
from minidyn.errors import ConfigError
from minidyn.fosc import fosc
from minidyn.methods import FOSC_REFERENCES
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


def check_eps(eps: float, *, zero: bool = False) -> None:
    """ConfigError unless eps is an L_inf budget on pixels in [0, 1]: in (0, 1], or [0, 1] with
    `zero` (an attack accepts eps 0, see check_settings). The one check of eps's range."""
    if not (0 <= eps <= 1 if zero else 0 < eps <= 1):
        raise ConfigError(f"eps must be in {'[' if zero else '('}0, 1], got {eps}")


def check_settings(eps: float, step_size: float, steps: int) -> None:
    """ConfigError unless eps is in [0, 1], the step size > 0 (or 0 with eps 0) and steps >= 1."""
    # eps 0 is allowed (with step size 0): every attack must then return x itself, which is
    # what the eps-0 sanity check of minidyn.evaluation.evaluate verifies
    check_eps(eps, zero=True)
    if not (step_size > 0 or step_size == eps == 0):
        raise ConfigError(f"step size must be > 0, got {step_size}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")


def start_point(x: Array, eps: float, lower: Array, upper: Array, random_start: bool, rng,
                backend: Backend) -> Array:
    """x^0 = P(x_0 + u), u ~ U(-eps, eps)^d: uniform in the eps-ball, then projected into the
    feasible box [lower, upper] (each of x's shape (B, ...)); u = 0 without random_start.

    rng: the backend generator the noise is drawn from (default: a fixed seed 0).
    """
    return backend.clip(uniform_start(x, eps, random_start, rng, backend), lower, upper)


def uniform_start(x: Array, eps: float, random_start: bool, rng, backend: Backend) -> Array:
    """x_0 + u, u ~ U(-eps, eps)^d, before any projection (x itself without random_start); the
    draw `start_point` projects and the authors' code starts from (module docstring)."""
    if not random_start:
        return x
    rng = rng if rng is not None else backend.rng(0)
    return x + backend.uniform(rng, tuple(x.shape), -eps, eps)


def start_and_reference(x: Array, eps: float, lower: Array, upper: Array, random_start: bool,
                        rng, fosc_reference: str, backend: Backend) -> tuple[Array, Array]:
    """(x^0, FOSC's reference point) for x (B, ...): the paper's x^0 = P(x_0 + u) with FOSC
    measured from x_0; with fosc_reference="start" the authors' unprojected x_0 + u for both
    (module docstring). The same draw u either way."""
    if fosc_reference not in FOSC_REFERENCES:
        raise ConfigError(f"fosc_reference must be one of {', '.join(FOSC_REFERENCES)}, got {fosc_reference!r}")
    x_start = uniform_start(x, eps, random_start, rng, backend)
    if fosc_reference == "start":
        return x_start, x_start
    return backend.clip(x_start, lower, upper), x


def pgd(model: Model, x: Array, y: Array, *, eps: float, step_size: float, steps: int,
        random_start: bool = True, loss: str = "ce", stop_fosc: float | None = None,
        final_stats: bool = False, trace: bool = False, bounds: tuple[float, float] = (0.0, 1.0),
        rng=None, fosc_reference: str = "natural", backend: Backend | None = None) -> AttackResult:
    """Projected gradient ascent on `loss` within the eps-ball of x (B, ...) and the pixel box.

    x: (B, ...) natural examples x_0 in `bounds`; y: (B,) integer labels; eps, step_size: in
    the units of x (pixels in [0, 1]); steps: K. bounds: the pixel box (lo, hi).
    stop_fosc: None runs every example for K steps (Madry's PGD); a number c_t stops each
               example after the first step at which FOSC <= c_t (Algorithm 1).
    final_stats: also return FOSC and loss at x_adv (one more gradient evaluation for the
               examples that never stopped; plain PGD spends exactly B * K).
    trace:     also return `Trace`, FOSC and loss at every point x^0 .. x^K (NaN after an
               example stopped); costs the same extra evaluation as final_stats.
    rng:       the backend generator for the random start (default: a fixed seed 0).
    fosc_reference: "natural" (the paper) measures FOSC from x_0; "start" follows the authors'
               code: x^0 = x_0 + u unprojected, FOSC measured from it (module docstring).
    FOSC (stop rule, final_stats, trace) is Eq. 4 over the eps-ball alone (module docstring).
    """
    check_settings(eps, step_size, steps)
    backend = backend or backend_for(x)
    lower, upper = feasible_box(x, eps, bounds, backend)  # the ball around x_0, in the pixel box
    x_k, x_0 = start_and_reference(x, eps, lower, upper, random_start, rng, fosc_reference, backend)
    labels, n, stats = y, int(x.shape[0]), final_stats or trace
    active = ActiveSet(backend, n)
    out = AttackResult(x_adv=None, fosc=None, loss=None, steps=None, grad_evals=0,  # active.write
                       trace=_empty_trace(steps, n) if trace else None)            # fills these
    for k in range(steps + 1):
        if k == steps and not stats:  # plain PGD needs no gradient at x^K
            break
        losses, g = backend.loss_and_grad(model, x_k, labels, loss)
        out.grad_evals += len(active)
        check = stop_fosc is not None and 0 < k < steps  # Algorithm 1's stop check, after a step
        if check or trace or k == steps:
            c = fosc(x_k, x_0, g, eps, backend=backend)
            _record(out.trace, k, active, c, losses)
        if k == steps:
            active.write(out, fosc=c, loss=losses)
            break
        if check:
            go_on = backend.nonzero(c > stop_fosc)  # V = 1: the paper's V is 0 where FOSC <= c_t
            if int(go_on.shape[0]) < len(active):  # some stop at x^k
                active.write(out, x_adv=x_k, fosc=c, loss=losses, steps=k)
                x_k, x_0, labels, lower, upper, g = active.keep(
                    go_on, x_k, x_0, labels, lower, upper, g)
                if len(active) == 0:
                    break
        x_k = backend.clip(x_k + step_size * backend.sign(g), lower, upper)  # x^{k+1}
    active.write(out, x_adv=x_k, steps=steps)  # the rows that never stopped took every step
    if not stats:
        out.fosc = out.loss = None
    return out


def _empty_trace(steps: int, n: int) -> Trace:
    return Trace(np.full((steps + 1, n), np.nan), np.full((steps + 1, n), np.nan))


def _record(trace: Trace | None, k: int, active: ActiveSet, c: Array, losses: Array) -> None:
    """Row k of the trace, at the active examples (the others keep NaN)."""
    if trace is not None:
        rows, backend = active.host_index(), active.backend
        trace.fosc[k, rows], trace.loss[k, rows] = backend.to_numpy(c), backend.to_numpy(losses)


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
