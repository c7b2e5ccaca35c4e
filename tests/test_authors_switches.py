"""The authors' code as switches, off by default: `--fosc-reference start` (FOSC measured from
the random start, YisenWang/dynamic_adv_training pgd_attack.py lines 62, 85-88) and
`--loss-weights ce` (the per-example cross-entropy sample_weight of train_models.py lines
116-117 and 124-127). docs/fosc.md, "The authors' code as switches"."""
import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn import get_backend
from minidyn.attacks import pgd, start_point
from minidyn.backends import numpy_models as nm
from minidyn.cli.main import main
from minidyn.files.config import TrainConfig
from minidyn.data import load_dataset
from minidyn.errors import ConfigError
from minidyn.fosc import fosc
from minidyn.methods import AttackPlan, attack_plan, loss_weights_at
from minidyn.projection import feasible_box
from minidyn.runs import config_differences, method_of, standalone_epoch
from minidyn.runs.weights import ce_weights

NP = get_backend("numpy")
F64 = get_backend("numpy", dtype="float64")
HAS_TORCH = importlib.util.find_spec("torch") is not None
DATA = load_dataset("mnist-sample", "train").subset(48)


def _linear(backend, weight, bias):
    model = backend.make_model("softmax", (2,), 2, seed=0)
    backend.set_params(model, {"fc1.weight": np.asarray(weight, np.float64),
                               "fc1.bias": np.asarray(bias, np.float64)})
    return model


# --- --fosc-reference ----------------------------------------------------------------------------
def test_fosc_formula_from_the_start_by_hand():
    """x_0 = (0.5, 0.5), start (0.6, 0.4), x = (0.7, 0.3), g = (1, -2), eps 0.2:
    natural 0.2 * 3 - <(0.2, -0.2), g> = 0.6 - 0.6 = 0; start 0.6 - <(0.1, -0.1), g> = 0.3."""
    x0, start, x, g = (np.array([[a, b]]) for a, b in [(0.5, 0.5), (0.6, 0.4), (0.7, 0.3), (1, -2)])
    assert fosc(x, x0, g, 0.2)[0] == pytest.approx(0.0)
    assert fosc(x, start, g, 0.2)[0] == pytest.approx(0.3)


def test_pgd_measures_fosc_from_the_unprojected_start_only_when_asked():
    """One PGD step on a linear model, by hand: with "start" the first gradient, the first step
    and FOSC's reference are at x_0 + u, unprojected (the third row's start leaves [0, 1]); at
    x^0 FOSC is eps ||g||_1, at x^1 eps ||g1||_1 - <x^1 - (x_0 + u), g1>; "natural" projects
    the start and measures from x_0. Where the start stays in the box the points agree."""
    model = _linear(F64, [[2.0, -1.0], [-1.0, 3.0]], [0.1, -0.2])
    x = np.array([[0.5, 0.5], [0.2, 0.9], [0.98, 0.01]])
    y = np.array([0, 1, 0])
    eps, alpha = 0.1, 0.04
    kw = dict(eps=eps, step_size=alpha, steps=1, final_stats=True, trace=True, backend=F64)
    start = pgd(model, x, y, rng=F64.rng(3), fosc_reference="start", **kw)
    natural = pgd(model, x, y, rng=F64.rng(3), **kw)
    default = pgd(model, x, y, rng=F64.rng(3), fosc_reference="natural", **kw)
    lower, upper = feasible_box(x, eps, (0.0, 1.0), F64)
    u = F64.uniform(F64.rng(3), x.shape, -eps, eps)  # the same draw
    x0 = x + u
    assert ((x0 < 0) | (x0 > 1)).any(axis=1).tolist() == [False, False, True]
    np.testing.assert_array_equal(start_point(x, eps, lower, upper, True, F64.rng(3), F64),
                                  np.clip(x0, lower, upper))
    _, g0 = F64.loss_and_grad(model, x0, y)
    np.testing.assert_array_equal(start.x_adv, np.clip(x0 + alpha * np.sign(g0), lower, upper))
    np.testing.assert_array_equal(start.x_adv[:2], natural.x_adv[:2])  # starts inside the box
    _, g1 = F64.loss_and_grad(model, start.x_adv, y)
    np.testing.assert_allclose(start.trace.fosc[0], eps * np.abs(g0).sum(1), rtol=1e-12)
    expected_start = eps * np.abs(g1).sum(1) - ((start.x_adv - x0) * g1).sum(1)
    _, g1n = F64.loss_and_grad(model, natural.x_adv, y)
    expected_natural = eps * np.abs(g1n).sum(1) - ((natural.x_adv - x) * g1n).sum(1)
    np.testing.assert_allclose(start.fosc, expected_start, rtol=1e-12)
    np.testing.assert_allclose(natural.fosc, expected_natural, rtol=1e-12)
    np.testing.assert_array_equal(default.fosc, natural.fosc)
    assert not np.allclose(start.fosc, natural.fosc)
    without_start = dict(kw, trace=False)  # no random start: x^0 = x_0, the two agree
    np.testing.assert_array_equal(pgd(model, x, y, random_start=False, fosc_reference="start", **without_start).fosc,
                                  pgd(model, x, y, random_start=False, **without_start).fosc)
    with pytest.raises(ConfigError, match="fosc_reference"):
        pgd(model, x, y, fosc_reference="x0", **kw)


