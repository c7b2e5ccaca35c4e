"""The numpy and torch backends agree on the models they share (softmax, mlp), given one set of weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
array_backend = pytest.importorskip("minidyn.backends.array")  # skipped while it does not exist

from minidyn.backends.torch_backend import torch_backend  # noqa: E402

SHAPE, CLASSES = (1, 28, 28), 10


@pytest.fixture(scope="module")
def pair():
    return array_backend.numpy_backend(), torch_backend(device="cpu")


def _models(pair, name, seed=0):
    nb, tb = pair
    tm = tb.make_model(name, SHAPE, CLASSES, seed=seed)
    nm = nb.make_model(name, SHAPE, CLASSES, seed=seed + 1)  # different init, then overwritten
    params = tb.get_params(tm)
    assert set(params) == set(nb.get_params(nm))
    nb.set_params(nm, params)
    for k, v in nb.get_params(nm).items():
        np.testing.assert_array_equal(v, params[k])
    return nm, tm


def _data(b=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(b, *SHAPE)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=b)
    return x, y


@pytest.mark.parametrize("name", ["mlp", "softmax"])
def test_logits_losses_and_input_gradients_agree(pair, name):
    nb, tb = pair
    nm, tm = _models(pair, name)
    x, y = _data()
    np.testing.assert_allclose(nb.to_numpy(nb.logits(nm, nb.asarray(x))),
                               tb.to_numpy(tb.logits(tm, tb.asarray(x))), rtol=1e-4, atol=1e-5)
    for loss in ("ce", "cw"):
        ln, gn = nb.loss_and_grad(nm, nb.asarray(x), nb.asarray(y), loss)
        lt, gt = tb.loss_and_grad(tm, tb.asarray(x), tb.asarray(y), loss)
        ln, gn = nb.to_numpy(ln), nb.to_numpy(gn)
        lt, gt = tb.to_numpy(lt), tb.to_numpy(gt)
        assert ln.shape == lt.shape == (8,) and gn.shape == gt.shape == x.shape
        np.testing.assert_allclose(ln, lt, rtol=1e-4, atol=1e-5, err_msg=loss)
        scale = np.abs(gt).max()
        np.testing.assert_allclose(gn, gt, rtol=1e-3, atol=1e-5 * scale, err_msg=loss)


@pytest.mark.parametrize("name", ["mlp", "softmax"])
def test_training_steps_agree(pair, name):
    nb, tb = pair
    nm, tm = _models(pair, name)
    on = nb.make_optimizer(nm, 0.05, 0.9, 1e-4)
    ot = tb.make_optimizer(tm, 0.05, 0.9, 1e-4)
    for step in range(3):
        x, y = _data(seed=step + 10)
        ln, cn = nb.train_step(nm, on, nb.asarray(x), nb.asarray(y))
        lt, ct = tb.train_step(tm, ot, tb.asarray(x), tb.asarray(y))
        assert ln == pytest.approx(lt, rel=1e-4) and cn == ct
    pn, pt = nb.get_params(nm), tb.get_params(tm)
    for k in pt:
        np.testing.assert_allclose(pn[k], pt[k], rtol=1e-3, atol=1e-5, err_msg=k)


# --- train_step: one step with optional weights, bit-identical to the two steps it replaced ----
def _old_numpy_step(b, model, opt, x, y, batch_size=None, weights=None):
    """numpy's train_step and weighted_train_step as they were written before they were one."""
    from minidyn.backends import numpy_models as nmod
    logits, cache = model.forward(x)
    losses, dlogits = nmod.cross_entropy(b.xp, logits, y)
    if weights is None:
        _, grads = model.backward(cache, dlogits / (batch_size or x.shape[0]), input_grad=False)
    else:
        w = b.astype(b.xp.asarray(weights), dlogits.dtype)
        _, grads = model.backward(cache, dlogits * w[:, None], input_grad=False)
    opt.step(grads)
    return float(losses.sum()), b.count(logits.argmax(axis=1) == y)


def _old_torch_step(b, model, opt, x, y, batch_size=None, weights=None):
    """torch's two steps as they were (one process, model in train mode, no amp)."""
    x, y = x.detach(), y.to(torch.int64)
    opt.zero_grad(set_to_none=True)
    z = model(x).to(b._float)
    losses = torch.nn.functional.cross_entropy(z, y, reduction="none")
    if weights is None:
        share = batch_size / b.world_size if batch_size else len(y)
        (losses.mean() if len(y) == share else losses.sum() / share).backward()
    else:
        w = b.asarray(weights).detach().to(device=x.device, dtype=torch.float32)
        ((losses * w.to(losses.dtype)).sum() * b.world_size).backward()
    opt.step()
    return float(losses.detach().sum().item()), int((z.detach().argmax(dim=1) == y).sum().item())


@pytest.mark.parametrize("which", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["mlp", "softmax"])
@pytest.mark.parametrize("batch_size, weighted", [(None, False), (12, False), (None, True)])
def test_train_step_with_and_without_weights_is_bit_identical_to_the_steps_it_replaced(
        pair, which, name, batch_size, weighted):
    b = pair[0] if which == "numpy" else pair[1]
    old = _old_numpy_step if which == "numpy" else _old_torch_step
    new_model, old_model = (b.make_model(name, SHAPE, CLASSES, seed=3) for _ in range(2))
    new_opt, old_opt = (b.make_optimizer(m, 0.05, 0.9, 5e-4) for m in (new_model, old_model))
    for step in range(3):  # the later steps use the momentum buffers
        x, y = _data(seed=step + 20)
        w = b.asarray(np.random.default_rng(step).uniform(0, 0.2, len(y))) if weighted else None
        x, y = b.asarray(x), b.asarray(y)
        assert b.train_step(new_model, new_opt, x, y, batch_size, weights=w) == \
            old(b, old_model, old_opt, x, y, batch_size, weights=w)
    new, before = b.get_params(new_model), b.get_params(old_model)
    for k in before:
        np.testing.assert_array_equal(new[k], before[k], err_msg=k)
