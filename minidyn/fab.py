"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), L_inf, on the
backend protocol, as AutoAttack's standard suite runs it.

FAB looks for the *smallest* perturbation that changes the class. For the target t of an
example with label y it linearises the logit difference at the current iterate x^k,

    f(x) = z_t(x) - z_y(x) ~ f(x^k) + <grad f(x^k), x - x^k>     (the boundary f = 0 a hyperplane),

and projects both x^k and the original x_0 onto {x in [0, 1]^d : <w, x> = b}, w = grad f(x^k),
b = <w, x^k> - f(x^k), in the L_inf norm (`projection_linf`): d_1 = proj(x^k) - x^k and
d_2 = proj(x_0) - x_0. The next iterate is a convex combination of the two projections,
overshot by eta (their Eq. 7-8):

    alpha   = min(||d_1||_inf / (||d_1||_inf + ||d_2||_inf), alpha_max)
    x^{k+1} = clip_[0,1]((1 - alpha) (x^k + eta d_1) + alpha (x_0 + eta d_2)).

Where x^{k+1} is misclassified it is kept if it is the closest to x_0 so far (in L_inf), and
the iterate steps back towards x_0: x^{k+1} <- x_0 + beta (x^{k+1} - x_0). FAB-T runs this
`steps` times towards each of the top `n_target_classes` other classes of the natural example,
each run on the examples every earlier run left robust; an example is broken when an
adversarial point within eps of x_0 is found. AutoAttack's standard version: 9 targets, 100
iterations, one restart (so no random start), alpha_max = 0.1, eta = 1.05, beta = 0.9.

The projection (fab_projections.projection_linf) is the point of the hyperplane in the box that
is closest in L_inf: every coordinate moves by the same lambda towards the corner of the box
that decreases |<w, x> - b| fastest, except those that reach the box first, which stop there:

    d_i(lambda) = -sign(w_i) min(lambda, p_i)    (w flipped so that <w, t> >= b; p_i the
                                                 distance from t_i to that face of the box)
    g(lambda)   = sum_i |w_i| min(lambda, p_i) = |<w, t> - b|,

g piecewise linear and increasing with breakpoints p_i. The reference sorts p and binary-searches
the sorted breakpoints; the protocol has no sort (nor cumsum), so here lambda is bisected on
[0, max_i p_i], each halving one O(d) pass (`BISECTIONS`: 24 for float32, 53 for float64, i.e.
down to one unit in the last place of max p), and then solved exactly on the segment found:
lambda = (|<w, t> - b| - sum_{p_i <= lo} |w_i| p_i) / sum_{p_i > lo} |w_i|. That is the
reference's formula on the reference's segment unless a breakpoint p_j lies inside the last
bracket, where lambda is off by at most the bracket's width times |w_j| / sum_{p_i > lo} |w_i|.
On the CPU it takes 0.3-0.8 of the time of the reference's projection (torchattacks' copy of
it) for 64 to 512 rows of 784 or 3,072 pixels (torch, one thread; `docs/performance.md`).
Where the hyperplane cannot be reached inside the box, d is the whole move to the corner; where
w_i = 0, d_i = 0 (both as the reference).

Reference: fra31/auto-attack, commit a39220048b3c9f2cca9a4d3a54604793c68eca7e (read, not
copied): autoattack/fab_base.py, `FABAttack.attack_single_run` (lines 83-263: the target
lines 111-114, the L_inf random start lines 130-139, the iteration lines 163-251) and `perturb`
(lines 265-329, the targeted loop lines 302-327); autoattack/fab_pt.py,
`get_diff_logits_grads_batch_targeted` (lines 100-114: f = -(z_y - z_t) and its gradient);
autoattack/fab_projections.py, `projection_linf` (lines 7-59); autoattack/autoattack.py, the
FAB settings (lines 37-38), the `fab-t` branch (lines 211-216) and the standard version
(lines 306-318). Deviations:

- The projection: bisection instead of the sort, as above (the same point up to rounding; in
  float64 it agrees with a transcription of the reference to 1e-12, tests/test_fab.py).
- The targets are ranked once, on the logits of x (the reference recomputes them on the
  examples still robust before each target: the same logits for a deterministic model); equal
  logits are ranked by the lower class index first. n_target_classes above C - 1 is cut to
  C - 1 (the reference fails with an index error).
- `stop_when_fooled=True` (the default): an example stops as soon as its closest adversarial
  point is within eps (no later iterate can undo that verdict), saving its remaining gradients;
  its x_adv is then that point rather than the smallest one the remaining iterations would have
  found. With False, every example runs all `steps` iterations, as in the reference.
