"""Issue 21's backend additions: normal draws, the "kl" and "margin-targeted" attack losses,
return_logits, and train_step's TRADES and MART outer losses, on both backends.

The references are torch autograd on expressions written here: the inner losses as TRADES'
nn.KLDivLoss and FAB-T's logit difference, the outer ones as transcriptions of the authors'
loss expressions (yaodongyu/TRADES trades.py `trades_loss` lines 79-83, YisenWang/MART mart.py
`mart_loss` lines 38-56), each differentiated by autograd and stepped with torch.optim.SGD.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from minidyn.backends import numpy_models as nm  # noqa: E402
from minidyn.backends.array import numpy_backend  # noqa: E402
from minidyn.backends.torch_backend import torch_backend  # noqa: E402
from minidyn.errors import ConfigError  # noqa: E402

N64, T64 = numpy_backend("float64"), torch_backend(device="cpu", dtype="float64")
SHAPE, CLASSES, BATCH = (1, 4, 4), 5, 7
LR, MOMENTUM, DECAY = 0.3, 0.9, 5e-4


def _data(seed=0, batch=BATCH):
    """A clean batch, an adversarial one within 0.3 of it, labels, target classes, clean logits."""
    rng = np.random.default_rng(seed)
    x_nat = rng.random((batch, *SHAPE))
    x_adv = np.clip(x_nat + rng.uniform(-0.3, 0.3, x_nat.shape), 0, 1)
    y, t = rng.integers(0, CLASSES, batch), rng.integers(0, CLASSES, batch)
    return x_nat, x_adv, y, t, 3 * rng.normal(size=(batch, CLASSES))


def _pair(name, seed=0):
    """A numpy model and a torch model with the same float64 weights."""
    numpy_model = N64.make_model(name, SHAPE, CLASSES, seed=seed)
    torch_model = T64.make_model(name, SHAPE, CLASSES, seed=seed)
    T64.set_params(torch_model, N64.get_params(numpy_model))
    return numpy_model, torch_model


def _tensor(a, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a), dtype=dtype)


# --- the reference losses, written from the papers' code ------------------------------------
def _kl_reference(z, clean_logits):  # TRADES' criterion_kl, per example (sum over classes)
    return nn.KLDivLoss(reduction="none")(F.log_softmax(z, dim=1), F.softmax(clean_logits, dim=1)).sum(1)


def _inner_reference(loss, z, y, target):
    if loss == "kl":
        return _kl_reference(z, target)
    return z.gather(1, target[:, None])[:, 0] - z.gather(1, y[:, None])[:, 0]  # z_t - z_y


def trades_loss_reference(model, x_natural, x_adv, y, beta):
    """trades.py lines 79-83 as the authors wrote them (two natural forwards), batch mean."""
    batch_size = len(x_natural)
    criterion_kl = nn.KLDivLoss(reduction="sum")  # size_average=False
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                                    F.softmax(model(x_natural), dim=1))
    return loss_natural + beta * loss_robust


def mart_loss_reference(model, x_natural, x_adv, y, beta, weights=None):
    """mart.py lines 38-56 (weights None); with weights, sum_i w_i of the same per-example terms."""
    batch_size = len(x_natural)
    kl = nn.KLDivLoss(reduction="none")
    logits = model(x_natural)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    robust = torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs)
    if weights is None:
        loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
        return loss_adv + float(beta) * ((1.0 / batch_size) * torch.sum(robust))
    per_example = F.cross_entropy(logits_adv, y, reduction="none") \
        + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y, reduction="none") + beta * robust
    return (weights * per_example).sum()


def trades_weighted_reference(model, x_natural, x_adv, y, beta, weights):
    """sum_i w_i of trades_loss's per-example terms."""
    kl = _kl_reference(model(x_adv), model(x_natural))
    return (weights * (F.cross_entropy(model(x_natural), y, reduction="none") + beta * kl)).sum()


