"""The properties each task's check states, with the oracle each is checked against and the
known mistakes recognised by name.

A `Property` draws an example with Hypothesis, calls the student's function(s) and raises
`Failure` (the counterexample, the two values and, for a known mistake, a hint) when the
property does not hold; grader.py runs it and reports the shrunk counterexample. Oracles:
minidyn's own implementation (minidyn.course.reference), brute force over the vertices of the
ball (FOSC), central finite differences (the cross-entropy's gradient). Needs Hypothesis.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minidyn.course import reference as ref


class Failure(AssertionError):
    """A property that does not hold on one example: what was seen, and a hint or None."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class Property:
    """One checked fact: `statement` in words, `strategy()` the Hypothesis strategy of its
    examples, `check(module, example)` raises Failure when it does not hold."""

    task: int
    name: str
    statement: str
    strategy: Callable[[], Any]
    check: Callable[[Any, Any], None]


# --- hints: the known mistakes, recognised from the student's values ---------------------------
HINTS = {
    "batch_mean": ("your values are 1/B of the expected ones (B = {b}, the batch size): the batch-mean "
                   "loss mistake. FOSC and its gradient are per example, from each example's own (summed) "
                   "loss; a mean divides every value by B and makes the paper's c_max = 0.5 meaningless"),
    "coordinate_mean": ("your values are 1/d of the expected (d = {d} coordinates): sum over the coordinates "
                        "of each example, do not average"),
    "sign": "the second term has the wrong sign: c = eps * ||g||_1 MINUS <x_k - x_0, g>",
    "box_forgotten": ("the box clip [lo, hi] is forgotten: the result must also stay in the pixel box "
                      "(the eps-ball alone lets pixels leave [0, 1])"),
    "ball_forgotten": ("the eps-ball clip is forgotten: each coordinate must stay within eps of x_0 "
                       "(clip to [x_0 - eps, x_0 + eps], then to [lo, hi])"),
    "box_before": ("the box clip is applied before the step (or before the ball), so the step can leave [0, 1]: "
                   "take the step first, then project onto the ball AND the box (your Task 2 `project`)"),
    "v_reversed": ("the stop mask is reversed: you took the paper's printed V = 1(c <= c_t) literally. V is the "
                   "examples that go ON: V_i = 1 while FOSC c_i > c_t, and 0 once c_i <= c_t (the authors' code)"),
    "v_strict": "an example whose FOSC equals c_t exactly must stop (c <= c_t stops): use > for V, not >=",
    "v_ignored": "stopped examples (V False) moved: they must stay exactly where they are",
    "epoch_late": "c_t is one epoch late: t counts from 0, and epoch 0 uses c_max itself (you computed c_(t-1))",
    "epoch_early": "c_t is one epoch early: t counts from 0, and epoch 0 uses c_max itself (you computed c_(t+1))",
    "no_clamp": "c_t went below 0: from epoch T' on it is 0, c_t = max(c_max - t * c_max / T', 0)",
    "transposed": "a gradient is transposed: dL/dW = g^T h has W's shape (out, in), not h^T g (in, out)",
    "unnormalised": ("the gradient is unnormalised: softmax(z) = exp(z) / sum_j exp(z_j) sums to 1, so each "
                     "row of d loss / d z = softmax(z) - onehot(y) sums to 0; yours does not"),
    "relu": ("the ReLU's backward is missing or wrong: pass g * (a > 0) back through each ReLU, "
             "with a the ReLU's output"),
    "shape": "wrong shape: expected {expected}, got {got}",
}


def hint(key: str, **values) -> str:
    return HINTS[key].format(**values)


def fmt(a) -> str:
    return " ".join(np.array2string(np.asarray(a), precision=4, separator=", ", threshold=40).split())


def close(a, b, tol=1e-7) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol)


def scale_hint(got, expected, b: int, d: int) -> str | None:
    """The hint for a student value that is the expected one times 1/B, 1/d or with a sign flip."""
    got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
    if got.shape != expected.shape:
        return hint("shape", expected=expected.shape, got=got.shape)
    if b > 1 and close(got * b, expected):
        return hint("batch_mean", b=b)
    if d > 1 and close(got * d, expected):
        return hint("coordinate_mean", d=d)
    return None


