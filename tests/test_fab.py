"""FAB-T (minidyn.fab) against closed forms on linear models and against a transcription of
AutoAttack's code (fab_projections.projection_linf, fab_base.attack_single_run and perturb)."""
import math

import numpy as np
import pytest

from minidyn.backend import get_backend
from minidyn.errors import ConfigError
from minidyn.fab import craft, fab_targeted, projection_linf

SHAPE = (1, 5, 5)


# --- transcriptions of fra31/auto-attack a39220048b3c9f2cca9a4d3a54604793c68eca7e, in numpy ---
def reference_projection_linf(t, w, b):
    """autoattack/fab_projections.py projection_linf (lines 7-59), torch -> numpy."""
    w, b = w.copy(), b.copy()
    sign = 2 * ((w * t).sum(1) - b >= 0) - 1
    w *= sign[:, None]
    b *= sign
    a = (w < 0).astype(t.dtype)
    d = (a - t) * (w != 0)
    p = a - t * (2 * a - 1)
    indp = np.argsort(p, axis=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    indp2 = indp[:, ::-1]
    ws = np.take_along_axis(w, indp2, 1)
    bs2 = -ws * np.take_along_axis(d, indp2, 1)
    s = np.cumsum(np.abs(ws), axis=1)
    sb = np.cumsum(bs2, axis=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * np.take_along_axis(p, indp[:, 0:1], 1)[:, 0]
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & ~c_l
    lb = np.zeros(c2.sum())
    ub = np.full_like(lb, w.shape[1] - 1)
    indp_, sb_, s_, p_, b_ = indp[c2], sb[c2], s[c2], p[c2], b[c2]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        counter4 = np.floor((lb + ub) / 2)
        counter2 = counter4.astype(np.int64)[:, None]
        indcurr = np.take_along_axis(indp_, indp_.shape[1] - 1 - counter2, 1)
        b2 = (np.take_along_axis(sb_, counter2, 1)
              - np.take_along_axis(s_, counter2, 1) * np.take_along_axis(p_, indcurr, 1))[:, 0]
        c = b_ - b2 > 0
        lb, ub = np.where(c, counter4, lb), np.where(c, ub, counter4)
    lb = lb.astype(np.int64)
    if c_l.any():
        lmbd = np.maximum((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1]), 0)[:, None]
        d[c_l] = (2 * a[c_l] - 1) * lmbd
    lmbd = np.maximum((b[c2] - sb[c2, lb]) / (-s[c2, lb]), 0)[:, None]
    d[c2] = np.minimum(lmbd, d[c2]) * a[c2] + np.maximum(-lmbd, d[c2]) * (1 - a[c2])
    return d * (w != 0)


class Mlp:
    """The backends' "mlp" (fc1 - relu - fc2 - relu - fc3) from its parameters, in numpy: the
    reference's predict and get_diff_logits_grads_batch_targeted (fab_pt.py lines 100-114)."""

    def __init__(self, params):
        self.p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}

    def _layers(self, x):
        p, h0 = self.p, x.reshape(len(x), -1)
        a1 = h0 @ p["fc1.weight"].T + p["fc1.bias"]
        a2 = np.maximum(a1, 0) @ p["fc2.weight"].T + p["fc2.bias"]
        return a1, a2, np.maximum(a2, 0) @ p["fc3.weight"].T + p["fc3.bias"]

    def logits(self, x):
        return self._layers(x)[2]

    def diff_and_grad(self, x, la, la_target):
        """df (B, 1) = -(z_la - z_target), dg (B, 1, ...) its gradient."""
        p, u = self.p, np.arange(len(x))
        a1, a2, z = self._layers(x)
        dz = np.zeros_like(z)
        dz[u, la_target] += 1
        dz[u, la] -= 1
        dh2 = (dz @ p["fc3.weight"]) * (a2 > 0)
        dh1 = (dh2 @ p["fc2.weight"]) * (a1 > 0)
        return (-(z[u, la] - z[u, la_target]))[:, None], (dh1 @ p["fc1.weight"]).reshape(x.shape)[:, None]


