"""Square attack (Andriushchenko et al., ECCV 2020), L_inf, on the backend protocol: queries only.

A random search that needs the model's logits and nothing else (no gradient), so a model that
hides its gradients (zero, rounded, saturated) does not hide from it. With the margin loss
L(x) = z_y(x) - max_{j != y} z_j(x) (negative: misclassified) it runs, per example:

    x_best = P(x + eps s),  s in {-1, 1}^(C x 1 x W)    vertical stripes: one sign per channel
                                                        and column, the same down each column
    for i = 0 .. n_queries - 1, while L(x_best) > 0:
        p    = p_selection(i)                           the share of pixels a square covers
        side = max(round(sqrt(p H W)), 1), at most min(H, W)
        a square of that side at a random position, one random sign per channel on it:
        x_new = P(x_best + 2 eps sign * square)
        x_best = x_new  where L(x_new) < L(x_best)

with P the clip into the eps-ball intersected with [0, 1]^d (`feasible_box`). The margin of
x_best never increases; an example stops as soon as it is misclassified.

Reference: fra31/auto-attack, autoattack/square.py (commit a392200), `SquareAttack`: the
schedule `p_selection` (lines 192-219), the margin loss `margin_and_loss` (lines 68-86), the
L_inf branch of `attack_single_run` (lines 233-303: the stripe start, lines 234-235; the square
update, lines 254-288) and `perturb` (lines 549-617). Read, not copied. Deviations:

- Random numbers: the backend generator passed in (`rng`), not torch's global one seeded with
  `seed`. Draws, in order: the stripe signs (B', C, 1, W) with B' the examples attacked, then
  per iteration the square's rows (m,), columns (m,) and signs (m, C, 1, 1) of the m examples
  still attacked. So the points differ from the reference's draw by draw, not in law.
- Each example draws its own square and signs (the paper's Algorithm 1 and the authors' first
  code, max-andr/square-attack); autoattack's square.py draws one square position and one sign
  per channel per iteration for the whole batch (lines 257-261), which makes an example's
  attack depend on the others in its batch.
- The square's corner is uniform over all H - side + 1 rows (and W - side + 1 columns);
  the reference's `random_int(0, h - s)` never puts it at the last one, so the last row and
  column of the image are only reached by a square when side = H.
- Returned points: the lowest-margin point x_best of every example attacked (the reference's
  `perturb` returns x itself for an example it does not fool; the verdicts are the same, and
  x_best carries more to another model in a black-box evaluation). Examples misclassified at
  x are not attacked and returned as x (as `perturb` does), so no point is correct that x
  was not.
- eps 0 returns x itself without a query (every square would be clipped away).
- Same budget: the start point's query and then at most `n_queries` iterations of one query
  each, per example (the reference's loop); only the margin loss (its default), untargeted,
  L_inf, one run (restarts are the evaluation's --restarts, each on the examples still
  correct, like the reference's `n_restarts`).
- Input: images (B, C, H, W) only; H != W is allowed (the side is at most min(H, W)), as in the
  reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from minidyn.attacks import check_eps
from minidyn.backend import Array, Backend, Model, backend_for
from minidyn.errors import ConfigError
from minidyn.projection import feasible_box

N_QUERIES = 5000
P_INIT = 0.8
# p_selection: p = p_init / 2^k, k = how many of these the (rescaled) iteration exceeds
_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@dataclass
class SquareResult:
    """x_adv: (B, C, H, W) the lowest-margin point found (x for examples misclassified at x).
    margin: (B,) its margin z_y - max_{j != y} z_j. margin_start: (B,) the margin of the stripe
    start (of x for examples not attacked). found: (B,) bool, margin < 0 (misclassified).
    queries: (B,) int, the model queries spent on each example (0 for those not attacked)."""

    x_adv: Array
    margin: Array
    margin_start: Array
    found: Array
    queries: Array


def p_selection(i: int, n_queries: int = N_QUERIES, p_init: float = P_INIT, rescale: bool = False) -> float:
    """The share of pixels p the square covers at iteration i (0-based) of n_queries: p_init
    halved after the reference's iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000.
    rescale False (AutoAttack's standard version: autoattack.py lines 42-43 pass
    `resc_schedule=False`) counts them as they are; True (SquareAttack's own default) first
    rescales i to 10,000 iterations, so that a shorter budget runs the whole schedule."""
    it = int(i / n_queries * 10000) if rescale else i
    return p_init / 2 ** sum(it > bound for bound in _P_HALVINGS)


def square_side(p: float, height: int, width: int) -> int:
    """The side of a square covering about p of the H x W pixels: round(sqrt(p H W)), in [1, min(H, W)]."""
    return min(max(int(round(math.sqrt(p * height * width))), 1), height, width)


def margin(backend: Backend, z: Array, y: Array) -> Array:
    """(B, K) logits, (B,) labels -> (B,) z_y - max_{j != y} z_j (the reference's margin loss)."""
    rows = backend.arange(int(z.shape[0]))
    others = backend.where(backend.arange(int(z.shape[1]))[None, :] == y[:, None],
                           backend.full(z.shape, -math.inf), z)
    return z[rows, y] - z[rows, backend.argmax(others)]


def square(model: Model, x: Array, y: Array, *, eps: float, n_queries: int = N_QUERIES,
           p_init: float = P_INIT, bounds: tuple[float, float] = (0.0, 1.0), rng=None,
           rescale_schedule: bool = False, backend: Backend | None = None) -> SquareResult:
    """The Square attack on (B, C, H, W) images x in `bounds` with (B,) integer labels y, eps in
    the units of x, at most n_queries iterations of one query each. rng: the backend generator
    of every random draw (default: a fixed seed 0). rescale_schedule: p_selection's `rescale`
    (False: AutoAttack's standard version)."""
    _check(x, eps, n_queries, p_init)
    backend = backend or backend_for(x)
    rng = rng if rng is not None else backend.rng(0)
    n = int(x.shape[0])
    z = backend.logits(model, x)
    margin_x = margin(backend, z, y)
    out = SquareResult(x_adv=x, margin=margin_x, margin_start=margin_x, found=margin_x < 0,
                       queries=backend.zeros((n,), dtype="int"))
    attacked = backend.nonzero(backend.argmax(z) == y)
    if eps == 0 or int(attacked.shape[0]) == 0:
        return out
    x_a, y_a = backend.take(x, attacked), backend.take(y, attacked)
    lower, upper = feasible_box(x_a, eps, bounds, backend)
    x_best, margin_best, queries = _stripes(backend, model, x_a, y_a, lower, upper, eps, rng)
    margin_start = margin_best + 0  # margin_best changes in place below
    for i in range(n_queries):
        go_on = backend.nonzero(margin_best > 0)
        if int(go_on.shape[0]) == 0:
            break
        x_best, margin_best = _square_step(backend, model, (x_best, margin_best), go_on, y_a,
                                           lower, upper, eps, p_selection(i, n_queries, p_init, rescale_schedule), rng)
        backend.put(queries, go_on, backend.take(queries, go_on) + 1)
    return _scatter(backend, out, attacked, x_best, margin_best, margin_start, queries)


def _check(x: Array, eps: float, n_queries: int, p_init: float) -> None:
    check_eps(eps, zero=True)
    if len(x.shape) != 4:
        raise ConfigError(f"the Square attack needs images (B, C, H, W), got shape {tuple(x.shape)}")
    if int(n_queries) < 1:
        raise ConfigError(f"the Square attack needs n_queries >= 1, got {n_queries}")
    if not 0 < p_init <= 1:
        raise ConfigError(f"the Square attack's p_init must be in (0, 1], got {p_init}")


def _stripes(backend: Backend, model: Model, x: Array, y: Array, lower: Array, upper: Array,
             eps: float, rng) -> tuple[Array, Array, Array]:
    """The start: x + eps s clipped into the box, s a random sign per (example, channel, column)
    (vertical stripes); its margin (B',) and the one query it cost (B',) int."""
    b, c, _, w = (int(d) for d in x.shape)
    signs = backend.sign(backend.uniform(rng, (b, c, 1, w), -1.0, 1.0))
    x_start = backend.clip(x + eps * signs, lower, upper)
    return (x_start, margin(backend, backend.logits(model, x_start), y),
            backend.full((b,), 1, dtype="int"))


def _square_step(backend: Backend, model: Model, best: tuple[Array, Array], go_on: Array,
                 y: Array, lower: Array, upper: Array, eps: float, p: float, rng) -> tuple[Array, Array]:
    """One iteration on the rows go_on (m,) of the attacked set: a square of share p per row,
    accepted where it lowers the margin. best = (x_best, margin_best) of every attacked row,
    updated in place (`put`) and returned."""
    x_best, margin_best = best
    every = int(go_on.shape[0]) == int(x_best.shape[0])  # no row done yet: skip the gathers
    rows = (lambda a: a) if every else (lambda a: backend.take(a, go_on))
    x_cur = rows(x_best)
    _, c, h, w = (int(d) for d in x_cur.shape)
    m, side = int(go_on.shape[0]), square_side(p, h, w)
    top = _corner(backend, rng, m, h - side)
    left = _corner(backend, rng, m, w - side)
    signs = backend.sign(backend.uniform(rng, (m, c, 1, 1), -1.0, 1.0))
    r, col = backend.arange(h), backend.arange(w)
    in_rows = (r[None, :] >= top[:, None]) & (r[None, :] < top[:, None] + side)      # (m, H)
    in_cols = (col[None, :] >= left[:, None]) & (col[None, :] < left[:, None] + side)  # (m, W)
    in_square = in_rows[:, None, :, None] & in_cols[:, None, None, :]                 # (m, 1, H, W)
    x_new = backend.clip(x_cur + (2.0 * eps) * signs * in_square, rows(lower), rows(upper))
    margin_new = margin(backend, backend.logits(model, x_new), rows(y))
    margin_cur = rows(margin_best)
    better = margin_new < margin_cur
    x_next = backend.where(better[:, None, None, None], x_new, x_cur)
    margin_next = backend.where(better, margin_new, margin_cur)
    if every:
        return x_next, margin_next
    backend.put(x_best, go_on, x_next)
    backend.put(margin_best, go_on, margin_next)
    return x_best, margin_best


def _corner(backend: Backend, rng, m: int, last: int) -> Array:
    """(m,) int, uniform in {0, ..., last}: where each row's square starts."""
    u = backend.uniform(rng, (m,), 0.0, float(last + 1))
    return backend.clip(backend.astype(u, backend.dtypes["int"]), 0, last)  # float32 may round up


def _scatter(backend: Backend, out: SquareResult, attacked: Array, x_best: Array,
             margin_best: Array, margin_start: Array, queries: Array) -> SquareResult:
    """The attacked rows' results written into copies of the all-rows defaults of `out`."""
    fields = {"x_adv": (out.x_adv, x_best), "margin": (out.margin, margin_best),
              "margin_start": (out.margin_start, margin_start), "queries": (out.queries, queries)}
    for name, (full, rows) in fields.items():
        full = full + 0
        backend.put(full, attacked, rows)
        setattr(out, name, full)
    out.found = out.margin < 0
    return out


def craft(backend: Backend, model: Model, x: Array, y: Array, *, eps: float, rng=None,
          transfer: bool = False, n_queries: int = N_QUERIES, **_) -> tuple[Array, Array | None]:
    """The `square` row of minidyn.evaluation.attack_table: (x_adv, fooled) with fooled the
    attack's own (B,) record of a negative margin, None when the points are for another model."""
    result = square(model, x, y, eps=eps, n_queries=n_queries, rng=rng, backend=backend)
    return result.x_adv, None if transfer else result.found