def compare(what: str, got, expected, example: str, hint_text: str | None, tol=1e-6) -> None:
    """Failure unless got equals expected (same shape, close values)."""
    if not close(got, expected, tol):
        got_shape = np.shape(got)
        raise Failure(f"{example}\n{what}: yours {fmt(got)} (shape {got_shape}), expected {fmt(expected)}",
                      hint_text)


def call(module, name: str, *args, **kwargs):
    """module.name(*args, **kwargs) on copies of the array arguments (a function that writes
    into its inputs must not change the example the expected value is computed from); a
    student function that is missing is a Failure."""
    fn = getattr(module, name, None)
    if fn is None:
        raise Failure(f"{module.__name__}.py has no function {name!r}")
    def fresh(a):
        return a.copy() if isinstance(a, np.ndarray) else a
    return fn(*map(fresh, args), **{k: fresh(v) for k, v in kwargs.items()})


# --- Task 1: FOSC -------------------------------------------------------------------------------
unit = st.floats(0, 1, allow_nan=False, width=64)
finite = st.floats(-10, 10, allow_nan=False, width=64)


@st.composite
def fosc_problem(draw, max_d=5, max_b=3, image=False):
    """(x_k, x_0, g, eps) with x_k in the eps-ball of x_0; image: (B, 1, 2, 2)-shaped examples."""
    b = draw(st.integers(1, max_b))
    shape = (b, 1, 2, 2) if image else (b, draw(st.integers(1, max_d)))
    eps = draw(st.sampled_from([0.1, 0.25, 0.3, 0.5]))
    x0 = draw(arrays(np.float64, shape, elements=unit))
    u = draw(arrays(np.float64, shape, elements=st.floats(-1, 1)))
    g = draw(arrays(np.float64, shape, elements=finite))
    return x0 + eps * u, x0, g, eps


def fosc_example(x_k, x_0, g, eps) -> str:
    return f"eps={eps:g}\nx_0={fmt(x_0)}\nx_k={fmt(x_k)}\ng={fmt(g)}"


def vertex_maximum(x_k, x_0, g, eps):
    """Eq. 3 by brute force: the max of <v - x_k, g> over the 2^d vertices v of the ball."""
    b, d = x_k.shape
    best = np.full(b, -np.inf)
    for signs in itertools.product((-1.0, 1.0), repeat=d):
        best = np.maximum(best, ((x_0 + eps * np.array(signs) - x_k) * g).sum(axis=1))
    return best


def fosc_hint(got, x_k, x_0, g, eps) -> str | None:
    b, d = x_k.shape[0], int(np.prod(x_k.shape[1:]))
    if np.shape(got) != (b,):
        return (f"wrong shape: expected ({b},), one value per example, got {np.shape(got)}: sum over every "
                "coordinate of an example (e.g. reshape to (B, -1) and sum over axis 1)")
    flipped = eps * np.abs(g).reshape(b, -1).sum(1) + ((x_k - x_0) * g).reshape(b, -1).sum(1)
    if close(got, flipped) and not close(flipped, ref.fosc(x_k, x_0, g, eps)):
        return hint("sign")
    return scale_hint(got, ref.fosc(x_k, x_0, g, eps), b, d)


def check_fosc_vertices(module, example):
    x_k, x_0, g, eps = example
    got = call(module, "fosc", x_k, x_0, g, eps)
    compare("FOSC", got, vertex_maximum(x_k, x_0, g, eps), fosc_example(*example), fosc_hint(got, *example))


def check_fosc_images(module, example):
    x_k, x_0, g, eps = example
    got = call(module, "fosc", x_k, x_0, g, eps)
    compare("FOSC", got, ref.fosc(x_k, x_0, g, eps), fosc_example(*example), fosc_hint(got, *example))


def check_fosc_stationary(module, example):
    _, x_0, g, eps = example
    corner = x_0 + eps * np.sign(g)
    got = call(module, "fosc", corner, x_0, g, eps)
    compare("FOSC at x_0 + eps * sign(g)", got, np.zeros(len(g)), fosc_example(corner, x_0, g, eps),
            fosc_hint(got, corner, x_0, g, eps))