def _reference_step(torch_model, outer, x_nat, x_adv, y, beta, weights=None):
    """One torch.optim.SGD step on the reference loss; returns the reference's loss value."""
    opt = torch.optim.SGD(torch_model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=DECAY)
    args = (torch_model, _tensor(x_nat), _tensor(x_adv), torch.as_tensor(y), beta)
    torch_model.train()
    opt.zero_grad()
    if weights is None:
        loss = (trades_loss_reference if outer == "trades" else mart_loss_reference)(*args)
    elif outer == "trades":
        loss = trades_weighted_reference(*args, _tensor(weights))
    else:
        loss = mart_loss_reference(*args, weights=_tensor(weights))
    loss.backward()
    opt.step()
    return float(loss)


def _assert_params_close(got, expected, rtol=1e-10, atol=1e-12):
    assert set(got) == set(expected)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=rtol, atol=atol, err_msg=k)


# --- normal draws --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", [numpy_backend(), N64, torch_backend(device="cpu")],
                         ids=["numpy32", "numpy64", "torch"])
def test_normal_draws_the_generators_gaussians_times_std(backend):
    draw = backend.normal(backend.rng(3), (200, 50), 0.001)
    assert tuple(draw.shape) == (200, 50) and draw.dtype == backend.dtypes["float"]
    host = backend.to_numpy(draw)
    assert abs(host.mean()) < 1e-4 and host.std() == pytest.approx(0.001, rel=0.03)
    np.testing.assert_array_equal(backend.to_numpy(backend.normal(backend.rng(3), (200, 50), 0.001)), host)
    if backend.name == "torch":  # TRADES' 0.001 * torch.randn(shape), from the same generator
        expected = 0.001 * torch.randn((200, 50), generator=torch.Generator().manual_seed(3))
        np.testing.assert_array_equal(host, expected.numpy())
    else:
        expected = np.random.default_rng(3).normal(0, 0.001, (200, 50))  # numpy's own N(0, std^2) draw
        np.testing.assert_array_equal(host, expected.astype(backend.float_dtype))