def reference_single_run(net, x, y, target_class, *, eps, n_iter, alpha_max, eta, beta, noise=None):
    """fab_base.py FABAttack.attack_single_run (lines 83-263), Linf, is_targeted=True."""
    ndims = x.ndim - 1
    pred = (net.logits(x).argmax(1) == y).nonzero()[0]
    la_target2 = np.argsort(net.logits(x), axis=1)[:, -target_class][pred]
    im2, la2 = x[pred].copy(), y[pred].copy()
    bs = len(im2)
    u1 = np.arange(bs)
    adv, adv_c, res2 = im2.copy(), x.copy(), 1e10 * np.ones(bs)
    x1, x0 = im2.copy(), im2.reshape(bs, -1).copy()
    if noise is not None:
        t = noise(x1.shape)
        scale = np.minimum(res2, eps * np.ones(bs)).reshape(-1, *[1] * ndims)
        x1 = im2 + scale * t / np.abs(t.reshape(bs, -1)).max(1).reshape(-1, *[1] * ndims) * .5
        x1 = x1.clip(0.0, 1.0)
    for _ in range(n_iter):
        df, dg = net.diff_and_grad(x1, la2, la_target2)
        dist1 = np.abs(df) / (1e-12 + np.abs(dg).reshape(dg.shape[0], dg.shape[1], -1).sum(-1))
        ind = dist1.argmin(1)
        dg2 = dg[u1, ind]
        b = -df[u1, ind] + (dg2 * x1).reshape(bs, -1).sum(-1)
        w = dg2.reshape(bs, -1)
        d3 = reference_projection_linf(np.concatenate((x1.reshape(bs, -1), x0)),
                                       np.concatenate((w, w)), np.concatenate((b, b)))
        d1, d2 = d3[:bs].reshape(x1.shape), d3[-bs:].reshape(x1.shape)
        a0 = np.maximum(np.abs(d3).max(1, keepdims=True).reshape(-1, *[1] * ndims), 1e-8)
        a1, a2 = a0[:bs], a0[-bs:]
        alpha = np.minimum(np.maximum(a1 / (a1 + a2), 0), alpha_max)
        x1 = ((x1 + eta * d1) * (1 - alpha) + (im2 + d2 * eta) * alpha).clip(0.0, 1.0)
        is_adv = net.logits(x1).argmax(1) != la2
        if is_adv.sum() > 0:
            ind_adv = is_adv.nonzero()[0]
            t = np.abs(x1[ind_adv] - im2[ind_adv]).reshape(len(ind_adv), -1).max(1)
            closer = (t < res2[ind_adv]).reshape(-1, *[1] * ndims)
            adv[ind_adv] = x1[ind_adv] * closer + adv[ind_adv] * ~closer
            res2[ind_adv] = np.where(t < res2[ind_adv], t, res2[ind_adv])
            x1[ind_adv] = im2[ind_adv] + (x1[ind_adv] - im2[ind_adv]) * beta
    ind_succ = (res2 < 1e10).nonzero()[0]
    adv_c[pred[ind_succ]] = adv[ind_succ]
    return adv_c


def reference_fab_t(net, x, y, *, eps, n_target_classes, n_restarts, noise, **kw):
    """fab_base.py FABAttack.perturb (lines 265-329), targeted: -> (adv, acc)."""
    adv, acc = x.copy(), net.logits(x).argmax(1) == y
    for target_class in range(2, n_target_classes + 2):
        for counter in range(n_restarts):
            ind_to_fool = acc.nonzero()[0]
            if len(ind_to_fool):
                x_to_fool, y_to_fool = x[ind_to_fool].copy(), y[ind_to_fool].copy()
                adv_curr = reference_single_run(net, x_to_fool, y_to_fool, target_class, eps=eps,
                                                noise=noise if counter > 0 else None, **kw)
                acc_curr = net.logits(adv_curr).argmax(1) == y_to_fool
                res = np.abs(x_to_fool - adv_curr).reshape(len(x_to_fool), -1).max(1)
                acc_curr = np.maximum(acc_curr, res > eps)
                ind_curr = (acc_curr == 0).nonzero()[0]
                acc[ind_to_fool[ind_curr]] = 0
                adv[ind_to_fool[ind_curr]] = adv_curr[ind_curr]
    return adv, acc


