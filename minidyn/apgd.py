"""APGD: Auto-PGD of Croce & Hein (ICML 2020), on the backend protocol, with the CE or DLR loss.

APGD is PGD with momentum and a step size that adapts itself per example (their Algorithm 1):

    x^1     = P(x^0 + eta sign(grad f(x^0)))
    z^{k+1} = P(x^k + eta^k sign(grad f(x^k)))
    x^{k+1} = P(x^k + alpha (z^{k+1} - x^k) + (1 - alpha) (x^k - x^{k-1})),   alpha = 0.75

with P the projection onto the eps-ball intersected with [0, 1]^d, eta^0 = 2 eps, and the best
point x_max (highest loss seen) tracked throughout. At the checkpoints w_j (below) the step
size of an example is halved, and the example restarts from its best point x_max, when

    1. the loss increased in fewer than rho (w_j - w_{j-1}) of the steps since the last
       checkpoint (rho = 0.75), or
    2. the step size was not halved at the last checkpoint and the best loss has not improved
       since then.

`loss="dlr"` gives APGD-DLR: the Difference of Logits Ratio
-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), invariant to shifting and scaling the logits,
so it cannot be fooled by a model that merely inflates its logits (a common form of gradient
masking for the cross-entropy). Both backends implement it in `loss_and_grad`.

`apgd_targeted` is APGD-T, AutoAttack's targeted version: `loss="dlr-targeted"` towards each of
the top 9 other classes in turn (its docstring lists its own deviations).

Deviations from the paper's Algorithm 1 (and where the authors' code, AutoAttack's
`autopgd_base.py`, differs from both):

- Checkpoints: by default those of the authors' code, in whole iterations: the first after
  int(0.22 N), each next interval int(0.03 N) shorter than the last but never below int(0.06 N)
  (each at least 1). The paper writes w_j = ceil(p_j N) with p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (`checkpoint_rule="paper"`); the two agree for
  N = 100 and differ for most other N (N = 10, 20, 50), so the default keeps results equal to
  AutoAttack's at any number of iterations.
- Random start: uniform in the eps-ball, then projected (`attacks.start_point`, as in `pgd`).
  The authors' code starts at x_0 + eps t / ||t||_inf with t uniform in [-1, 1]^d (one
  coordinate on the sphere).
- Condition 1 is the paper's strict "< rho (w_j - w_{j-1})" (the authors' code uses "<="), and
  condition 2 is checked from the first checkpoint on, with w_0 = 0 (the authors' code skips
  it at the first checkpoint). After a restart from x_max, the next comparison for condition 1
  is made against the loss of x_max, the point the iteration actually continues from.
- What is returned for evaluation: like AutoAttack (and unlike the paper's x_max), an example
  counts as broken if *any* iterate was misclassified, so `x_adv` is a misclassified iterate
  where one was found and x_max otherwise; `x_best` is always x_max. With
  `stop_when_misclassified=True` (what `minidyn eval` uses) an example stops as soon as it is
  misclassified, which saves its remaining gradient evaluations and changes no accuracy *of
  the model attacked* (gradients are per example, so the others' iterates are unchanged). It
  does change what a transfer (black-box) attack carries to another model: the first iterate
  that crossed the surrogate's boundary barely fools it and transfers poorly, so minidyn.evaluation.evaluate
  runs APGD to the end on a surrogate and transfers x_best. Misclassification is
  read from the loss where the loss says it (CW, DLR: loss > 0; CE: loss < log 2 means the
  true class has probability > 1/2, so still correct) and from a forward pass otherwise.
- The same N_iter + 1 gradient evaluations as the authors' code (x^0 .. x^N); the loss of the
  last iterate is needed for the best point, its gradient is discarded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from minidyn.active import ActiveSet
from minidyn.attacks import check_settings, start_point
from minidyn.backend import Array, Backend, Model, backend_for
from minidyn.errors import ConfigError
from minidyn.projection import feasible_box

TARGETED = "dlr-targeted"
MOMENTUM = 0.75
RHO = 0.75
LOG2 = math.log(2.0)


@dataclass
class ApgdResult:
    """x_adv: (B, ...) for evaluation: a misclassified iterate where one was found, else x_best.
    x_best: (B, ...) the highest-loss point x_max (where the example stopped, if it did).
    loss_best: (B,) its loss. found: (B,) bool, a misclassified iterate was found.
    steps: (B,) int, the steps each example took. grad_evals: per-example gradient evaluations.
    """

    x_adv: Array
    x_best: Array
    loss_best: Array
    found: Array
    steps: Array
    grad_evals: int


CHECKPOINT_RULES = ("autoattack", "paper")


def checkpoints(n_iter: int, rule: str = "autoattack") -> list[int]:
    """The iterations w_1 < w_2 < ... (< n_iter) after which the step size may be halved.

    rule "autoattack": the integer intervals of `autopgd_base.py`; "paper": ceil(p_j n_iter).
    """
    if rule == "autoattack":
        return _autoattack_checkpoints(n_iter)
    if rule != "paper":
        raise ConfigError(f"unknown APGD checkpoint rule {rule!r}; choose {' or '.join(CHECKPOINT_RULES)}")
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1:
            break
        p.append(nxt)
    # round before ceil: 0.22 * 100 is 22.000000000000004 in floating point
    w = sorted({math.ceil(round(pj * n_iter, 9)) for pj in p[1:]})
    return [wj for wj in w if 0 < wj < n_iter]


def _autoattack_checkpoints(n_iter: int) -> list[int]:
    """First interval int(0.22 N); each next one int(0.03 N) shorter, never below int(0.06 N)."""
    interval = max(int(0.22 * n_iter), 1)
    shrink, shortest = max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    w, at = [], interval
    while at < n_iter:  # a check after the last iteration would change nothing
        w.append(at)
        interval = max(interval - shrink, shortest)
        at += interval
    return w


@dataclass
class ApgdState:
    """Each active row's example (label, feasible box) and Algorithm 1's quantities for it:
    arrays (A, ...) like x, or (A,) per example."""

    y: Array                 # int: the label
    target: Array            # int: the target class of "dlr-targeted" (else y, unused)
    lower: Array             # the feasible box [lower, upper] that P clips into
    upper: Array
    x: Array                 # x^(k), the current iterate
    x_prev: Array            # x^(k-1), for the momentum term
    grad: Array              # grad f(x^(k)), for the next step
    f: Array                 # f(x^(k))
    x_max: Array             # the highest-loss point so far (x_best of ApgdResult)
    f_max: Array             # its loss
    grad_max: Array          # its gradient, for the step after a restart from x_max
    eta: Array               # eta^(k), the step size
    increases: Array         # steps since w_{j-1} at which f increased (condition 1)
    f_max_at_check: Array    # f_max at w_{j-1} (condition 2)
    eta_halved_at_check: Array  # eta was halved at w_{j-1} (condition 2)
    x_mis: Array             # the first misclassified iterate (where `found`)
    found: Array             # bool: some iterate was misclassified
    steps: Array             # int: the iterations taken


def apgd(model: Model, x: Array, y: Array, *, eps: float, steps: int = 100, loss: str = "ce",
         random_start: bool = True, momentum: float = MOMENTUM, rho: float = RHO,
         stop_when_misclassified: bool = False, bounds: tuple[float, float] = (0.0, 1.0),
         checkpoint_rule: str = "autoattack", rng=None,
         backend: Backend | None = None, target: Array | None = None) -> ApgdResult:
    """APGD with `steps` iterations (N_iter) on `loss` ("ce", "dlr", "cw" or "dlr-targeted") in the eps-ball.

    x: (B, ...) natural examples in `bounds`; y: (B,) integer labels; eps in the units of x.
    checkpoint_rule: "autoattack" (default) or "paper", see `checkpoints`.
    rng: the backend generator for the random start (default: a fixed seed 0).
    target: (B,) integer target classes, for loss "dlr-targeted" only (see `apgd_targeted`).
    """
    check_settings(eps, 2 * eps, steps)
    if (target is None) != (loss != TARGETED):
        raise ConfigError(f"APGD's loss {TARGETED!r} needs target classes, and only it takes them")
    backend = backend or backend_for(x)
    n, w = int(x.shape[0]), checkpoints(steps, checkpoint_rule)
    lower, upper = feasible_box(x, eps, bounds, backend)  # P is the clip into this box
    x_start = start_point(x, eps, lower, upper, random_start, rng, backend)  # x^(0)
    f, grad, z = _loss_and_grad(backend, model, x_start, y, target, loss)
    state = _initial_state(backend, y, lower, upper, x_start, f, grad, 2.0 * eps,
                           _misclassified(backend, model, x_start, y, f, loss, logits=z))
    state = replace(state, target=y if target is None else target)
    active = ActiveSet(backend, n)
    out = ApgdResult(x_adv=None, x_best=None, loss_best=None, found=None, steps=None,  # by _write
                     grad_evals=n)
    last_check = 0  # w_{j-1}
    for k in range(steps):
        if stop_when_misclassified:
            go_on = backend.nonzero(~state.found)
            if int(go_on.shape[0]) < len(active):
                _write(active, out, state)
                (state,) = active.keep(go_on, state)
            if len(active) == 0:
                break
        state = _iterate(backend, model, state, loss, k == 0, momentum)
        out.grad_evals += len(active)
        if k + 1 in w:
            state = _checkpoint(backend, state, rho * (k + 1 - last_check))
            last_check = k + 1
    _write(active, out, state)
    return out


def _initial_state(backend: Backend, y: Array, lower: Array, upper: Array, x: Array, f: Array,
                   grad: Array, eta: float, found: Array) -> ApgdState:
    """The state at x^(0) (B, ...): its losses f (B,), gradient, misclassified mask; eta^(0)."""
    n = int(x.shape[0])
    return ApgdState(y=y, target=y, lower=lower, upper=upper, x=x, x_prev=x, grad=grad, f=f,
                     x_max=x, f_max=f, grad_max=grad, eta=backend.full((n,), eta),
                     increases=backend.zeros((n,)), f_max_at_check=f,
                     eta_halved_at_check=backend.zeros((n,), dtype="bool"),
                     x_mis=x, found=found, steps=backend.zeros((n,), dtype="int"))


def _iterate(backend: Backend, model: Model, s: ApgdState, loss: str, first: bool,
             momentum: float) -> ApgdState:
    """One iteration, x^(k) -> x^(k+1) (lines 3 and 7-11 of Algorithm 1), and the new best and
    misclassified points:

        z^(k+1) = P(x^(k) + eta sign(grad f(x^(k))))                            (x^(1) = z^(1))
        x^(k+1) = P(x^(k) + alpha (z^(k+1) - x^(k)) + (1 - alpha) (x^(k) - x^(k-1)))
    """
    nd, x = len(s.x.shape), s.x
    z = backend.clip(x + _rows(s.eta, nd) * backend.sign(s.grad), s.lower, s.upper)
    x_new = z if first else backend.clip(
        x + momentum * (z - x) + (1 - momentum) * (x - s.x_prev), s.lower, s.upper)
    f_new, grad_new, z = _loss_and_grad(backend, model, x_new, s.y, s.target, loss)
    better = f_new > s.f_max
    mis = _misclassified(backend, model, x_new, s.y, f_new, loss, skip=s.found, logits=z)
    return replace(
        s, x=x_new, x_prev=x, grad=grad_new, f=f_new, steps=s.steps + 1,
        increases=s.increases + (f_new > s.f) * 1.0,
        x_max=backend.where(_rows(better, nd), x_new, s.x_max),
        grad_max=backend.where(_rows(better, nd), grad_new, s.grad_max),
        f_max=backend.where(better, f_new, s.f_max),
        x_mis=backend.where(_rows(mis, nd), x_new, s.x_mis), found=s.found | mis)


def _checkpoint(backend: Backend, s: ApgdState, fewest_increases: float) -> ApgdState:
    """At a checkpoint w_j (lines 12-16): halve eta and restart from x_max where

        condition 1: f increased at fewer than rho (w_j - w_{j-1}) = `fewest_increases` steps, or
        condition 2: eta was not halved at w_{j-1} and f_max has not grown since.
    """
    not_grown = s.f_max_at_check >= s.f_max
    halve = (s.increases < fewest_increases) | (~s.eta_halved_at_check & not_grown)
    restart = _rows(halve, len(s.x.shape))
    return replace(
        s, eta=backend.where(halve, s.eta / 2, s.eta), x=backend.where(restart, s.x_max, s.x),
        grad=backend.where(restart, s.grad_max, s.grad), f=backend.where(halve, s.f_max, s.f),
        eta_halved_at_check=halve, f_max_at_check=s.f_max,
        increases=backend.zeros((int(s.x.shape[0]),)))


def _write(active: ActiveSet, out: ApgdResult, s: ApgdState) -> None:
    """The active rows' results: x_adv is the misclassified iterate where one was found."""
    x_adv = active.backend.where(_rows(s.found, len(s.x.shape)), s.x_mis, s.x_max)
    active.write(out, x_adv=x_adv, x_best=s.x_max, loss_best=s.f_max, found=s.found, steps=s.steps)


