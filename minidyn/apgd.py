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

Deviations from the paper's Algorithm 1 (and where the authors' code, AutoAttack's
`autopgd_base.py`, differs from both):

- Checkpoints: by default those of the authors' code, in whole iterations: the first after
  int(0.22 N), each next interval int(0.03 N) shorter than the last but never below int(0.06 N)
  (each at least 1). The paper writes w_j = ceil(p_j N) with p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (`checkpoint_rule="paper"`); the two agree for
  N = 100 and differ for most other N (N = 10, 20, 50), so the default keeps results equal to
  AutoAttack's at any number of iterations.
- Random start: uniform in the eps-ball (as `minidyn.pgd`), then projected. The authors' code
  starts at x_0 + eps t / ||t||_inf with t uniform in [-1, 1]^d (one coordinate on the sphere).
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
  that crossed the surrogate's boundary barely fools it and transfers poorly, so minidyn.evaluate
  runs APGD to the end on a surrogate and transfers x_best. Misclassification is
  read from the loss where the loss says it (CW, DLR: loss > 0; CE: loss < log 2 means the
  true class has probability > 1/2, so still correct) and from a forward pass otherwise.
- The same N_iter + 1 gradient evaluations as the authors' code (x^0 .. x^N); the loss of the
  last iterate is needed for the best point, its gradient is discarded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from minidyn.attacks import _check
from minidyn.backend import Array, Backend, Model, backend_for
from minidyn.errors import ConfigError
from minidyn.projection import feasible_box

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


def _rows(a: Array, ndim: int) -> Array:
    """(B,) -> (B, 1, ..., 1) so that it broadcasts against (B, ...) arrays."""
    return a.reshape((-1,) + (1,) * (ndim - 1))