# --- the projection --------------------------------------------------------------------------
def random_hyperplanes(rng, n=400, d=30):
    """Points in the box (some on its faces), hyperplanes (some w_i = 0, some ties in p) with
    offsets that cover the reference's three cases: no coordinate reaches the box (c_l), some
    do (c2), the hyperplane is out of the box's reach (the corner)."""
    t = rng.random((n, d))
    t[rng.random((n, d)) < 0.1] = 0.0
    t[rng.random((n, d)) < 0.1] = 1.0
    t[::7, : d // 2] = 0.25  # ties
    w = rng.normal(size=(n, d))
    w[rng.random((n, d)) < 0.1] = 0.0
    wt = (w * t).sum(1)
    reach = np.abs(w).sum(1) * rng.choice([1e-4, 0.05, 0.3, 0.8, 3.0], n) * rng.choice([-1, 1], n)
    b = wt + reach
    b[::11] = wt[::11]  # already on the hyperplane
    return t, w, b


def test_the_projection_is_the_references_on_random_hyperplanes(backend64):
    B = backend64
    t, w, b = random_hyperplanes(np.random.default_rng(0))
    want = reference_projection_linf(t, w, b)
    got = B.to_numpy(projection_linf(B, B.asarray(t), B.asarray(w), B.asarray(b)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    on_plane = (w * (t + got)).sum(1) - b
    reached = np.abs((w * (t + want)).sum(1) - b) < 1e-9  # else the corner closest to the plane
    assert reached.sum() > 100 and (~reached).sum() > 10  # both kinds of row were exercised
    np.testing.assert_allclose(on_plane[reached], 0, atol=1e-12)
    assert np.all((t + got >= -1e-12) & (t + got <= 1 + 1e-12))


def test_the_segment_solve_makes_few_bisections_exact(backend64):
    """Bisection alone would be off by max p / 2^20 here; the solve on the segment is exact
    unless a breakpoint falls inside the last bracket (none does for these rows)."""
    B = backend64
    t, w, b = random_hyperplanes(np.random.default_rng(2))
    got = B.to_numpy(projection_linf(B, B.asarray(t), B.asarray(w), B.asarray(b), bisections=20))
    np.testing.assert_allclose(got, reference_projection_linf(t, w, b), rtol=0, atol=1e-12)


def test_the_projection_in_float32_agrees_to_rounding(backend):
    t, w, b = random_hyperplanes(np.random.default_rng(1), d=784)
    t, w, b = t.astype(np.float32), w.astype(np.float32), b.astype(np.float32)
    got = backend.to_numpy(projection_linf(backend, backend.asarray(t), backend.asarray(w), backend.asarray(b)))
    want = reference_projection_linf(t.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


# --- linear models: the answer in closed form ------------------------------------------------
def linear(B, classes, n, seed=0):
    """A softmax-regression model z = W x + c and points x_0 in [0.4, 0.6] labelled by it."""
    model = B.make_model("softmax", SHAPE, classes, seed)
    params = B.get_params(model)
    W, c = params["fc1.weight"], params["fc1.bias"]
    x0 = np.random.default_rng(seed).uniform(0.4, 0.6, (n,) + SHAPE)
    z = x0.reshape(n, -1) @ W.T + c
    return model, W, z, x0, z.argmax(1)


def test_one_projection_lands_on_a_linear_boundary_with_the_box_in_the_way(backend64):
    """For f(x) = <w, x> - b < 0 the smallest L_inf move onto f = 0 is sign(w) |f| / ||w||_1;
    with the coordinates that would move out of the box pinned on its faces, the free ones carry
    it: sign(w_i) |f| / sum_free |w_i| (while that stays inside the box)."""
    B = backend64
    _, W, _, x0, y = linear(B, 2, 12)
    x = x0.reshape(12, -1).copy()
    w = W[1 - y] - W[y]
    free = np.ones_like(x, dtype=bool)
    free[:6, :8] = False  # pinned on the face they would move towards
    x[~free] = np.where(w[~free] > 0, 1.0, 0.0)
    delta = np.random.default_rng(1).uniform(0.01, 0.35, 12)
    b = (w * x).sum(1) + delta * (np.abs(w) * free).sum(1)
    d = B.to_numpy(projection_linf(B, B.asarray(x), B.asarray(w), B.asarray(b)))
    np.testing.assert_allclose(d, np.sign(w) * delta[:, None] * free, rtol=0, atol=1e-12)
    np.testing.assert_allclose((w * (x + d)).sum(1), b, rtol=0, atol=1e-12)


def test_one_fab_step_reaches_the_linear_boundary_times_eta(backend64):
    """On a linear model FAB's first step is x_0 + eta d* (alpha = 1/2 is cut to alpha_max, but
    both projections coincide at x^0 = x_0): the recorded distance is eta ||d*||_inf, and over all
    targets (none fooled within eps = 1e-4, so every target runs) the smallest of them."""
    B = backend64
    model, W, z, x0, y = linear(B, 5, 10)
    x, yy = B.asarray(x0), B.asarray(y)
    flat, rows = x0.reshape(10, -1), np.arange(10)
    delta = np.array([[(z[i, y[i]] - z[i, t]) / np.abs(W[t] - W[y[i]]).sum() if t != y[i] else np.inf
                       for t in range(5)] for i in rows])
    assert delta.min(1).max() * 1.05 < 0.4  # the box never binds
    res = fab_targeted(model, x, yy, eps=1e-4, steps=1, stop_when_fooled=False, backend=B)
    np.testing.assert_allclose(B.to_numpy(res.distance), 1.05 * delta.min(1), rtol=1e-10)
    assert not B.to_numpy(res.fooled).any() and res.grad_evals == 40
    eps = float(1.05 * np.median(delta.min(1)))
    res = fab_targeted(model, x, yy, eps=eps, steps=1, n_target_classes=4, stop_when_fooled=False, backend=B)
    t2 = np.argsort(z, 1)[:, -2]  # the first target
    want_first = flat + 1.05 * np.sign(W[t2] - W[y]) * delta[rows, t2][:, None]
    fooled = B.to_numpy(res.fooled)
    np.testing.assert_array_equal(fooled, 1.05 * delta.min(1) <= eps)
    first = fooled & (1.05 * delta[rows, t2] <= eps)
    assert first.any()
    np.testing.assert_allclose(B.to_numpy(res.x_adv).reshape(10, -1)[first], want_first[first], atol=1e-12)
    np.testing.assert_array_equal(B.to_numpy(res.x_adv)[~fooled], x0[~fooled])


def test_more_steps_close_in_on_the_linear_minimum(backend64):
    """From eta ||d*|| after one step to within 1% of ||d*||, never below it (the overshoot eta
    keeps every iterate just across the boundary)."""
    B = backend64
    model, W, z, x0, y = linear(B, 2, 8)
    delta = np.abs(z[:, 0] - z[:, 1]) / np.abs(W[0] - W[1]).sum()
    res = fab_targeted(model, B.asarray(x0), B.asarray(y), eps=1e-4, steps=60, stop_when_fooled=False, backend=B)
    dist = B.to_numpy(res.distance)
    assert np.all(dist >= delta * (1 - 1e-9)) and np.all(dist <= delta * 1.01)


# --- the whole attack against the reference's loop -------------------------------------------
def tiny_problem(B, n=24, classes=5):
    """The numpy backend's seed-0 mlp on every backend (so one eps suits all), 24 points."""
    model = B.make_model("mlp", SHAPE, classes, 0)
    B.set_params(model, get_backend("numpy", dtype="float64").get_params(
        get_backend("numpy", dtype="float64").make_model("mlp", SHAPE, classes, 0)))
    x0 = np.random.default_rng(3).random((n,) + SHAPE)
    logits = B.to_numpy(B.logits(model, B.asarray(x0)))
    y = logits.argmax(1)
    y[:3] = (y[:3] + 1) % classes  # three misclassified at x: never attacked
    return model, Mlp(B.get_params(model)), x0, y


@pytest.mark.parametrize("alpha_max, eta, beta, steps, eps", [
    (0.1, 1.05, 0.9, 8, 0.05),   # AutoAttack's settings
    (0.02, 1.2, 0.6, 8, 0.05),   # alpha_max binds after the first step
    (0.1, 1.05, 0.9, 2, 0.12),   # a random start breaks what the first run did not
])
def test_fab_t_is_the_references_point_for_point(backend64, alpha_max, eta, beta, steps, eps):
    """Same targets, same random starts (drawn from the same generator in the same order), same
    iterates: every example's verdict and returned point are the reference's."""
    B = backend64
    model, net, x0, y = tiny_problem(B)
    kw = dict(eps=eps, n_target_classes=3, n_iter=steps, alpha_max=alpha_max, eta=eta, beta=beta)

    def reference(seed):
        draws = B.rng(seed)
        return reference_fab_t(net, x0, y, n_restarts=2, **kw,
                               noise=lambda shape: B.to_numpy(B.uniform(draws, shape, -1.0, 1.0)))

    seed = 5
    if steps == 2:  # the case it is meant to be: a seed whose random start changes the first run's point
        one_run, _ = reference_fab_t(net, x0, y, n_restarts=1, noise=None, **kw)
        # each backend's generator draws its own starts (CuPy's seed 5 changed nothing)
        seed = next((s for s in range(5, 25) if np.abs(one_run - reference(s)[0]).max() > 0), None)
        assert seed is not None, "no seed in 5..24 gives a random start that changes the first run's point"
    want_adv, want_acc = reference(seed)
    res = fab_targeted(model, B.asarray(x0), B.asarray(y), eps=eps, steps=steps, n_target_classes=3, restarts=2,
                       alpha_max=alpha_max, eta=eta, beta=beta, stop_when_fooled=False, rng=B.rng(seed), backend=B)
    fooled = B.to_numpy(res.fooled)
    assert 3 < fooled.sum() < 24  # some broken, some robust
    np.testing.assert_array_equal(fooled, ~want_acc)
    np.testing.assert_allclose(B.to_numpy(res.x_adv), want_adv, rtol=0, atol=1e-9)


def test_stopping_when_fooled_changes_no_verdict_and_saves_gradients(backend64):
    B = backend64
    model, net, x0, y = tiny_problem(B)
    for eps in (0.03, 0.05, 0.08):
        runs = {stop: fab_targeted(model, B.asarray(x0), B.asarray(y), eps=eps, steps=20, n_target_classes=3,
                                   stop_when_fooled=stop, backend=B) for stop in (False, True)}
        np.testing.assert_array_equal(B.to_numpy(runs[True].fooled), B.to_numpy(runs[False].fooled))
        assert runs[True].grad_evals < runs[False].grad_evals
        _, want_acc = reference_fab_t(net, x0, y, eps=eps, n_target_classes=3, n_restarts=1, noise=None,
                                      n_iter=20, alpha_max=0.1, eta=1.05, beta=0.9)
        np.testing.assert_array_equal(B.to_numpy(runs[True].fooled), ~want_acc)


def test_points_are_feasible_and_fooled_is_the_forward_pass(backend):
    B, eps = backend, 0.05
    model, _, x0, y = tiny_problem(B)
    x, yy = B.asarray(x0), B.asarray(y)
    x_adv, fooled = craft(B, model, x, yy, eps=eps, steps=10)
    adv, xb = B.to_numpy(x_adv), B.to_numpy(x)
    assert np.abs(adv - xb).max() <= eps and adv.min() >= 0 and adv.max() <= 1
    wrong = B.to_numpy(B.argmax(B.logits(model, x_adv))) != y
    np.testing.assert_array_equal(wrong, B.to_numpy(fooled))
    assert wrong[:3].all() and 3 < wrong.sum() < 24
    np.testing.assert_array_equal(adv[~wrong], xb[~wrong])


def test_eps_zero_returns_x(backend):
    B = backend
    model, _, x0, y = tiny_problem(B)
    res = fab_targeted(model, B.asarray(x0), B.asarray(y), eps=0.0, backend=B)
    np.testing.assert_array_equal(B.to_numpy(res.x_adv), B.to_numpy(B.asarray(x0)))
    np.testing.assert_array_equal(B.to_numpy(res.fooled), np.arange(24) < 3)
    assert res.grad_evals == 0


@pytest.mark.parametrize("bad, match", [(dict(steps=0), "steps"), (dict(restarts=0), "restarts"),
                                        (dict(n_target_classes=0), "n_target_classes"),
                                        (dict(beta=0.0), "beta"), (dict(eta=0.0), "eta"),
                                        (dict(alpha_max=1.5), "alpha_max"), (dict(eps=2.0), "eps"),
                                        (dict(steps="ten"), "steps"), (dict(steps=2.5), "steps")])
def test_bad_settings_are_one_line_errors(backend, bad, match):
    B = backend
    model, _, x0, y = tiny_problem(B, n=2)
    kw = dict(eps=0.1) | bad
    with pytest.raises(ConfigError, match=match):
        fab_targeted(model, B.asarray(x0), B.asarray(y), backend=B, **kw)