# --- Task 2: projection -------------------------------------------------------------------------
@st.composite
def projection_problem(draw):
    b, d = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    eps = draw(st.sampled_from([0.1, 0.3, 0.5]))
    x0 = draw(arrays(np.float64, (b, d), elements=st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]) | unit))
    x = draw(arrays(np.float64, (b, d), elements=st.floats(-1, 2, width=64)))
    return x, x0, eps


def projection_hint(got, x, x_0, eps) -> str | None:
    if close(got, np.clip(x, x_0 - eps, x_0 + eps)):
        return hint("box_forgotten")
    if close(got, np.clip(x, 0.0, 1.0)):
        return hint("ball_forgotten")
    return scale_hint(got, ref.project(x, x_0, eps), len(x), x.shape[1])


def check_projection(module, example):
    x, x_0, eps = example
    got = call(module, "project", x, x_0, eps)
    compare("project(x, x_0, eps)", got, ref.project(x, x_0, eps),
            f"eps={eps:g}\nx_0={fmt(x_0)}\nx={fmt(x)}", projection_hint(got, x, x_0, eps))


def check_projection_feasible(module, example):
    x, x_0, eps = example
    got = np.asarray(call(module, "project", x, x_0, eps))
    example_text = f"eps={eps:g}\nx_0={fmt(x_0)}\nx={fmt(x)}\nyours={fmt(got)}"
    if got.shape != x.shape:
        raise Failure(example_text, hint("shape", expected=x.shape, got=got.shape))
    if np.any(got < -1e-12) or np.any(got > 1 + 1e-12):
        raise Failure(example_text + "\na coordinate is outside [0, 1]", hint("box_forgotten"))
    if np.any(np.abs(got - x_0) > eps + 1e-12):
        raise Failure(example_text + "\na coordinate is more than eps from x_0", hint("ball_forgotten"))


def check_projection_fixed(module, example):
    x, x_0, eps = example
    inside = ref.project(x, x_0, eps)
    got = call(module, "project", inside, x_0, eps)
    compare("project of a feasible point", got, inside, f"eps={eps:g}\nx_0={fmt(x_0)}\nx={fmt(inside)}",
            projection_hint(got, inside, x_0, eps))


# --- Task 3: the PGD step and its stop ----------------------------------------------------------
@st.composite
def stop_problem(draw):
    c_t = draw(st.sampled_from([0.0, 0.1, 0.5]))
    c = draw(st.lists(st.sampled_from([c_t]) | st.floats(0, 1, width=64), min_size=1, max_size=5))
    return np.array(c), c_t


def check_stop_mask(module, example):
    c, c_t = example
    got = np.asarray(call(module, "stop_mask", c, c_t))
    expected = ref.stop_mask(c, c_t)
    if got.shape == expected.shape and np.array_equal(got.astype(bool), expected):
        return
    raise Failure(f"c={fmt(c)}, c_t={c_t:g}\nV: yours {fmt(got)}, expected {fmt(expected)}",
                  stop_hint(module))


def stop_hint(module) -> str | None:
    """The hint for a wrong stop mask, from probes away from and at the tie (a shrunk
    counterexample sits at the tie, where a reversed mask and >= look the same)."""
    c, c_t = np.array([0.2, 0.5, 0.8]), 0.5
    got = np.asarray(call(module, "stop_mask", c, c_t))
    if got.shape != c.shape:
        return hint("shape", expected=c.shape, got=got.shape)
    for key, mask in (("v_reversed", c <= c_t), ("v_strict", c >= c_t)):
        if np.array_equal(got.astype(bool), mask):
            return hint(key)
    return None


@st.composite
def step_problem(draw):
    x, x0, eps = draw(projection_problem())
    x_k = ref.project(x, x0, eps)
    g = draw(arrays(np.float64, x.shape, elements=st.sampled_from([-1.0, 0.0, 2.0]) | finite))
    v = np.array(draw(st.lists(st.booleans(), min_size=len(x), max_size=len(x))))
    return x_k, x0, g, v, eps, draw(st.sampled_from([0.05, 0.1, 0.25]))