def apgd(model: Model, x: Array, y: Array, *, eps: float, steps: int = 100, loss: str = "ce",
         random_start: bool = True, momentum: float = MOMENTUM, rho: float = RHO,
         stop_when_misclassified: bool = False, bounds: tuple[float, float] = (0.0, 1.0),
         checkpoint_rule: str = "autoattack", rng=None,
         backend: Backend | None = None) -> ApgdResult:
    """APGD with `steps` iterations (N_iter) on `loss` ("ce", "dlr", or "cw") in the eps-ball.

    checkpoint_rule: "autoattack" (default) or "paper", see `checkpoints`.
    rng: the backend generator for the random start (default: a fixed seed 0).
    """
    _check(eps, 2 * eps, steps)
    B = backend or backend_for(x)
    n, nd = int(x.shape[0]), len(x.shape)
    w_list = checkpoints(steps, checkpoint_rule)
    lower, upper = feasible_box(x, eps, bounds, B)  # P is the clip into this box
    start = x + B.uniform(rng if rng is not None else B.rng(0), tuple(x.shape), -eps, eps) \
        if random_start else x
    xk = B.clip(start, lower, upper)

    # outputs, over the whole batch
    out_adv, out_best = xk + 0, xk + 0
    out_loss = B.full((n,), float("nan"))
    out_found = B.zeros((n,), dtype="bool")
    out_steps = B.zeros((n,), dtype="int")

    active = B.arange(n)
    losses, g = B.loss_and_grad(model, xk, y, loss)
    evals = n
    ya = y
    found = _misclassified(B, model, xk, ya, losses, loss)
    s = {  # per-example state of the active rows
        "x": xk, "x_prev": xk, "g": g, "f": losses, "f_best": losses, "x_best": xk, "g_best": g,
        "eta": B.full((n,), 2.0 * eps), "increases": B.zeros((n,)),
        "f_best_at_check": losses, "reduced_at_check": B.zeros((n,), dtype="bool"),
        "x_mis": xk, "found": found, "taken": B.zeros((n,), dtype="int"),
    }
    last_check = 0
    for k in range(steps):
        if stop_when_misclassified:
            keep = B.nonzero(~s["found"])
            if int(keep.shape[0]) < int(active.shape[0]):
                done = B.nonzero(s["found"])
                _write(B, active, done, s, out_adv, out_best, out_loss, out_found, out_steps)
                active = B.take(active, keep)
                s = {name: B.take(v, keep) for name, v in s.items()}
                ya, lower, upper = (B.take(a, keep) for a in (ya, lower, upper))
            if int(active.shape[0]) == 0:
                break
        xc, eta = s["x"], _rows(s["eta"], nd)
        z = B.clip(xc + eta * B.sign(s["g"]), lower, upper)
        if k == 0:
            x_new = z
        else:
            x_new = B.clip(xc + momentum * (z - xc) + (1 - momentum) * (xc - s["x_prev"]),
                           lower, upper)
        f_new, g_new = B.loss_and_grad(model, x_new, ya, loss)
        evals += int(active.shape[0])
        s["taken"] = s["taken"] + 1
        s["increases"] = s["increases"] + (f_new > s["f"]) * 1.0
        better = f_new > s["f_best"]
        rb = _rows(better, nd)
        s["x_best"] = B.where(rb, x_new, s["x_best"])
        s["g_best"] = B.where(rb, g_new, s["g_best"])
        s["f_best"] = B.where(better, f_new, s["f_best"])
        mis = _misclassified(B, model, x_new, ya, f_new, loss, skip=s["found"])
        s["x_mis"] = B.where(_rows(mis, nd), x_new, s["x_mis"])
        s["found"] = s["found"] | mis
        s["x_prev"], s["x"], s["g"], s["f"] = xc, x_new, g_new, f_new
        if k + 1 in w_list:
            w_j = k + 1
            cond1 = s["increases"] < rho * (w_j - last_check)
            cond2 = (~s["reduced_at_check"]) & (s["f_best_at_check"] >= s["f_best"])
            reduce = cond1 | cond2
            rr = _rows(reduce, nd)
            s["eta"] = B.where(reduce, s["eta"] / 2, s["eta"])
            s["x"] = B.where(rr, s["x_best"], s["x"])
            s["g"] = B.where(rr, s["g_best"], s["g"])
            s["f"] = B.where(reduce, s["f_best"], s["f"])
            s["reduced_at_check"], s["f_best_at_check"] = reduce, s["f_best"]
            s["increases"] = B.zeros((int(active.shape[0]),))
            last_check = w_j
    _write(B, active, B.arange(int(active.shape[0])), s, out_adv, out_best, out_loss, out_found,
           out_steps)
    return ApgdResult(out_adv, out_best, out_loss, out_found, out_steps, evals)


def _write(B, active, rows, s, out_adv, out_best, out_loss, out_found, out_steps) -> None:
    """Copy the results of state rows `rows` (positions in the active set) to the outputs."""
    if int(rows.shape[0]) == 0:
        return
    where = B.take(active, rows)
    found = B.take(s["found"], rows)
    x_best = B.take(s["x_best"], rows)
    x_mis = B.take(s["x_mis"], rows)
    B.put(out_adv, where, B.where(_rows(found, len(x_best.shape)), x_mis, x_best))
    B.put(out_best, where, x_best)
    B.put(out_loss, where, B.take(s["f_best"], rows))
    B.put(out_found, where, found)
    B.put(out_steps, where, B.take(s["taken"], rows))


def _misclassified(B: Backend, model: Model, x: Array, y: Array, losses: Array, loss: str,
                   skip: Array | None = None) -> Array:
    """(B,) bool: x is misclassified. Read from the loss where it decides (margin losses: > 0;
    CE below log 2: correct); a forward pass for the rest (rows in `skip` are not checked)."""
    if loss in ("cw", "dlr"):
        return losses > 0 if skip is None else (losses > 0) & ~skip
    unsure = losses >= LOG2
    if skip is not None:
        unsure = unsure & ~skip
    out = B.zeros((int(x.shape[0]),), dtype="bool")
    idx = B.nonzero(unsure)
    if int(idx.shape[0]):
        pred = B.argmax(B.logits(model, B.take(x, idx)))
        B.put(out, idx, pred != B.take(y, idx))
    return out
