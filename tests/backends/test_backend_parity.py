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