def _rows(a: Array, ndim: int) -> Array:
    """(B,) -> (B, 1, ..., 1) so that it broadcasts against (B, ...) arrays."""
    return a.reshape((-1,) + (1,) * (ndim - 1))


def _loss_and_grad(backend: Backend, model: Model, x: Array, y: Array, target: Array | None,
                   loss: str) -> tuple[Array, Array, Array | None]:
    """The backend's (losses (B,), grad_x, logits (B, C) or None): the target classes and the
    logits of the same forward pass only for the targeted loss (APGD-T reads its verdicts
    there instead of from a forward pass more; the untargeted losses decide from the loss)."""
    if loss == TARGETED:
        return backend.loss_and_grad(model, x, y, loss, target=target, return_logits=True)
    return (*backend.loss_and_grad(model, x, y, loss), None)


def _misclassified(backend: Backend, model: Model, x: Array, y: Array, losses: Array, loss: str,
                   skip: Array | None = None, logits: Array | None = None) -> Array:
    """(B,) bool: x is misclassified. From `logits` of the same forward where given (APGD-T);
    else read from the loss where it decides (margin losses: > 0; CE below log 2: correct) and
    a forward pass for the rest (rows in `skip` are not checked)."""
    if logits is not None:
        out = backend.argmax(logits) != y
        return out if skip is None else out & ~skip
    if loss in ("cw", "dlr"):
        return losses > 0 if skip is None else (losses > 0) & ~skip
    unsure, out = losses >= LOG2, backend.zeros((int(x.shape[0]),), dtype="bool")  # CE
    if skip is not None:
        unsure = unsure & ~skip
    idx = backend.nonzero(unsure)
    if int(idx.shape[0]):
        pred = backend.argmax(backend.logits(model, backend.take(x, idx)))
        backend.put(out, idx, pred != backend.take(y, idx))
    return out


