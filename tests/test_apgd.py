"""APGD (minidyn.apgd) and the DLR loss of both backends."""
import importlib.util

import numpy as np
import pytest

import minidyn.apgd as apgd_module
from minidyn.apgd import apgd, apgd_targeted, checkpoints
from minidyn.attacks import pgd
from minidyn.backend import get_backend
from minidyn.backends import numpy_models as nm
from minidyn.errors import ConfigError
from minidyn.evaluation.attack_table import ATTACKS

SHAPE = (1, 5, 5)


def linear_two_class(B, n=16, seed=0):
    """A 2-class softmax model and inputs; the CE-optimal perturbation is known in closed form:
    the loss grows with <w_other - w_y, x>, so x* = clip(x0 + eps sign(w_other - w_y), 0, 1)."""
    model = B.make_model("softmax", SHAPE, 2, seed)
    W = B.get_params(model)["fc1.weight"]  # (2, D)
    rng = np.random.default_rng(seed)
    x0 = rng.random((n,) + SHAPE)
    y = rng.integers(0, 2, n)
    direction = np.sign(W[1 - y] - W[y]).reshape((n,) + SHAPE)
    return model, x0, y, direction


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
@pytest.mark.parametrize("random_start", [False, True])
def test_finds_the_closed_form_optimum_of_a_linear_model(backend64, attack, random_start):
    B, eps = backend64, 0.3
    model, x0, y, direction = linear_two_class(B)
    optimum = np.clip(np.clip(x0 + eps * direction, x0 - eps, x0 + eps), 0, 1)
    x, yy = B.asarray(x0), B.asarray(y)
    if attack == "pgd":
        res = pgd(model, x, yy, eps=eps, step_size=eps / 4, steps=10, random_start=random_start,
                  final_stats=True, rng=B.rng(1), backend=B)
        found, loss = res.x_adv, res.loss
    else:
        res = apgd(model, x, yy, eps=eps, steps=20, random_start=random_start, rng=B.rng(1), backend=B)
        found, loss = res.x_best, res.loss_best
    np.testing.assert_allclose(B.to_numpy(found), optimum, atol=1e-9)
    best, _ = B.loss_and_grad(model, B.asarray(optimum), yy)
    np.testing.assert_allclose(B.to_numpy(loss), B.to_numpy(best), rtol=1e-9)


def reference_checkpoints(n_iter):
    """The iterations after which autopgd_base.py's loop halves step sizes, transcribed from its
    counter logic: counter3 counts iterations i = 0 .. n_iter-1; at counter3 == k the check runs
    (after i + 1 iterations), then k = max(k - size_decr, n_iter_min) and counter3 = 0."""
    k, size_decr, n_iter_min = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    counter3, out = 0, []
    for i in range(n_iter):
        counter3 += 1
        if counter3 == k:
            out.append(i + 1)
            k, counter3 = max(k - size_decr, n_iter_min), 0
    return [w for w in out if w < n_iter]  # a check after the last iteration changes nothing


def test_checkpoints_follow_croce_and_hein():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99: the AutoAttack schedule for 100
    assert checkpoints(100) == checkpoints(100, "paper") == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < w < 10 for w in checkpoints(10))


@pytest.mark.parametrize("n_iter", [1, 2, 3, 5, 10, 20, 33, 50, 100, 250, 1000])
def test_default_checkpoints_are_autoattacks_for_any_number_of_iterations(n_iter):
    assert checkpoints(n_iter) == reference_checkpoints(n_iter)


def test_the_papers_checkpoint_rule_differs_from_the_reference_except_at_100():
    for n_iter in (10, 20, 50):
        assert checkpoints(n_iter, "paper") != checkpoints(n_iter)
    assert checkpoints(10, "paper") == [3, 5, 6, 7, 8, 9]  # ceil(0.22 * 10), ceil(0.41 * 10), ...
    with pytest.raises(ConfigError, match="checkpoint rule"):
        checkpoints(10, "other")