def _authors_perturb(grad, x_nat, u, eps, eps_iter, nb_iter, cri, clip_min=0.0, clip_max=1.0):
    """LinfPGDAttack.perturb of YisenWang/dynamic_adv_training (commit 470210e, pgd_attack.py
    lines 44-99) for one batch, transcribed: `grad(x)` stands for sess.run of the per-example
    loss gradient and `u` for line 45's np.random.uniform draw; the mask of line 72 is
    repeated over the example's size (the original hard-codes 32*32*3). Returns (x, fosc_batch
    (B, nb_iter): FOSC at x^1 .. x^K)."""
    batch_x = x_nat + u                                      # 45: the random start, not clipped
    original_batch_x = np.copy(batch_x)                      # 62: FOSC's reference
    size = batch_x[0].size
    fosc_batch = None
    for j in range(nb_iter):
        if j == 0:                                           # 65-69: gradient and step at the start
            g = grad(batch_x)
            batch_x = batch_x + eps_iter * np.sign(g)
        else:                                                # 70-72: masked step
            mask = np.repeat(control_indicator, size).reshape(batch_x.shape)
            batch_x = batch_x + np.multiply(eps_iter * np.sign(g), mask)
        batch_x = np.clip(batch_x, x_nat - eps, x_nat + eps)  # 74: the eps-ball
        batch_x = np.clip(batch_x, clip_min, clip_max)       # 75: the pixel range
        g = grad(batch_x)                                    # 77-79
        g_flat = g.reshape(len(batch_x), -1)                 # 82-88: FOSC
        g_norm = np.abs(g_flat).sum(axis=1).reshape(-1, 1)
        diff = (batch_x - original_batch_x).reshape(len(batch_x), -1)
        fosc_j = np.copy(g_norm)
        for i in range(len(batch_x)):
            fosc_j[i] = -np.dot(g_flat[i], diff[i]) + eps * g_norm[i]
        control_indicator = np.copy(fosc_j)                  # 90-92: 0 stops, 1 goes on
        control_indicator[control_indicator <= cri] = 0
        control_indicator[control_indicator > cri] = 1
        fosc_batch = fosc_j if j == 0 else np.concatenate((fosc_batch, fosc_j), axis=1)  # 94-97
    return batch_x, fosc_batch


def _authors_xent_grad(weight, bias):
    """d/dx of line 30's loss -sum_j y_j log(softmax(W x + b)_j + 1e-20), per example, written
    out for a linear model: (p_y / (p_y + 1e-20)) W^T (p - onehot(y))."""
    def grad(x, y):
        z = x.reshape(len(x), -1) @ weight.T + bias
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p_y = p[np.arange(len(y)), y]
        dz = (p - np.eye(weight.shape[0])[y]) * (p_y / (p_y + 1e-20))[:, None]
        return (dz @ weight).reshape(x.shape)
    return grad