def step_hint(got, x_k, x_0, g, v, eps, alpha) -> str | None:
    moved = np.where(v.reshape(-1, *[1] * (x_k.ndim - 1)), x_k + alpha * np.sign(g), x_k)
    if close(got, np.clip(np.clip(x_k, 0, 1) + (moved - x_k), x_0 - eps, x_0 + eps)) or \
            close(got, np.clip(moved, x_0 - eps, x_0 + eps)):
        return hint("box_before")
    if close(got, ref.project(x_k + alpha * np.sign(g), x_0, eps)):
        return hint("v_ignored")
    if close(got, ref.project(np.where(v.reshape(-1, *[1] * (x_k.ndim - 1)), x_k, x_k + alpha * np.sign(g)), x_0, eps)):
        return hint("v_reversed")
    return None


def check_pgd_step(module, example):
    x_k, x_0, g, v, eps, alpha = example
    got = call(module, "pgd_step", x_k, x_0, g, v, eps, alpha)
    compare("x^(k+1)", got, ref.pgd_step(*example),
            f"eps={eps:g}, alpha={alpha:g}, V={fmt(v)}\nx_0={fmt(x_0)}\nx_k={fmt(x_k)}\ng={fmt(g)}",
            step_hint(got, *example))


def check_pgd_step_stopped(module, example):
    x_k, x_0, g, v, eps, alpha = example
    got = np.asarray(call(module, "pgd_step", x_k, x_0, g, v, eps, alpha))
    if got.shape != x_k.shape or not np.array_equal(got[~v], x_k[~v]):
        raise Failure(f"V={fmt(v)}\nx_k={fmt(x_k)}\nyours={fmt(got)}", hint("v_ignored"))


# --- Task 4: the schedule -----------------------------------------------------------------------
@st.composite
def schedule_problem(draw):
    return (draw(st.sampled_from([0.5, 0.1, 1.0, 0.3])), draw(st.integers(1, 40)), draw(st.integers(0, 60)))


def schedule_hint(module, c_max, T) -> str | None:
    ts = range(0, T + 3)
    got = [float(call(module, "c_t", t, c_max, T)) for t in ts]
    if any(v < -1e-12 for v in got):
        return hint("no_clamp")
    for key, shift in (("epoch_late", -1), ("epoch_early", 1)):
        if all(abs(v - ref.c_t(max(t + shift, 0), c_max, T)) < 1e-9 for t, v in zip(ts, got) if t + shift >= 0):
            return hint(key)
    return None


def check_schedule(module, example):
    c_max, T, t = example
    got = float(call(module, "c_t", t, c_max, T))
    expected = ref.c_t(t, c_max, T)
    if abs(got - expected) > 1e-9:
        raise Failure(f"t={t}, c_max={c_max:g}, T'={T}\nc_t: yours {got:g}, expected {expected:g}",
                      schedule_hint(module, c_max, T))


def check_schedule_ends(module, example):
    c_max, T, _ = example
    start, end = float(call(module, "c_t", 0, c_max, T)), float(call(module, "c_t", T, c_max, T))
    if abs(start - c_max) > 1e-9 or abs(end) > 1e-9:
        raise Failure(f"c_max={c_max:g}, T'={T}\nc_0: yours {start:g} (expected {c_max:g}); "
                      f"c_T': yours {end:g} (expected 0)", schedule_hint(module, c_max, T))


# --- Task 5: the gradients ----------------------------------------------------------------------
@st.composite
def logits_problem(draw):
    b, c, seed = draw(st.integers(1, 4)), draw(st.integers(2, 5)), draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1.0, 10.0, 1000.0]))
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, c)) * scale, rng.integers(0, c, size=b)


def ce_hint(losses, dlogits, logits, y) -> str | None:
    exp_losses, exp_d = ref.softmax_cross_entropy(logits, y)
    b, c = logits.shape
    if np.shape(losses) == () and b > 1:
        return hint("batch_mean", b=b)
    unnormalised = [np.exp(logits) - np.eye(c)[y], np.exp(logits - logits.max(1, keepdims=True)) - np.eye(c)[y]]
    if np.shape(dlogits) == exp_d.shape and any(close(dlogits, u) for u in unnormalised) \
            and not close(dlogits, exp_d):
        return hint("unnormalised")
    return scale_hint(dlogits, exp_d, b, c) or scale_hint(losses, exp_losses, b, 1)