def test_the_checkpoint_rule_reaches_the_attack(backend64):
    B = backend64
    rng = np.random.default_rng(0)
    model = B.make_model("mlp", SHAPE, 5, 0)
    x, y = B.asarray(rng.random((12,) + SHAPE)), B.asarray(rng.integers(0, 5, 12))
    runs = {rule: apgd(model, x, y, eps=0.1, steps=10, checkpoint_rule=rule, rng=B.rng(3), backend=B)
            for rule in ("autoattack", "paper")}
    assert not np.array_equal(B.to_numpy(runs["autoattack"].x_best), B.to_numpy(runs["paper"].x_best))


def test_apgd_beats_or_matches_pgd_and_stopping_changes_no_verdict(backend):
    B = backend
    rng = np.random.default_rng(0)
    model = B.make_model("mlp", SHAPE, 5, 0)
    x, y = B.asarray(rng.random((12,) + SHAPE)), B.asarray(rng.integers(0, 5, 12))
    for loss in ("ce", "dlr"):
        full = apgd(model, x, y, eps=0.05, steps=15, loss=loss, rng=B.rng(3), backend=B)
        stop = apgd(model, x, y, eps=0.05, steps=15, loss=loss, rng=B.rng(3), backend=B,
                    stop_when_misclassified=True)
        np.testing.assert_array_equal(B.to_numpy(full.found), B.to_numpy(stop.found))
        assert stop.grad_evals <= full.grad_evals == 16 * 12
        for res in (full, stop):  # x_adv is misclassified exactly where an iterate was
            wrong = B.to_numpy(B.argmax(B.logits(model, res.x_adv)) != y)
            np.testing.assert_array_equal(wrong, B.to_numpy(res.found))
            d = B.to_numpy(res.x_adv) - B.to_numpy(x)
            assert np.abs(d).max() <= 0.05 + 1e-6
    ce = apgd(model, x, y, eps=0.05, steps=15, rng=B.rng(3), backend=B)
    p = pgd(model, x, y, eps=0.05, step_size=0.05 / 4, steps=15, rng=B.rng(3), final_stats=True, backend=B)
    assert B.to_numpy(ce.loss_best).mean() >= B.to_numpy(p.loss).mean() - 1e-4


def assert_gradient_is_central_differences(loss_and_grad, z, h=1e-6):
    """d loss_i / d z_ij of loss_and_grad(z) -> (losses (B,), grad (B, C)) equals the central
    difference of loss_i in z_ij, for every i and j."""
    _, grad = loss_and_grad(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            up, down = z.copy(), z.copy()
            up[i, j] += h
            down[i, j] -= h
            fd = (loss_and_grad(up)[0][i] - loss_and_grad(down)[0][i]) / (2 * h)
            assert fd == pytest.approx(grad[i, j], rel=1e-5, abs=1e-7)


def test_dlr_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(6, 5)) * 3, rng.integers(0, 5, 6)
    z[0, y[0]] = z[0].max() + 1  # one correctly classified example for certain
    assert_gradient_is_central_differences(lambda logits: nm.dlr(np, logits, y), z)
    losses, _ = nm.dlr(np, z, y)
    # the definition, directly
    s = np.sort(z, axis=1)[:, ::-1]
    other = np.where(np.arange(5) == y[:, None], -np.inf, z).max(axis=1)
    np.testing.assert_allclose(losses, -(z[np.arange(6), y] - other) / (s[:, 0] - s[:, 2] + 1e-12))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_dlr_agrees_between_numpy_and_torch():
    Bn, Bt = get_backend("numpy", dtype="float64"), get_backend("torch", device="cpu", dtype="float64")
    mn = Bn.make_model("mlp", SHAPE, 4, 0)
    mt = Bt.make_model("mlp", SHAPE, 4, 0)
    Bt.set_params(mt, Bn.get_params(mn))
    rng = np.random.default_rng(1)
    x, y = rng.random((8,) + SHAPE), rng.integers(0, 4, 8)
    ln, gn = Bn.loss_and_grad(mn, Bn.asarray(x), Bn.asarray(y), "dlr")
    lt, gt = Bt.loss_and_grad(mt, Bt.asarray(x), Bt.asarray(y), "dlr")
    np.testing.assert_allclose(Bt.to_numpy(lt), ln, rtol=1e-9)
    np.testing.assert_allclose(Bt.to_numpy(gt), gn, rtol=1e-7, atol=1e-12)