- No second forward pass on the returned points: an example counts as fooled where an iterate
  was misclassified (by the forward pass that checked it) within eps of x_0; the reference
  re-predicts `adv_curr` in `perturb` (line 312). minidyn's evaluation recounts the points itself.
- Random starts (only for restarts > 1, at the 2nd, 3rd, ... restart of each target, as the
  reference): x_0 + (eps / 2) u / ||u||_inf clipped to [0, 1], u drawn by `backend.uniform(rng,
  (m, ...), -1, 1)` for the m examples of that run, from the generator passed in (the reference:
  2 torch.rand - 1 from torch's global generator seeded with `seed`).
- The gradient and the loss come from the backend's loss "margin-targeted" (z_t - z_y, the
  reference's diffy); the pass that checks misclassification is a separate forward pass at the
  new iterate, as in the reference (the next gradient is taken at the stepped-back point, not
  at that iterate, so the logits of the gradient's pass cannot serve as the check).
- Examples misclassified at x are not attacked (x_adv = x, fooled), as the reference. eps 0
  returns x without attacking (no adversarial point lies within distance 0 of a correct x).
- Bounds: the box is [0, 1]^d, as the reference's clamp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from minidyn.active import ActiveSet
from minidyn.attacks import check_eps
from minidyn.backend import Array, Backend, Model, backend_for
from minidyn.errors import ConfigError

TARGETED = "margin-targeted"
# halvings of [0, max p] in projection_linf, by the float's bytes: down to one unit in the last
# place of max p (float32: 24-bit significand; float64: 53)
BISECTIONS = {4: 24, 8: 53}
TINY = 1e-8       # the reference's floor on ||d||_inf in alpha (fab_base.py line 216)


@dataclass
class FabResult:
    """x_adv: (B, ...) an adversarial point within eps of x where `fooled`, else x itself.
    fooled: (B,) bool: misclassified at x, or an adversarial point within eps was found.
    distance: (B,) L_inf distance to x of the closest adversarial point found (any size, so
    possibly > eps; 0 where x is misclassified, inf where none was found; with
    stop_when_fooled, the first one within eps rather than the closest).
    grad_evals: per-example gradient evaluations (forward and backward passes).
    forward_evals: per-example forward-only passes (the natural logits and each iterate's check).
    """

    x_adv: Array
    fooled: Array
    distance: Array
    grad_evals: int
    forward_evals: int


@dataclass
class FabState:
    """The rows of one run (A examples): their label, target, x_0 and the iterate (A, ...);
    the closest adversarial point found (A, ...) and its L_inf distance res (A,), inf if none."""

    y: Array
    target: Array
    x0: Array
    x: Array
    adv: Array
    res: Array


def fab_targeted(model: Model, x: Array, y: Array, *, eps: float, steps: int = 100,
                 n_target_classes: int = 9, restarts: int = 1, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, stop_when_fooled: bool = True, rng=None,
                 backend: Backend | None = None) -> FabResult:
    """FAB-T on x (B, ...) in [0, 1] with (B,) integer labels y; eps the L_inf budget in the
    units of x. For each target (the 2nd, 3rd, ... highest logit of x), `restarts` runs of
    `steps` iterations, each on the examples still robust (the first without, the others with a
    random start from `rng`, the backend generator; default a fixed seed 0). stop_when_fooled:
    an example stops once it is broken (True) or runs every iteration (False, the reference)."""
    _check(eps, steps, n_target_classes, restarts, alpha_max, eta, beta)
    backend = backend or backend_for(x)
    rng = rng if rng is not None else backend.rng(0)
    z = backend.logits(model, x)
    n, n_classes = int(z.shape[0]), int(z.shape[1])
    if n_classes < 2:
        raise ConfigError(f"FAB-T needs at least 2 classes, got {n_classes}")
    ranked = backend.argmax(z)  # the class ranked 1st
    wrong = ranked != y
    out = FabResult(x_adv=x + 0, fooled=wrong, distance=backend.where(
        wrong, backend.zeros((n,)), backend.full((n,), math.inf)), grad_evals=0, forward_evals=n)
    if eps == 0:
        return out
    columns, minus_inf = backend.arange(n_classes).reshape((1, -1)), backend.full((n, n_classes), -math.inf)
    settings = (steps, alpha_max, eta, beta, eps if stop_when_fooled else None)
    for _ in range(min(n_target_classes, n_classes - 1)):
        z = backend.where(columns == ranked.reshape((-1, 1)), minus_inf, z)
        ranked = backend.argmax(z)  # the class ranked 2nd, 3rd, ...: this target
        for restart in range(restarts):
            idx = backend.nonzero(~out.fooled)
            if int(idx.shape[0]) == 0:
                return out
            x0 = backend.take(x, idx)
            start = x0 if restart == 0 else _random_start(backend, x0, eps, rng)
            state = FabState(y=backend.take(y, idx), target=backend.take(ranked, idx), x0=x0,
                             x=start, adv=x0, res=backend.full((int(idx.shape[0]),), math.inf))
            _record(backend, out, idx, _run(backend, model, state, settings, out), eps)
    return out


def _check(eps, steps, n_target_classes, restarts, alpha_max, eta, beta) -> None:
    check_eps(eps, zero=True)
    for name, value in (("steps", steps), ("n_target_classes", n_target_classes), ("restarts", restarts)):
        try:
            whole = int(value) == value and value >= 1
        except (TypeError, ValueError, OverflowError):
            whole = False
        if not whole:
            raise ConfigError(f"FAB-T needs {name} >= 1 (an integer), got {value!r}")
    if not 0 <= alpha_max <= 1:
        raise ConfigError(f"FAB-T's alpha_max must be in [0, 1], got {alpha_max}")
    if not eta > 0:
        raise ConfigError(f"FAB-T's overshoot eta must be > 0, got {eta}")
    if not 0 < beta <= 1:
        raise ConfigError(f"FAB-T's backward step beta must be in (0, 1], got {beta}")


def _random_start(backend: Backend, x0: Array, eps: float, rng) -> Array:
    """x_0 + (eps / 2) u / ||u||_inf in [0, 1], u ~ U(-1, 1) per coordinate (fab_base.py
    lines 131-139 with res2 = 1e10, so min(res2, eps) = eps)."""
    u = backend.uniform(rng, tuple(x0.shape), -1.0, 1.0)
    norm = _row_max(backend, backend.abs(_flat(u)))
    return backend.clip(x0 + (0.5 * eps) * u / _rows(norm, len(x0.shape)), 0.0, 1.0)


def _run(backend: Backend, model: Model, s: FabState, settings: tuple, out: FabResult) -> FabState:
    """One run of `steps` iterations (fab_base.py lines 163-251) on the rows of s; returns the
    state of every row (its closest adversarial point `adv` and `res`). settings: (steps,
    alpha_max, eta, beta, stop) with stop = eps (rows stop once res <= eps) or None."""
    steps, alpha_max, eta, beta, stop = settings
    active = ActiveSet(backend, int(s.x.shape[0]))
    final = FabState(**vars(s))
    for _ in range(steps):
        if stop is not None:
            go_on = backend.nonzero(~(s.res <= stop))
            if int(go_on.shape[0]) < len(active):
                active.write(final, adv=s.adv, res=s.res)
                (s,) = active.keep(go_on, s)
            if len(active) == 0:
                return final
        s = _iterate(backend, model, s, alpha_max, eta, beta)
        out.grad_evals += len(active)
        out.forward_evals += len(active)
    active.write(final, adv=s.adv, res=s.res)
    return final


def _iterate(backend: Backend, model: Model, s: FabState, alpha_max: float, eta: float,
             beta: float) -> FabState:
    """x^k -> x^{k+1}: the step between the projections of x^k and x_0 onto the linearised
    boundary (lines 166-226; both projected in one call of 2A rows, as the reference), then the
    record and the step back where x^{k+1} is adversarial (lines 228-249)."""
    nd, m = len(s.x.shape), int(s.x.shape[0])
    f, grad = backend.loss_and_grad(model, s.x, s.y, TARGETED, target=s.target)
    w, t1 = _flat(grad), _flat(s.x)
    b = backend.sum_per_example(w * t1) - f  # the hyperplane <w, x> = b
    d = projection_linf(backend, _stack(backend, t1, _flat(s.x0)), _stack(backend, w, w), _stack(backend, b, b))
    a = backend.clip(_row_max(backend, backend.abs(d)), TINY, math.inf)
    alpha = _rows(backend.clip(a[:m] / (a[:m] + a[m:]), 0.0, alpha_max), nd)
    x_new = backend.clip((s.x + eta * d[:m].reshape(s.x.shape)) * (1 - alpha)
                         + (s.x0 + eta * d[m:].reshape(s.x.shape)) * alpha, 0.0, 1.0)
    adversarial = backend.argmax(backend.logits(model, x_new)) != s.y
    dist = _row_max(backend, backend.abs(_flat(x_new - s.x0)))
    closer = adversarial & (dist < s.res)
    return FabState(y=s.y, target=s.target, x0=s.x0,
                    x=backend.where(_rows(adversarial, nd), s.x0 + beta * (x_new - s.x0), x_new),
                    adv=backend.where(_rows(closer, nd), x_new, s.adv),
                    res=backend.where(closer, dist, s.res))


def _stack(backend: Backend, a: Array, b: Array) -> Array:
    """(m, ...) and (m, ...) -> (2m, ...): a's rows, then b's (the protocol has no concatenate)."""
    m = int(a.shape[0])
    out, rows = backend.zeros((2 * m,) + tuple(a.shape[1:])), backend.arange(2 * m)
    backend.put(out, rows[:m], a)
    backend.put(out, rows[m:], b)
    return out


def _record(backend: Backend, out: FabResult, idx: Array, s: FabState, eps: float) -> None:
    """Write one run's rows idx into out: fooled where res <= eps (perturb, lines 312-323), and
    the closest distance found so far."""
    fooled = s.res <= eps
    rows = backend.nonzero(fooled)
    backend.put(out.x_adv, backend.take(idx, rows), backend.take(s.adv, rows))
    backend.put(out.fooled, idx, fooled)
    old = backend.take(out.distance, idx)
    backend.put(out.distance, idx, backend.where(s.res < old, s.res, old))


def projection_linf(backend: Backend, t: Array, w: Array, b: Array,
                    bisections: int | None = None) -> Array:
    """The smallest L_inf move d (N, D) that puts each row of t (N, D) in [0, 1]^D onto its
    hyperplane <w, t + d> = b (w (N, D), b (N,)) inside the box, or, where the box does not
    reach the hyperplane, the move to the box's corner closest to it (fab_projections.py
    projection_linf; the module docstring has the equations):

        d_i = -sign(w_i) min(lambda, p_i),   sum_i |w_i| min(lambda, p_i) = |<w, t> - b|,

    with p_i the distance from t_i to the face of the box that moves <w, t> towards b, and
    d_i = 0 where w_i = 0. lambda: bisected (`bisections` times; default BISECTIONS for the
    float's size), then solved on its segment.
    """
    if bisections is None:
        bisections = BISECTIONS.get(int(t.dtype.itemsize), 53)
    c = backend.sum_per_example(w * t) - b
    toward_one = (w < 0) != (c < 0).reshape((-1, 1))  # moving t_i up brings <w, t> towards b
    p = backend.where(toward_one, 1 - t, t)
    aw, need, n = backend.abs(w), backend.abs(c), int(t.shape[0])
    zero = backend.zeros((n, 1))  # min(lam, p) = clip(p, 0, lam): p >= 0 (one kernel in torch)
    lo, hi = backend.zeros((n,)), _row_max(backend, p)
    p_max = hi
    for _ in range(bisections):
        mid = 0.5 * (lo + hi)
        enough = backend.sum_per_example(aw * backend.clip(p, zero, mid.reshape((-1, 1)))) >= need
        hi, lo = backend.where(enough, mid, hi), backend.where(enough, lo, mid)
    saturated = p <= lo.reshape((-1, 1))
    slope = backend.sum_per_example(aw * ~saturated)
    done = backend.sum_per_example(aw * p * saturated)
    safe = backend.where(slope > 0, slope, backend.full(slope.shape, 1.0))
    lam = backend.clip((need - done) / safe, 0.0, math.inf)
    reachable = (need < backend.sum_per_example(aw * p)) & (slope > 0)
    lam = backend.where(reachable, lam, p_max).reshape((-1, 1))
    step = backend.clip(p, zero, lam) * (aw > 0)
    return backend.where(toward_one, step, -step)


def _flat(a: Array) -> Array:
    """(B, ...) -> (B, D)."""
    return a.reshape((int(a.shape[0]), -1))


def _row_max(backend: Backend, a: Array) -> Array:
    """(N, D) -> (N,): each row's largest entry (argmax and a gather: the protocol has no max)."""
    return a[backend.arange(int(a.shape[0])), backend.argmax(a)]


def _rows(a: Array, ndim: int) -> Array:
    """(B,) -> (B, 1, ..., 1) so that it broadcasts against (B, ...) arrays."""
    return a.reshape((-1,) + (1,) * (ndim - 1))


def craft(backend: Backend, model: Model, x: Array, y: Array, *, eps: float, rng=None,
          transfer: bool = False, steps: int = 100, **_) -> tuple[Array, Array | None]:
    """For an evaluation table row: (x_adv, fooled) with fooled FAB-T's own (B,) record, None
    when the points are for another model (FAB's points lie just across the boundary of the
    model they were crafted on)."""
    result = fab_targeted(model, x, y, eps=eps, steps=steps, rng=rng, backend=backend)
    return result.x_adv, None if transfer else result.fooled
