"""Hand-written models, losses and SGD of the numpy/cupy backends (minidyn.backends.numpy_models)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minidyn.backends import numpy_models as nm
from minidyn.backends.array import numpy_backend
from minidyn.errors import ConfigError

F64 = numpy_backend("float64")
SHAPE = (1, 3, 3)  # tiny inputs keep finite differences cheap (the mlp is still 9-256-256-C)
CLASSES = 4


def _batch(seed, batch=5, shape=SHAPE, classes=CLASSES):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, *shape)), rng.integers(0, classes, size=batch)


def _summed_loss(model, x, y, loss):
    return float(nm.LOSSES[loss](np, model.forward(x)[0], y)[0].sum())


# --- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", "mlp"])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_backward_matches_central_finite_differences(name, loss):
    """d(sum of losses) w.r.t. the input and every parameter, entry-wise and along a direction."""
    model = F64.make_model(name, SHAPE, CLASSES, seed=1)
    x, y = _batch(2)
    logits, cache = model.forward(x)
    dx, grads = model.backward(cache, nm.LOSSES[loss](np, logits, y)[1])
    assert set(grads) == set(model.params)
    targets = [("x", x, dx)] + [(k, model.params[k], grads[k]) for k in model.params]
    rng, h = np.random.default_rng(3), 1e-6

    def central(arr, step):  # (f(arr + step) - f(arr - step)) / 2, arr restored afterwards
        arr += step
        up = _summed_loss(model, x, y, loss)
        arr -= 2 * step
        down = _summed_loss(model, x, y, loss)
        arr += step
        return (up - down) / 2

    for what, arr, grad in targets:
        assert grad.shape == arr.shape, what
        for flat in rng.choice(arr.size, size=min(arr.size, 8), replace=False):
            step = np.zeros_like(arr)
            step.flat[flat] = h
            assert central(arr, step) / h == pytest.approx(grad.flat[flat], rel=1e-5, abs=1e-7), what
        direction = rng.normal(size=arr.shape)
        expected = float((grad * direction).sum())
        assert central(arr, h * direction) / h == pytest.approx(expected, rel=1e-5, abs=1e-7), what


def test_backward_flags_skip_work_but_not_results():
    model = F64.make_model("mlp", SHAPE, CLASSES, seed=0)
    x, y = _batch(0)
    logits, cache = model.forward(x)
    dlogits = nm.cross_entropy(np, logits, y)[1]
    dx, grads = model.backward(cache, dlogits)
    dx_only, none = model.backward(cache, dlogits, param_grads=False)
    no_dx, grads_only = model.backward(cache, dlogits, input_grad=False)
    assert none == {} and no_dx is None
    np.testing.assert_array_equal(dx_only, dx)
    for k in grads:
        np.testing.assert_array_equal(grads_only[k], grads[k])


# --- losses ------------------------------------------------------------------------------------
_logits = st.integers(1, 6).flatmap(
    lambda b: st.tuples(
        hnp.arrays(np.float64, (b, 5), elements=st.floats(-1e6, 1e6)),
        hnp.arrays(np.int64, (b,), elements=st.integers(0, 4)),
    )
)


@settings(max_examples=60, deadline=None)
@given(_logits, st.sampled_from([1.0, 1e-3, 1e3, 1e300]))
def test_cross_entropy_matches_logsumexp_without_overflow(logits_labels, scale):
    logits, y = logits_labels
    logits = np.clip(logits * scale, -1e307, 1e307)
    losses, dlogits = nm.cross_entropy(np, logits, y)
    rows = np.arange(len(y))
    expected = np.logaddexp.reduce(logits, axis=1) - logits[rows, y]
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(dlogits))
    assert np.all(losses >= 0)
    np.testing.assert_allclose(losses, expected, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(logits).max()))
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-12)  # softmax - onehot


def test_cross_entropy_huge_float32_logits():
    logits = np.array([[1e4, 0.0, -1e4], [3e38, 3e38, 0.0]], dtype=np.float32)
    losses, dlogits = nm.cross_entropy(np, logits, np.array([1, 0]))
    np.testing.assert_allclose(losses, [1e4, np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(dlogits, [[1, -1, 0], [-0.5, 0.5, 0]], atol=1e-6)


def test_cw_margin_with_all_negative_logits():
    """The authors' max((1 - onehot) * z) sees a 0 for the true class and returns 5 and 2 here."""
    logits = np.array([[-5.0, -1.0, -3.0], [-2.0, -7.0, -9.0]])
    losses, dlogits = nm.cw_margin(np, logits, np.array([0, 0]))
    np.testing.assert_array_equal(losses, [4.0, -5.0])
    np.testing.assert_array_equal(dlogits, [[-1, 1, 0], [-1, 1, 0]])