# --- the inner losses: values and input gradients against torch autograd -------------------------
@pytest.mark.parametrize("loss", ["kl", "margin-targeted"])
def test_inner_loss_functions_match_autograd_on_the_logits(loss):
    """numpy_models.kl / margin_targeted on raw logits, huge ones included (no overflow)."""
    rng = np.random.default_rng(1)
    z, clean = 5 * rng.normal(size=(9, CLASSES)), 5 * rng.normal(size=(9, CLASSES))
    z[0], clean[1] = 1000 * rng.normal(size=CLASSES), -800 * rng.normal(size=CLASSES)
    y, t = rng.integers(0, CLASSES, 9), rng.integers(0, CLASSES, 9)
    t[2] = y[2]  # a target equal to the label: zero loss and gradient
    target = clean if loss == "kl" else t
    values, dlogits = nm.kl(np, z, clean) if loss == "kl" else nm.margin_targeted(np, z, y, t)
    zt = _tensor(z).requires_grad_(True)
    tt = _tensor(clean) if loss == "kl" else torch.as_tensor(target)
    expected = _inner_reference(loss, zt, torch.as_tensor(y), tt)
    (grad,) = torch.autograd.grad(expected.sum(), zt)
    assert np.isfinite(values).all() and np.isfinite(dlogits).all()
    np.testing.assert_allclose(values, expected.detach().numpy(), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(dlogits, grad.numpy(), rtol=1e-10, atol=1e-12)
    if loss == "margin-targeted":
        assert values[2] == 0 and not dlogits[2].any()


@pytest.mark.parametrize("name", ["softmax", "mlp"])
@pytest.mark.parametrize("loss", ["kl", "margin-targeted"])
def test_inner_losses_and_input_gradients_match_autograd_on_both_backends(name, loss):
    numpy_model, torch_model = _pair(name)
    x_nat, x_adv, y, t, _ = _data()
    with torch.no_grad():
        clean = torch_model(_tensor(x_nat))  # the clean logits, as pgd passes them
    target = clean.numpy() if loss == "kl" else t
    xt = _tensor(x_adv).requires_grad_(True)
    expected = _inner_reference(loss, torch_model(xt), torch.as_tensor(y),
                                clean if loss == "kl" else torch.as_tensor(t))
    (grad,) = torch.autograd.grad(expected.sum(), xt)
    for backend, model in ((N64, numpy_model), (T64, torch_model)):
        losses, g = backend.loss_and_grad(model, backend.asarray(x_adv), backend.asarray(y), loss,
                                          target=backend.asarray(target))
        np.testing.assert_allclose(backend.to_numpy(losses), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(backend.to_numpy(g), grad.numpy(), rtol=1e-9, atol=1e-13)
        assert tuple(g.shape) == x_adv.shape


def test_kl_is_zero_with_a_zero_gradient_at_the_clean_point():
    numpy_model, torch_model = _pair("mlp")
    x_nat = _data()[0]
    for backend, model in ((N64, numpy_model), (T64, torch_model)):
        x = backend.asarray(x_nat)
        losses, g = backend.loss_and_grad(model, x, backend.asarray(np.zeros(BATCH, int)), "kl",
                                          target=backend.logits(model, x))
        assert np.abs(backend.to_numpy(losses)).max() < 1e-14 and np.abs(backend.to_numpy(g)).max() < 1e-14


# --- return_logits ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", [N64, numpy_backend(), T64, torch_backend(device="cpu")],
                         ids=["numpy64", "numpy32", "torch64", "torch32"])
@pytest.mark.parametrize("loss", ["ce", "cw", "dlr", "dlr-targeted", "kl", "margin-targeted"])
def test_return_logits_gives_the_logits_of_the_same_forward_and_changes_nothing_else(backend, loss):
    model = backend.make_model("mlp", SHAPE, CLASSES, seed=4)
    x_nat, x_adv, y, t, _ = _data(2)
    x, labels = backend.asarray(x_adv), backend.asarray(y)
    target = {"kl": backend.logits(model, backend.asarray(x_nat)), "dlr-targeted": backend.asarray(t),
              "margin-targeted": backend.asarray(t)}.get(loss)
    plain = backend.loss_and_grad(model, x, labels, loss, target=target)
    losses, grad, logits = backend.loss_and_grad(model, x, labels, loss, target=target, return_logits=True)
    assert len(plain) == 2
    np.testing.assert_array_equal(backend.to_numpy(logits), backend.to_numpy(backend.logits(model, x)))
    np.testing.assert_array_equal(backend.to_numpy(losses), backend.to_numpy(plain[0]))
    np.testing.assert_array_equal(backend.to_numpy(grad), backend.to_numpy(plain[1]))


# --- the outer losses: one train_step against the authors' expressions under autograd -----------
@pytest.mark.parametrize("outer", ["trades", "mart"])
def test_outer_loss_functions_match_autograd_on_the_logits(outer):
    """numpy_models.trades_outer / mart_outer on raw logits, against autograd of the authors'
    expressions with the identity as the model; confident rows (probabilities far below MART's
    1e-12) and a row whose most probable adversarial class is y included."""
    rng = np.random.default_rng(11)
    z_nat, z_adv = 4 * rng.normal(size=(8, CLASSES)), 4 * rng.normal(size=(8, CLASSES))
    z_adv[0], z_nat[1] = 40 * rng.normal(size=CLASSES), 60 * rng.normal(size=CLASSES)
    z_nat[2], z_adv[2] = z_adv[0], 60 * rng.normal(size=CLASSES)
    y = rng.integers(0, CLASSES, 8)
    y[3] = z_adv[3].argmax()
    values, d_nat, d_adv = nm.OUTER[outer](np, z_nat, z_adv, y, 6.0)
    zn, za = _tensor(z_nat).requires_grad_(True), _tensor(z_adv).requires_grad_(True)
    reference = trades_weighted_reference if outer == "trades" else mart_loss_reference
    for i, w in enumerate(torch.eye(8, dtype=torch.float64)):  # example i's value: weight 1 on it alone
        expected = float(reference(lambda z: z, zn, za, torch.as_tensor(y), 6.0, weights=w))
        assert values[i] == pytest.approx(expected, rel=1e-10, abs=1e-12)
    total = reference(lambda z: z, zn, za, torch.as_tensor(y), 6.0, weights=torch.ones(8, dtype=torch.float64))
    g_nat, g_adv = torch.autograd.grad(total, (zn, za))
    np.testing.assert_allclose(d_nat, g_nat.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d_adv, g_adv.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "mlp"])