@pytest.mark.parametrize("model_name", ["softmax", "mlp"])
def test_pgd_with_fosc_from_the_start_is_the_authors_loop(model_name):
    """minidyn's pgd with fosc_reference="start" against the transcription of the authors'
    loop, on MNIST-like random inputs (most pixels 0 or 1, so starts leave the box) with c_t
    chosen so that some examples stop: the same points, stopping steps and FOSC."""
    rng = np.random.default_rng(7)
    n, shape, eps, alpha, steps = 24, (1, 5, 5), 0.3, 0.075, 10
    x = rng.choice([0.0, 1.0, 0.5], size=(n, *shape), p=[0.5, 0.2, 0.3])
    x[x == 0.5] = rng.uniform(0, 1, size=int((x == 0.5).sum()))
    y = rng.integers(0, 4, n)
    model = F64.make_model(model_name, shape, 4, seed=5)
    if model_name == "softmax":  # line 30's loss, by hand
        params = F64.get_params(model)
        grad_of = _authors_xent_grad(params["fc1.weight"], params["fc1.bias"])
        grad = lambda z: grad_of(z, y)  # noqa: E731
    else:  # the backend's cross-entropy gradient stands for sess.run
        grad = lambda z: F64.loss_and_grad(model, z, y)[1]  # noqa: E731
    u = F64.uniform(F64.rng(11), x.shape, -eps, eps)  # pgd's own draw from the same generator
    assert ((x + u < 0) | (x + u > 1)).mean() > 0.2
    _, first = _authors_perturb(grad, x, u, eps, alpha, steps, cri=-np.inf)
    cri = float(np.median(first[:, 2]))  # about half stop within the first steps
    x_theirs, fosc_theirs = _authors_perturb(grad, x, u, eps, alpha, steps, cri)
    ours = pgd(model, x, y, eps=eps, step_size=alpha, steps=steps, stop_fosc=cri, final_stats=True,
               trace=True, rng=F64.rng(11), fosc_reference="start", backend=F64)
    stopped = fosc_theirs[:, :-1] <= cri  # the mask of step j + 1 comes from FOSC at x^j
    their_steps = np.where(stopped.any(axis=1), stopped.argmax(axis=1) + 1, steps)
    assert 0 < (their_steps < steps).sum() < n
    np.testing.assert_array_equal(ours.steps, their_steps)
    np.testing.assert_allclose(ours.x_adv, x_theirs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.fosc, fosc_theirs[:, -1], rtol=1e-9, atol=1e-12)
    trace = ours.trace.fosc[1:].T  # (n, K): FOSC at x^1 .. x^K, NaN after the stop
    seen = ~np.isnan(trace)
    np.testing.assert_allclose(trace[seen], fosc_theirs[seen], rtol=1e-9, atol=1e-12)
    assert (seen.sum(axis=1) == their_steps).all()


def test_the_training_plan_carries_the_reference_and_stops_by_it():
    cfg = TrainConfig(backend="numpy", epochs=4, batch_size=16)
    base = attack_plan(method_of(cfg.resolved()), 0)
    assert base == AttackPlan(10, 0.075, True, 0.5) and base.fosc_reference == "natural"
    plan = attack_plan(method_of(TrainConfig(backend="numpy", epochs=4, batch_size=16, fosc_reference="start").resolved()), 0)
    assert plan.fosc_reference == "start" and plan.stop_fosc == base.stop_fosc
    assert attack_plan(method_of(TrainConfig(backend="numpy", method="unsecured", fosc_reference="start").resolved()), 0) is None


# --- --loss-weights ------------------------------------------------------------------------------
def test_weights_are_the_authors_cross_entropy_normalised_as_keras():
    """w_i = max(-log(p_y + 1e-12), 0) from the model's softmax; Keras 2.2.2 divides the
    weighted sum by the number of non-zero weights. A saturated example (p_y = 1) weighs 0."""
    model = _linear(F64, [[100.0, 0.0], [-100.0, 0.0]], [0.0, 0.0])
    x = np.array([[1.0, 0.0], [0.001, 0.0], [-0.002, 0.0]])
    y = np.array([0, 0, 0])
    w = ce_weights(F64, model, x, y)
    z = x[:, 0] * 100
    p_y = 1 / (1 + np.exp(-2 * z))  # softmax of (z, -z) at class 0
    raw = np.maximum(-np.log(p_y + 1e-12), 0)
    assert raw[0] == 0 and (raw[1:] > 0).all()
    np.testing.assert_allclose(w, raw / 2, rtol=1e-12)
    losses, _ = F64.loss_and_grad(model, x[1:], y[1:])  # the cross-entropy itself
    np.testing.assert_allclose(2 * w[1:], losses, rtol=1e-9)
    assert ce_weights(F64, model, x[:1], y[:1]).tolist() == [0.0]  # all zero: no step


def test_the_weighted_step_is_the_gradient_of_the_weighted_loss():
    """Numpy's hand-written weighted step against central finite differences of
    sum_i w_i CE_i: with lr 1 and no momentum or decay, params before - after = gradient."""
    rng = np.random.default_rng(0)
    model = F64.make_model("mlp", (1, 3, 3), 4, seed=1)
    x, y = rng.normal(size=(5, 1, 3, 3)), rng.integers(0, 4, 5)
    w = rng.uniform(0, 1, 5)
    before = {k: v.copy() for k, v in F64.get_params(model).items()}
    loss, correct = F64.train_step(model, F64.make_optimizer(model, 1.0, 0.0, 0.0), x, y, weights=w)
    grads = {k: before[k] - v for k, v in F64.get_params(model).items()}
    probe = F64.make_model("mlp", (1, 3, 3), 4, seed=1)
    losses = nm.cross_entropy(np, probe.forward(x)[0], y)[0]
    assert loss == pytest.approx(losses.sum()) and correct == int((probe.forward(x)[0].argmax(1) == y).sum())

    def weighted(params):
        F64.set_params(probe, params)
        return float((w * nm.cross_entropy(np, probe.forward(x)[0], y)[0]).sum())

    h = 1e-6
    for name, p in before.items():
        for flat in rng.choice(p.size, size=min(p.size, 6), replace=False):
            up, down = dict(before), dict(before)
            up[name], down[name] = p.copy(), p.copy()
            up[name].flat[flat] += h
            down[name].flat[flat] -= h
            numeric = (weighted(up) - weighted(down)) / (2 * h)
            assert numeric == pytest.approx(grads[name].flat[flat], rel=1e-5, abs=1e-8), name