def test_dlr_needs_three_classes(backend):
    model = backend.make_model("softmax", SHAPE, 2, 0)
    x, y = backend.asarray(np.zeros((2,) + SHAPE)), backend.asarray(np.array([0, 1]))
    with pytest.raises(ConfigError, match="3 classes"):
        backend.loss_and_grad(model, x, y, "dlr")


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_on_an_example_does_not_depend_on_its_batch(backend64, loss):
    """Compaction (stop_when_misclassified) changes nothing for any one example: attacking the
    batch or each example alone gives the same points, losses and steps."""
    B = backend64
    rng = np.random.default_rng(1)
    model = B.make_model("mlp", SHAPE, 5, 0)
    x = B.asarray(rng.random((8,) + SHAPE))
    y = B.argmax(B.logits(model, x))  # every example correct at x_0, so none stops at once
    for eps in (0.02, 0.05, 0.1, 0.2, 0.3):  # a budget at which some stop early and some never
        kw = dict(eps=eps, steps=12, loss=loss, random_start=False, stop_when_misclassified=True,
                  backend=B)
        batch = apgd(model, x, y, **kw)
        taken = B.to_numpy(batch.steps)
        if 0 < taken.min() < 12 and taken.max() == 12:
            break
    assert 0 < taken.min() < 12 and taken.max() == 12
    for i in range(8):
        one = apgd(model, x[i:i + 1], y[i:i + 1], **kw)
        for name in ("x_adv", "x_best", "loss_best", "found", "steps"):
            np.testing.assert_allclose(B.to_numpy(getattr(one, name))[0],
                                       B.to_numpy(getattr(batch, name))[i], rtol=1e-12, atol=1e-12)


# --- APGD-T ---------------------------------------------------------------------------------
def reference_dlr_targeted(z, y, y_target):
    """autopgd_base.py, APGDAttack_targeted.dlr_loss_targeted, transcribed to numpy."""
    x_sorted = np.sort(z, axis=1)
    u = np.arange(z.shape[0])
    return -(z[u, y] - z[u, y_target]) / (x_sorted[:, -1] - .5 * (x_sorted[:, -3] + x_sorted[:, -4]) + 1e-12)


def test_targeted_dlr_is_the_references_with_its_gradient():
    rng = np.random.default_rng(0)
    z, y, t = rng.normal(size=(8, 6)) * 3, rng.integers(0, 6, 8), rng.integers(0, 6, 8)
    losses, _ = nm.dlr_targeted(np, z, y, t)
    np.testing.assert_allclose(losses, reference_dlr_targeted(z, y, t), rtol=1e-12)
    assert_gradient_is_central_differences(lambda logits: nm.dlr_targeted(np, logits, y, t), z)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_targeted_dlr_agrees_between_numpy_and_torch():
    Bn, Bt = get_backend("numpy", dtype="float64"), get_backend("torch", device="cpu", dtype="float64")
    mn, mt = Bn.make_model("mlp", SHAPE, 5, 0), Bt.make_model("mlp", SHAPE, 5, 0)
    Bt.set_params(mt, Bn.get_params(mn))
    rng = np.random.default_rng(1)
    x, y, t = rng.random((8,) + SHAPE), rng.integers(0, 5, 8), rng.integers(0, 5, 8)
    ln, gn = Bn.loss_and_grad(mn, Bn.asarray(x), Bn.asarray(y), "dlr-targeted", target=Bn.asarray(t))
    lt, gt = Bt.loss_and_grad(mt, Bt.asarray(x), Bt.asarray(y), "dlr-targeted", target=Bt.asarray(t))
    np.testing.assert_allclose(Bt.to_numpy(lt), ln, rtol=1e-9)
    np.testing.assert_allclose(Bt.to_numpy(gt), gn, rtol=1e-7, atol=1e-12)