def check_ce(module, example):
    logits, y = example
    losses, dlogits = call(module, "softmax_cross_entropy", logits.copy(), y)
    exp_losses, exp_d = ref.softmax_cross_entropy(logits, y)
    text = f"logits={fmt(logits)}\ny={fmt(y)}"
    h = ce_hint(losses, dlogits, logits, y)
    compare("losses", losses, exp_losses, text, h, tol=1e-6)
    compare("dlogits", dlogits, exp_d, text, h, tol=1e-6)


def check_ce_rows(module, example):
    logits, y = example
    _, dlogits = call(module, "softmax_cross_entropy", logits.copy(), y)
    rows = np.asarray(dlogits).sum(axis=-1)
    if np.shape(dlogits) != logits.shape or not np.allclose(rows, 0, atol=1e-6):
        raise Failure(f"logits={fmt(logits)}\ny={fmt(y)}\nrow sums of dlogits: {fmt(rows)}",
                      ce_hint(*call(module, "softmax_cross_entropy", logits.copy(), y), logits, y)
                      or hint("unnormalised"))


def check_ce_finite_differences(module, example):
    logits, y = example
    logits = logits / np.abs(logits).max()  # moderate values: finite differences stay accurate
    _, dlogits = call(module, "softmax_cross_entropy", logits.copy(), y)
    h, fd = 1e-6, np.zeros_like(logits)
    for j in range(logits.shape[1]):
        step = np.zeros_like(logits)
        step[:, j] = h
        plus, _ = call(module, "softmax_cross_entropy", logits + step, y)
        minus, _ = call(module, "softmax_cross_entropy", logits - step, y)
        fd[:, j] = (np.asarray(plus, dtype=float) - np.asarray(minus, dtype=float)) / (2 * h)
    compare("dlogits against finite differences of your losses", dlogits, fd,
            f"logits={fmt(logits)}\ny={fmt(y)}",
            ce_hint(*call(module, "softmax_cross_entropy", logits.copy(), y), logits, y),
            tol=1e-5)


@st.composite
def mlp_problem(draw):
    b, d, c = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(2, 3))
    hidden = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    sizes, params = [d, *hidden, c], {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"fc{layer}.weight"] = rng.normal(size=(fan_out, fan_in))
        params[f"fc{layer}.bias"] = rng.normal(size=(fan_out,))
    x = rng.uniform(size=(b, 1, d))
    return params, x, rng.normal(size=(b, c))