def _epoch(t, monkeypatch=None, **kw):
    cfg = TrainConfig(backend="numpy", model="softmax", epochs=4, batch_size=16, steps=3, **kw).resolved()
    model = NP.make_model("softmax", (1, 28, 28), 10, seed=0)
    opt = NP.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    stats = standalone_epoch(NP, model, opt, DATA, cfg, t, attack_plan(method_of(cfg), t))
    return stats, NP.get_params(model)


def test_the_first_epoch_is_unweighted_and_later_ones_use_the_weights(monkeypatch):
    assert loss_weights_at("ce", 0) == "none" and loss_weights_at("ce", 1) == "ce"
    assert loss_weights_at("none", 3) == "none"
    for t in (0, 1):  # the default is the unweighted step in every epoch
        _, plain = _epoch(t)
        _, weighted = _epoch(t, loss_weights="ce")
        same = all(np.array_equal(plain[k], weighted[k]) for k in plain)
        assert same == (t == 0), t
    seen = []
    step = NP.train_step

    def spy(model, optimizer, x, y, batch_size=None, weights=None):  # each batch's weights, at the step's model
        if weights is not None:
            np.testing.assert_array_equal(weights, NP.asarray(ce_weights(NP, model, x, y)))
            seen.append(float(np.sum(weights * NP.loss_and_grad(model, x, y)[0])))
        return step(model, optimizer, x, y, batch_size, weights=weights)

    monkeypatch.setattr(NP, "train_step", spy)
    _epoch(1, loss_weights="ce")
    assert len(seen) == 3 and all(np.isfinite(seen))


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_and_numpy_take_the_same_weighted_step():
    torch_backend = get_backend("torch", device="cpu")
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, size=(6, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    w = rng.uniform(0, 0.5, 6)
    results = []
    for backend in (NP, torch_backend):
        model = backend.make_model("mlp", (1, 4, 4), 3, seed=2)
        if backend is torch_backend:
            backend.set_params(model, NP.get_params(NP.make_model("mlp", (1, 4, 4), 3, seed=2)))
        opt = backend.make_optimizer(model, 0.1, 0.9, 1e-4)
        for _ in range(2):  # the second step uses the momentum buffer
            loss, correct = backend.train_step(model, opt, backend.asarray(x), backend.asarray(y),
                                               weights=backend.asarray(w))
        results.append((loss, correct, backend.get_params(model)))
    (l_np, c_np, p_np), (l_t, c_t, p_t) = results
    assert l_np == pytest.approx(l_t, rel=1e-5) and c_np == c_t
    for k in p_np:
        np.testing.assert_allclose(p_np[k], p_t[k], rtol=1e-5, atol=1e-6)


# --- configuration, CLI and resume ---------------------------------------------------------------
def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="--fosc-reference"):
        TrainConfig(backend="numpy", fosc_reference="x0").resolved()
    with pytest.raises(ConfigError, match="--loss-weights"):
        TrainConfig(backend="numpy", loss_weights="focal").resolved()


def test_the_cli_takes_the_switches_and_writes_them_in_config_json(tmp_path):
    tiny = ["train", "--backend", "numpy", "--model", "softmax", "--limit", "48", "--epochs", "2",
            "--batch-size", "16", "--steps", "2", "--eval-limit", "16", "--eval-steps", "1",
            "--final-eval-limit", "16"]
    runner = CliRunner()
    r = runner.invoke(main, [*tiny, "--fosc-reference", "start", "--loss-weights", "ce",
                             "--out", str(tmp_path / "a")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["fosc_reference"] == "start" and config["loss_weights"] == "ce"
    r = runner.invoke(main, [*tiny, "--epochs", "1", "--out", str(tmp_path / "b")], catch_exceptions=False)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["fosc_reference"] == "natural" and config["loss_weights"] == "none"
    r = runner.invoke(main, [*tiny, "--loss-weights", "focal"])
    assert r.exit_code == 2 and "focal" in r.output


def test_a_run_saved_before_the_switches_existed_still_resumes():
    current = TrainConfig(backend="numpy").resolved().to_dict()
    old = {k: v for k, v in current.items() if k not in ("fosc_reference", "loss_weights")}
    assert config_differences(old, current) == []
    assert config_differences(old, {**current, "loss_weights": "ce"}) == ["loss_weights"]
    assert config_differences({**current, "fosc_reference": "start"}, current) == ["fosc_reference"]