def apgd_targeted(model: Model, x: Array, y: Array, *, eps: float, steps: int = 100,
                  n_target_classes: int = 9, random_start: bool = True,
                  stop_when_misclassified: bool = True, bounds: tuple[float, float] = (0.0, 1.0),
                  rng=None, backend: Backend | None = None) -> ApgdResult:
    """APGD-T, AutoAttack's targeted APGD: APGD on the targeted DLR loss

        f(x) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)    (needs >= 4 classes)

    once for each target t in turn: the 2nd, 3rd, ..., (n_target_classes + 1)-th highest logit
    of the natural example (the top `n_target_classes` classes other than y for an example
    classified correctly), `steps` iterations each, every run on the examples that every earlier
    run left correctly classified. An example counts as robust only if it survives every target;
    one misclassified at x itself is not attacked (x_adv = x). AutoAttack's standard version: 9
    targets, 100 iterations, one restart each.

    x: (B, ...) in `bounds`; y: (B,) labels. Returns an ApgdResult: x_adv and x_best from the run
    that broke the example (x_adv its misclassified iterate, x_best its highest-loss point), from
    the last run for one never broken; loss_best of that run (-inf for one misclassified at x);
    steps summed over the runs.

    Reference: fra31/auto-attack, autoattack/autopgd_base.py, class APGDAttack_targeted (lines
    566-686: `dlr_loss_targeted` lines 595-600, the loop over targets in `perturb` lines
    655-686), and autoattack.py lines 308-319 (the standard version). Deviations:
    - Each run is `apgd` above, with its deviations from the authors' APGD (random start,
      checkpoint conditions); the runs draw their random starts one after another from `rng`.
    - The targets are ranked once, on the logits of x (the authors' code recomputes them for
      the remaining examples before each target: the same logits for a deterministic model);
      equal logits are ranked by the lower class index first (torch's sort may order them
      otherwise).
    - n_target_classes above C - 1 is cut to C - 1 (the authors' code raises an error).
    - Misclassification of an iterate is read from the logits of the pass that computes its
      loss and gradient (`return_logits`), as the authors' code does.
    - The torch backend computes the targeted loss eagerly (never torch.compile'd).
    """
    backend = backend or backend_for(x)
    z = backend.logits(model, x)
    n, n_classes = int(z.shape[0]), int(z.shape[1])
    if n_classes < 4:
        raise ConfigError(f"APGD-T's targeted DLR loss needs at least 4 classes, got {n_classes}")
    if n_target_classes < 1:
        raise ConfigError(f"APGD-T needs at least 1 target class, got {n_target_classes}")
    everyone, ranked = backend.arange(n), backend.argmax(z)  # the class ranked 1st
    out = ApgdResult(x_adv=backend.take(x, everyone), x_best=backend.take(x, everyone),
                     loss_best=backend.full((n,), -math.inf), found=ranked != y,
                     steps=backend.zeros((n,), dtype="int"), grad_evals=0)
    columns, minus_inf = backend.arange(n_classes).reshape((1, -1)), backend.full((n, n_classes), -math.inf)
    for _ in range(min(n_target_classes, n_classes - 1)):
        z = backend.where(columns == ranked.reshape((-1, 1)), minus_inf, z)
        ranked = backend.argmax(z)  # the class ranked 2nd, 3rd, ...: this run's target
        idx = backend.nonzero(~out.found)
        if int(idx.shape[0]) == 0:
            break
        target = backend.take(ranked, idx)
        run = apgd(model, backend.take(x, idx), backend.take(y, idx), eps=eps, steps=steps,
                   loss=TARGETED, target=target, random_start=random_start,
                   stop_when_misclassified=stop_when_misclassified, bounds=bounds, rng=rng,
                   backend=backend)
        for name in ("x_adv", "x_best", "loss_best", "found"):
            backend.put(getattr(out, name), idx, getattr(run, name))
        backend.put(out.steps, idx, backend.take(out.steps, idx) + run.steps)
        out.grad_evals += run.grad_evals
    return out