@pytest.mark.parametrize("outer", ["trades", "mart"])
@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
def test_numpy_outer_step_matches_autograd_of_the_authors_loss(name, outer, weighted):
    """The hand-written gradients w.r.t. both logits, through both forwards, give the parameters
    torch autograd gives after one SGD step on trades_loss / mart_loss (float64)."""
    numpy_model, torch_model = _pair(name, seed=5)
    x_nat, x_adv, y, _, _ = _data(3)
    weights = np.random.default_rng(4).random(BATCH) / BATCH if weighted else None
    if weighted:  # the torch backend holds weights in float32: use weights it holds exactly
        weights = weights.astype(np.float32).astype(np.float64)
    opt = N64.make_optimizer(numpy_model, LR, MOMENTUM, DECAY)
    total, correct = N64.train_step(numpy_model, opt, N64.asarray(x_adv), N64.asarray(y), BATCH, weights,
                                    outer=outer, x_natural=N64.asarray(x_nat), beta=6.0)
    with torch.no_grad():
        z_adv = torch_model(_tensor(x_adv))
    reference = _reference_step(torch_model, outer, x_nat, x_adv, y, 6.0, weights)
    _assert_params_close(N64.get_params(numpy_model), T64.get_params(torch_model))
    assert correct == int((z_adv.argmax(1).numpy() == y).sum())
    if not weighted:  # the returned total is sum_i l_i, the reference's mean times B
        assert total == pytest.approx(reference * BATCH, rel=1e-12)


@pytest.mark.parametrize("name", ["mlp", "cnn4"])
@pytest.mark.parametrize("outer", ["trades", "mart"])
@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
def test_torch_outer_step_matches_the_authors_loss(name, outer, weighted):
    """The torch backend's step equals one on the transcription (cnn4: with BatchNorm in training
    mode; TRADES' second natural forward changes the running statistics only, not the step)."""
    shape = SHAPE if name == "mlp" else (1, 28, 28)
    mine, reference = (T64.make_model(name, shape, CLASSES, seed=6) for _ in range(2))
    rng = np.random.default_rng(7)
    x_nat = rng.random((BATCH, *shape))
    x_adv = np.clip(x_nat + rng.uniform(-0.3, 0.3, x_nat.shape), 0, 1)
    y = rng.integers(0, CLASSES, BATCH)
    weights = rng.random(BATCH).astype(np.float32).astype(np.float64) if weighted else None
    opt = T64.make_optimizer(mine, LR, MOMENTUM, DECAY)
    total, _ = T64.train_step(mine, opt, T64.asarray(x_adv), T64.asarray(y), BATCH, weights,
                              outer=outer, x_natural=T64.asarray(x_nat), beta=6.0)
    expected_total = _reference_step(reference, outer, x_nat, x_adv, y, 6.0, weights)
    for (k, p), (_, q) in zip(mine.named_parameters(), reference.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=k)
    if not weighted:
        assert total == pytest.approx(expected_total * BATCH, rel=1e-10)
    if outer == "mart":  # natural then adversarial forward, as mart_loss: the same running statistics
        for (k, b), (_, c) in zip(mine.named_buffers(), reference.named_buffers()):
            np.testing.assert_allclose(b.numpy(), c.numpy(), rtol=1e-12, atol=1e-14, err_msg=k)