@settings(max_examples=60, deadline=None)
@given(_logits, st.booleans())
def test_cw_margin_is_best_other_minus_true(logits_labels, negative):
    logits, y = logits_labels
    logits = -np.abs(logits) - 1 if negative else logits
    losses, dlogits = nm.cw_margin(np, logits, y)
    for i, (row, label) in enumerate(zip(logits, y)):
        assert losses[i] == np.delete(row, label).max() - row[label]
        assert dlogits[i, label] == -1 and dlogits[i].sum() == 0 and np.abs(dlogits[i]).sum() == 2


# --- models ------------------------------------------------------------------------------------
def test_parameter_names_shapes_and_init_follow_torch():
    torch = pytest.importorskip("torch")
    model = nm.make_model("mlp", (1, 28, 28), 10, seed=7)
    reference = torch.nn.ModuleDict(
        {"fc1": torch.nn.Linear(784, 256), "fc2": torch.nn.Linear(256, 256), "fc3": torch.nn.Linear(256, 10)}
    )
    assert {k: tuple(v.shape) for k, v in model.params.items()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()
    }
    for name, p in model.params.items():
        fan_in = p.shape[-1] if name.endswith("weight") else model.params[name[:-4] + "weight"].shape[1]
        bound = 1 / np.sqrt(fan_in)
        assert p.dtype == np.float32 and np.abs(p).max() <= bound and np.abs(p).max() > 0.5 * bound
    assert list(nm.make_model("softmax", (1, 28, 28), 10, seed=7).params) == ["fc1.weight", "fc1.bias"]


def test_init_is_seeded():
    a, b, c = (nm.make_model("mlp", SHAPE, 3, seed=s).params for s in (1, 1, 2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])


def test_unknown_model_names_the_available_ones():
    with pytest.raises(ConfigError, match="softmax, mlp.*cnn4, cnn8 and wrn need --backend torch"):
        nm.make_model("cnn4", SHAPE, 10, seed=0)


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_forward_matches_torch(name):
    torch = pytest.importorskip("torch")
    model = F64.make_model(name, SHAPE, CLASSES, seed=0)
    x, _ = _batch(1)
    h = torch.tensor(x).flatten(1)
    for layer in range(1, model.num_layers + 1):
        w, b = (torch.tensor(model.params[f"fc{layer}.{k}"]) for k in ("weight", "bias"))
        h = torch.nn.functional.linear(h, w, b)
        h = h.relu() if layer < model.num_layers else h
    np.testing.assert_allclose(model.forward(x)[0], h.numpy(), rtol=1e-12, atol=1e-12)


# --- SGD ---------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(1e-3, 1.0),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    weight_decay=st.sampled_from([0.0, 5e-4, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_sgd_matches_torch(lr, momentum, weight_decay, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    start = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=3).astype(np.float32)}
    ours = nm.SGD({k: v.copy() for k, v in start.items()}, lr, momentum, weight_decay)
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = torch.optim.SGD(theirs.values(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for step in range(4):
        if step == 2:  # what set_lr does, mid-run
            ours.lr = opt.param_groups[0]["lr"] = lr / 10
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()}
        ours.step(grads)
        for k, p in theirs.items():
            p.grad = torch.tensor(grads[k])
        opt.step()
    for k, p in theirs.items():
        np.testing.assert_allclose(ours.params[k], p.detach().numpy(), rtol=1e-6, atol=1e-6)
        if momentum:
            np.testing.assert_allclose(ours.buffers[k], opt.state[p]["momentum_buffer"], rtol=1e-6, atol=1e-6)
    assert bool(ours.buffers) == bool(momentum)


def test_train_step_matches_torch_with_mean_loss():
    torch = pytest.importorskip("torch")
    backend = numpy_backend()
    model = backend.make_model("mlp", SHAPE, CLASSES, seed=0)
    net = torch.nn.ModuleDict({f"fc{i}": torch.nn.Linear(*model.params[f"fc{i}.weight"].shape[::-1])
                               for i in (1, 2, 3)})
    net.load_state_dict({k: torch.tensor(v) for k, v in backend.get_params(model).items()})
    opt = backend.make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=5e-4)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for seed in range(3):
        x, y = (a.astype(np.float32) if a.dtype.kind == "f" else a for a in _batch(seed, batch=8))
        loss_sum, correct = backend.train_step(model, opt, x, y)
        logits = net.fc3(net.fc2(net.fc1(torch.tensor(x).flatten(1)).relu()).relu())
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
        topt.zero_grad()
        loss.backward()
        topt.step()
        assert loss_sum == pytest.approx(8 * loss.item(), rel=1e-5)
        assert correct == int((logits.argmax(1) == torch.tensor(y)).sum())
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(model.params[k], v.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_train_step_learns_a_separable_problem(name):
    backend = numpy_backend()
    rng = np.random.default_rng(0)
    y = np.arange(32) % 2
    x = (0.3 * rng.normal(size=(32, 1, 2, 2)) + (2 * y - 1)[:, None, None, None]).astype(np.float32)
    model = backend.make_model(name, (1, 2, 2), 2, seed=0)
    opt = backend.make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=0.0)
    history = [backend.train_step(model, opt, x, y) for _ in range(30)]
    assert history[-1][0] < history[0][0] / 4
    assert history[-1][1] == 32