def mlp_hint(dx, grads, params, cache, dlogits) -> str | None:
    exp_dx, exp_grads = ref.mlp_backward(params, cache, dlogits)
    for name, expected in exp_grads.items():
        got = np.asarray(grads.get(name)) if isinstance(grads, dict) and name in grads else None
        if got is not None and got.shape != expected.shape and got.shape == expected.T.shape:
            return hint("transposed")
        if got is not None and scale_hint(got, expected, len(dlogits), 1):
            return scale_hint(got, expected, len(dlogits), 1)
    b = len(dlogits)
    if b > 1 and close(np.asarray(dx) * b, exp_dx):
        return hint("batch_mean", b=b)
    if len(params) > 2:
        linear = dlogits
        for layer in range(len(params) // 2, 0, -1):
            linear = linear @ params[f"fc{layer}.weight"]
        if close(dx, linear.reshape(cache[0])):
            return hint("relu")
    return None


def check_mlp_dx(module, example):
    params, x, dlogits = example
    _, cache = ref.mlp_forward(params, x)
    dx, grads = call(module, "mlp_backward", params, cache, dlogits)
    compare("dL/dx", dx, ref.mlp_backward(params, cache, dlogits)[0], mlp_example(params, x, dlogits),
            mlp_hint(dx, grads, params, cache, dlogits))


def check_mlp_params(module, example):
    params, x, dlogits = example
    _, cache = ref.mlp_forward(params, x)
    dx, grads = call(module, "mlp_backward", params, cache, dlogits)
    expected = ref.mlp_backward(params, cache, dlogits)[1]
    if not isinstance(grads, dict) or set(grads) != set(expected):
        raise Failure(f"{mlp_example(params, x, dlogits)}\ngrads must be a dict with the keys "
                      f"{sorted(expected)}, got {sorted(grads) if isinstance(grads, dict) else type(grads).__name__}")
    h = mlp_hint(dx, grads, params, cache, dlogits)
    for name in sorted(expected):
        compare(f"dL/d{name}", grads[name], expected[name], mlp_example(params, x, dlogits), h)


def mlp_example(params, x, dlogits) -> str:
    layers = ", ".join(f"{k} {v.shape}" for k, v in params.items())
    return f"x={fmt(x)}\nparams: {layers}\ndlogits={fmt(dlogits)}"


# --- Task 6: Algorithm 1 ------------------------------------------------------------------------
@st.composite
def algorithm1_problem(draw):
    b, d, c = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(2, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(c, d)) * draw(st.sampled_from([1.0, 5.0]))
    x0 = rng.uniform(size=(b, d))
    y = rng.integers(0, c, size=b)
    steps, c_t = draw(st.integers(1, 5)), draw(st.sampled_from([0.0, 0.05, 0.2, 1.0, None]))
    return w, x0, y, 0.3, 0.075, steps, c_t if c_t is not None else 0.5 * d, seed


def linear_loss_and_grad(w):
    """Per-example cross-entropy of the linear model z = x w^T, and its input gradient."""
    def loss_and_grad(x, y):
        losses, dlogits = ref.softmax_cross_entropy(np.asarray(x) @ w.T, y)
        return losses, dlogits @ w
    return loss_and_grad


def algorithm1_example(w, x0, y, eps, alpha, steps, c_t, seed) -> str:
    return (f"a linear model z = x W^T, W={fmt(w)}\nx_0={fmt(x0)}, y={fmt(y)}\neps={eps:g}, alpha={alpha:g}, "
            f"K={steps}, c_t={c_t:g}, rng=np.random.default_rng({seed})")


def check_attack(module, example):
    w, x0, y, eps, alpha, steps, c_t, seed = example
    f = linear_loss_and_grad(w)
    got = call(module, "attack_batch", f, x0, y, eps=eps, alpha=alpha, steps=steps, c_t=c_t,
               rng=np.random.default_rng(seed))
    x_adv, taken = ref.attack_batch(f, x0, y, eps=eps, alpha=alpha, steps=steps, c_t=c_t,
                                    rng=np.random.default_rng(seed))
    if not (isinstance(got, tuple) and len(got) == 2):
        raise Failure(f"{algorithm1_example(*example)}\nattack_batch must return (x_adv, steps_taken)")
    text = algorithm1_example(*example)
    compare("steps taken", got[1], taken, text, attack_hint(got[1], taken, steps))
    compare("x_adv", got[0], x_adv, text, None)


def attack_hint(got, expected, steps) -> str | None:
    got = np.asarray(got)
    if got.shape != expected.shape:
        return None
    if np.all(got == steps) and np.any(expected < steps):
        return "no example stopped: after each step k >= 1, stop the examples whose FOSC (from x_0) is <= c_t"
    if np.any(got == 0):
        return "an example stopped before its first step: the stop is checked from k = 1 on, never at x^0"
    if np.all(np.abs(got - expected) <= 1) and np.any(got != expected):
        return "the stop is one step off: check FOSC at x^k (the gradient of step k) before taking step k + 1"
    return None


def check_epoch(module, example):
    w, x0, y, eps, alpha, steps, c_t, seed = example
    f = linear_loss_and_grad(w)
    batches = [(x0, y), (x0[::-1].copy(), y[::-1].copy())]

    def recorder(calls):
        return lambda x, yy: calls.append((np.array(x), np.array(yy)))

    got_calls, expected_calls = [], []
    call(module, "train_epoch", f, recorder(got_calls), batches, c_t=c_t, eps=eps, alpha=alpha,
         steps=steps, rng=np.random.default_rng(seed))
    ref.train_epoch(f, recorder(expected_calls), batches, c_t=c_t, eps=eps, alpha=alpha, steps=steps,
                    rng=np.random.default_rng(seed))
    text = algorithm1_example(*example) + "\n(two batches: x_0 and x_0 reversed)"
    if len(got_calls) != len(expected_calls):
        raise Failure(f"{text}\nsgd_step was called {len(got_calls)} times, "
                      f"expected once per batch ({len(expected_calls)})")
    for i, ((gx, gy), (ex, ey)) in enumerate(zip(got_calls, expected_calls)):
        compare(f"the batch of SGD step {i + 1}", gx, ex, text,
                "train on the adversarial batch (attack_batch's x_adv), drawing every random start from the one rng")
        compare(f"the labels of SGD step {i + 1}", gy, ey, text, None)


PROPERTIES: tuple[Property, ...] = (
    Property(1, "vertices",
             "Eq. 4 equals the maximum of <x - x_k, g> over the 2^d vertices of the eps-ball (Eq. 3, brute force)",
             fosc_problem, check_fosc_vertices),
    Property(1, "images", "on image-shaped batches (B, 1, 2, 2), one value per example, as minidyn.fosc",
             lambda: fosc_problem(image=True), check_fosc_images),
    Property(1, "stationary", "c = 0 at the ball's maximiser x_0 + eps * sign(g)", fosc_problem, check_fosc_stationary),
    Property(2, "reference", "project equals the clip into [max(x_0 - eps, 0), min(x_0 + eps, 1)] (minidyn.projection)",
             projection_problem, check_projection),
    Property(2, "feasible", "the result lies in the eps-ball of x_0 and in the box [0, 1]", projection_problem,
             check_projection_feasible),
    Property(2, "fixed", "a point already in the feasible set is left where it is", projection_problem,
             check_projection_fixed),
    Property(3, "stop_mask", "V_i is True (go on) exactly where FOSC c_i > c_t", stop_problem, check_stop_mask),
    Property(3, "step", "pgd_step equals Proj(x_k + V * alpha * sign(g)) (minidyn.attacks.pgd's update)",
             step_problem, check_pgd_step),
    Property(3, "stopped", "an example with V False does not move", step_problem, check_pgd_step_stopped),
    Property(4, "formula", "c_t = max(c_max - t * c_max / T', 0) for t = 0, 1, ... (minidyn.schedules.DynamicSchedule)",
             schedule_problem, check_schedule),
    Property(4, "ends", "c_0 = c_max and c_T' = 0", schedule_problem, check_schedule_ends),
    Property(5, "ce", "softmax_cross_entropy equals minidyn's per-example losses and d loss_i / d z_i",
             logits_problem, check_ce),
    Property(5, "ce_rows", "each row of dlogits sums to 0 (softmax sums to 1)", logits_problem, check_ce_rows),
    Property(5, "ce_fd", "dlogits equals central finite differences of your losses", logits_problem,
             check_ce_finite_differences),
    Property(5, "mlp_dx", "mlp_backward's dL/dx equals minidyn's MLP backward (numpy_models.LinearNet)",
             mlp_problem, check_mlp_dx),
    Property(5, "mlp_params", "mlp_backward's parameter gradients equal minidyn's, each shaped like its parameter",
             mlp_problem, check_mlp_params),
    Property(6, "attack", "attack_batch equals minidyn.attacks.pgd with stop_fosc=c_t (points and steps per example)",
             algorithm1_problem, check_attack),
    Property(6, "epoch", "train_epoch takes one SGD step per batch, on that batch's adversarial examples",
             algorithm1_problem, check_epoch),
)


def properties_of(task: int) -> list[Property]:
    return [p for p in PROPERTIES if p.task == task]


# The names of each property's example, in order, for the counterexample shown after an error
_FOSC, _STEP = ("x_k", "x_0", "g", "eps"), ("x_k", "x_0", "g", "v", "eps", "alpha")
_PROJECT, _CE, _MLP = ("x", "x_0", "eps"), ("logits", "y"), ("params", "x", "dlogits")
_ALGORITHM1 = ("W", "x_0", "y", "eps", "alpha", "steps", "c_t", "seed")
EXAMPLE_NAMES = {
    check_fosc_vertices: _FOSC, check_fosc_images: _FOSC, check_fosc_stationary: _FOSC,
    check_projection: _PROJECT, check_projection_feasible: _PROJECT, check_projection_fixed: _PROJECT,
    check_stop_mask: ("c", "c_t"), check_pgd_step: _STEP, check_pgd_step_stopped: _STEP,
    check_schedule: ("c_max", "dynamic_epochs", "t"), check_schedule_ends: ("c_max", "dynamic_epochs", "t"),
    check_ce: _CE, check_ce_rows: _CE, check_ce_finite_differences: _CE,
    check_mlp_dx: _MLP, check_mlp_params: _MLP, check_attack: _ALGORITHM1, check_epoch: _ALGORITHM1,
}