def test_outer_losses_per_example_on_both_backends_agree_in_float32():
    """The float32 numpy and torch backends take the same TRADES and MART steps (to float32 rounding)."""
    numpy32, torch32 = numpy_backend(), torch_backend(device="cpu")
    x_nat, x_adv, y, _, _ = _data(8)
    for outer in ("trades", "mart"):
        nmod = numpy32.make_model("mlp", SHAPE, CLASSES, seed=1)
        tmod = torch32.make_model("mlp", SHAPE, CLASSES, seed=1)
        torch32.set_params(tmod, numpy32.get_params(nmod))
        results = [b.train_step(m, b.make_optimizer(m, LR, MOMENTUM, DECAY), b.asarray(x_adv), b.asarray(y),
                                outer=outer, x_natural=b.asarray(x_nat), beta=6.0)
                   for b, m in ((numpy32, nmod), (torch32, tmod))]
        assert results[0][1] == results[1][1]
        assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
        _assert_params_close(numpy32.get_params(nmod), torch32.get_params(tmod), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", [N64, T64], ids=["numpy", "torch"])
def test_outer_ce_and_beta_zero_trades_are_the_plain_steps(backend):
    """outer="ce" given explicitly is the default step bit for bit; TRADES with beta 0 is the
    cross-entropy step on the natural batch."""
    x_nat, x_adv, y, _, _ = _data(9)
    runs = []
    for x, kwargs in ((x_adv, {}), (x_adv, {"outer": "ce", "x_natural": backend.asarray(x_nat)}), (x_nat, {}),
                      (x_adv, {"outer": "trades", "x_natural": backend.asarray(x_nat), "beta": 0.0})):
        model = backend.make_model("mlp", SHAPE, CLASSES, seed=2)
        opt = backend.make_optimizer(model, LR, MOMENTUM, DECAY)
        backend.train_step(model, opt, backend.asarray(x), backend.asarray(y), **kwargs)
        runs.append(backend.get_params(model))
    for k in runs[0]:
        np.testing.assert_array_equal(runs[1][k], runs[0][k])
        np.testing.assert_allclose(runs[3][k], runs[2][k], rtol=1e-12, atol=1e-14)


# --- bad input: one-line ConfigErrors -----------------------------------------------------------
@pytest.mark.parametrize("backend", [N64, T64], ids=["numpy", "torch"])
@pytest.mark.parametrize("kwargs, message", [
    ({"outer": "awp"}, "unknown outer loss 'awp'; use one of ce, trades, mart"),
    ({"outer": "trades"}, "outer loss 'trades' needs x_natural, the clean batch"),
    ({"outer": "mart"}, "outer loss 'mart' needs x_natural, the clean batch"),
    ({"outer": "mart", "x_natural": "half"}, "outer loss 'mart': x_natural is shaped"),
    ({"outer": "trades", "x_natural": "same", "beta": -1.0}, "needs a finite beta >= 0, got -1.0"),
    ({"outer": "trades", "x_natural": "same", "beta": float("nan")}, "needs a finite beta >= 0"),
])
def test_bad_outer_arguments_are_one_line_config_errors(backend, kwargs, message):
    model = backend.make_model("mlp", SHAPE, CLASSES, seed=0)
    x_nat, x_adv, y, _, _ = _data()
    kwargs = dict(kwargs)
    if "x_natural" in kwargs:
        kwargs["x_natural"] = backend.asarray(x_nat if kwargs["x_natural"] == "same" else x_nat[:3])
    before = backend.get_params(model)
    with pytest.raises(ConfigError) as info:
        backend.train_step(model, backend.make_optimizer(model, LR, 0, 0), backend.asarray(x_adv),
                           backend.asarray(y), **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    for k, v in backend.get_params(model).items():  # nothing was stepped
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("backend", [N64, T64], ids=["numpy", "torch"])
@pytest.mark.parametrize("loss, message", [
    ("kl", "loss 'kl' needs a target (the clean logits)"),
    ("margin-targeted", "loss 'margin-targeted' needs a target (the target classes)"),
    ("dlr-targeted", "loss 'dlr-targeted' needs a target (the target classes)"),
    ("kl-wrong-shape", "loss 'kl' needs the clean logits shaped"),
    ("trades", "unknown loss 'trades'"),
])
def test_bad_inner_loss_arguments_are_one_line_config_errors(backend, loss, message):
    model = backend.make_model("mlp", SHAPE, CLASSES, seed=0)
    _, x_adv, y, _, clean = _data()
    target = backend.asarray(clean[:, :3]) if loss == "kl-wrong-shape" else None
    with pytest.raises(ConfigError) as info:
        backend.loss_and_grad(model, backend.asarray(x_adv), backend.asarray(y), loss.replace("-wrong-shape", ""),
                              target=target)
    assert message in str(info.value) and "\n" not in str(info.value)