def test_apgd_t_targets_and_robust_sets_are_the_references(backend64, monkeypatch):
    """The loop of APGDAttack_targeted.perturb, transcribed: for target_class = 2 .. n + 1, the
    examples still robust are attacked towards output.sort(dim=1)[1][:, -target_class]."""
    B, runs = backend64, []
    real = apgd_module.apgd

    def recording(model, x, y, **kw):
        res = real(model, x, y, **kw)
        runs.append((B.to_numpy(x), B.to_numpy(kw["target"]), B.to_numpy(res.found), kw["steps"]))
        return res

    monkeypatch.setattr(apgd_module, "apgd", recording)
    rng = np.random.default_rng(2)
    model = B.make_model("mlp", SHAPE, 6, 0)
    x0 = rng.random((16,) + SHAPE)
    logits = B.to_numpy(B.logits(model, B.asarray(x0)))
    y = logits.argmax(axis=1)
    y[:3] = (y[:3] + 1) % 6  # three examples misclassified at x itself: never attacked
    res = apgd_targeted(model, B.asarray(x0), B.asarray(y), eps=0.05, steps=5, n_target_classes=4,
                        rng=B.rng(0), backend=B)
    acc = logits.argmax(axis=1) == y
    assert len(runs) == 4
    for target_class, (x_run, t_run, found_run, steps) in zip(range(2, 6), runs):
        ind_to_fool = acc.nonzero()[0]
        np.testing.assert_array_equal(x_run, x0[ind_to_fool])
        np.testing.assert_array_equal(t_run, np.argsort(logits[ind_to_fool], axis=1)[:, -target_class])
        assert steps == 5
        acc[ind_to_fool[found_run]] = False
    np.testing.assert_array_equal(B.to_numpy(res.found), ~acc)


def test_apgd_t_breaks_no_fewer_than_clean_and_stays_in_the_ball(backend):
    B, eps = backend, 0.3
    rng = np.random.default_rng(0)
    model = B.make_model("mlp", SHAPE, 5, 0)
    x = B.asarray(rng.random((24,) + SHAPE))
    y = B.to_numpy(B.argmax(B.logits(model, x)))
    y[:4] = (y[:4] + 1) % 5  # four misclassified at x itself
    y = B.asarray(y)
    x_adv, fooled = ATTACKS["apgd-t"].craft(B, model, x, y, eps=eps, rng=B.rng(0), apgd_steps=10)
    wrong = B.to_numpy(B.argmax(B.logits(model, x_adv)) != y)
    clean_wrong = B.to_numpy(B.argmax(B.logits(model, x)) != y)
    np.testing.assert_array_equal(wrong, B.to_numpy(fooled))  # its record is the forward pass's
    assert (wrong >= clean_wrong).all() and wrong.sum() > clean_wrong.sum()
    d, xa = B.to_numpy(x_adv) - B.to_numpy(x), B.to_numpy(x_adv)
    assert np.abs(d).max() <= eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1


def test_apgd_t_needs_four_classes_and_a_target_only_for_its_loss(backend):
    B = backend
    model = B.make_model("mlp", SHAPE, 3, 0)
    x, y = B.asarray(np.zeros((2,) + SHAPE)), B.asarray(np.array([0, 1]))
    with pytest.raises(ConfigError, match="4 classes"):
        apgd_targeted(model, x, y, eps=0.1, steps=2, backend=B)
    with pytest.raises(ConfigError, match="target"):
        apgd(model, x, y, eps=0.1, steps=2, loss="dlr-targeted", backend=B)
    with pytest.raises(ConfigError, match="target"):
        apgd(model, x, y, eps=0.1, steps=2, target=y, backend=B)
