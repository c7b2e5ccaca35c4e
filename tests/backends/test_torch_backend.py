"""The torch backend: array semantics, per-example gradients, training, checkpoints, devices."""
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from minidyn.backend import Backend, backend_for, get_backend  # noqa: E402
from minidyn.backends.torch_backend import TorchBackend, load_model, torch_backend  # noqa: E402
from minidyn.errors import BackendUnavailable, CheckpointError, ConfigError  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
MNIST = (1, 28, 28)


@pytest.fixture(scope="module")
def bk():
    return torch_backend(device="cpu")


def _batch(b=6, shape=MNIST, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, *shape, generator=g), torch.randint(0, classes, (b,), generator=g)


def _warm_bn(model, shape=MNIST):
    """Give BatchNorm non-trivial running statistics, then switch to eval."""
    model.train()
    with torch.no_grad():
        for s in range(3):
            model(_batch(16, shape, seed=100 + s)[0] * 2 + 0.3)
    model.eval()
    return model


# --- construction ----------------------------------------------------------------------------
def test_factory_and_protocol(bk):
    assert isinstance(bk, Backend) and bk.name == "torch" and bk.device == "cpu"
    assert torch_backend().device == ("cuda" if HAS_CUDA else "cpu")
    assert isinstance(get_backend("torch", device="cpu"), TorchBackend)
    assert backend_for(torch.zeros(2)).device == "cpu"


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
def test_cuda_without_gpu_is_unavailable():
    with pytest.raises(BackendUnavailable) as info:
        torch_backend(device="cuda")
    assert str(info.value) == "--device cuda: no CUDA GPU is available (torch.cuda.is_available() is False)"
    with pytest.raises(BackendUnavailable):
        torch_backend(device="cuda:0")


@pytest.mark.parametrize("kwargs", [{"device": "tpu"}, {"device": "cpu", "attack_mode": "test"},
                                    {"device": "cpu", "amp": "fp8"}, {"device": "cpu", "dtype": "float16"},
                                    {"device": "cpu", "amp": "bf16", "dtype": "float64"}])
def test_bad_options(kwargs):
    with pytest.raises(ConfigError):
        torch_backend(**kwargs)


# --- arrays ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,dtype,expected", [
    (np.zeros(3, np.float64), None, torch.float32),
    (np.zeros(3, np.float16), None, torch.float32),
    (np.zeros(3, bool), None, torch.bool),
    (np.zeros(3, np.uint8), None, torch.uint8),
    (np.zeros(3, np.int32), None, torch.int64),
    (np.zeros(3, np.uint16), None, torch.int64),
    ([1, 2, 3], None, torch.int64),
    ([1.0, 2.5], None, torch.float32),
    ([True, False], None, torch.bool),
    (torch.zeros(3, dtype=torch.float64), None, torch.float32),
    (torch.zeros(3, dtype=torch.int32), None, torch.int64),
    (np.zeros(3, np.uint8), "float", torch.float32),
    (np.ones(3, np.float32), "int", torch.int64),
    (np.ones(3, np.float32), "bool", torch.bool),
    (np.ones(3, np.int64), "uint8", torch.uint8),
])
def test_asarray_dtypes(bk, value, dtype, expected):
    t = bk.asarray(value, dtype)
    assert isinstance(t, torch.Tensor) and t.dtype == expected and t.device.type == "cpu"
    np.testing.assert_array_equal(bk.to_numpy(t), np.asarray(value if not torch.is_tensor(value) else value.numpy())
                                  .astype(bk.to_numpy(t).dtype))


def test_asarray_edge_cases(bk):
    ro = np.arange(4.0)
    ro.setflags(write=False)
    assert bk.asarray(ro).tolist() == [0, 1, 2, 3]
    big_endian = np.arange(3, dtype=">f4")
    assert bk.asarray(big_endian).tolist() == [0, 1, 2]
    leaf = torch.ones(2, requires_grad=True)
    assert not bk.asarray(leaf).requires_grad
    with pytest.raises(ConfigError):
        bk.asarray([1, 2], "complex")
    with pytest.raises(ConfigError):
        bk.asarray(np.array(["a"]))


def test_creation_and_math(bk):
    assert bk.zeros((2, 3)).dtype == torch.float32 and bk.zeros(4, "bool").dtype == torch.bool
    assert bk.full((2,), 7, "int").tolist() == [7, 7]
    assert bk.arange(4).dtype == torch.int64 and bk.arange(4).tolist() == [0, 1, 2, 3]
    a = bk.asarray([[-2.0, 0.0], [3.0, -0.5]])
    assert bk.sign(a).tolist() == [[-1, 0], [1, -1]]
    assert bk.abs(a).tolist() == [[2, 0], [3, 0.5]]
    assert bk.clip(a, -1.0, 1.0).tolist() == [[-1, 0], [1, -0.5]]
    lo, hi = bk.full((2, 2), -0.25), bk.asarray([[0.5, 0.5], [2.0, 2.0]])
    assert bk.clip(a, lo, hi).tolist() == [[-0.25, 0], [2, -0.25]]
    assert bk.clip(a, lo, 0.5).tolist() == [[-0.25, 0], [0.5, -0.25]]
    assert bk.where(a > 0, a, bk.zeros((2, 2))).tolist() == [[0, 0], [3, 0]]
    assert bk.sum_per_example(a).tolist() == [-2, 2.5]
    assert bk.sum_per_example(bk.asarray([1.0, 2.0])).tolist() == [1, 2]
    assert bk.sum_per_example(bk.zeros((0, 3, 2))).shape == (0,)
    assert bk.argmax(a).tolist() == [1, 0]


def test_take_put_nonzero_count(bk):
    a = bk.asarray(np.arange(12.0).reshape(4, 3))
    mask = bk.asarray([True, False, True, False])
    idx = bk.nonzero(mask)
    assert idx.dtype == torch.int64 and idx.tolist() == [0, 2]
    assert bk.count(mask) == 2 and isinstance(bk.count(mask), int)
    rows = bk.take(a, idx)
    rows += 100  # a copy: `a` unchanged
    assert a[0, 0].item() == 0
    bk.put(a, idx, torch.zeros((2, 3), dtype=torch.float64))  # cast to a's dtype
    assert a.sum(dim=1).tolist() == [0, 12, 0, 30]
    assert bk.nonzero(bk.zeros(3, "bool")).shape == (0,)


def test_rng_is_explicit(bk):
    state = torch.random.get_rng_state()
    u1 = bk.uniform(bk.rng(3), (1000,), -0.3, 0.3)
    u2 = bk.uniform(bk.rng(3), (1000,), -0.3, 0.3)
    assert torch.equal(u1, u2) and u1.dtype == torch.float32
    assert u1.min() >= -0.3 and u1.max() <= 0.3 and u1.std() > 0.1
    assert not torch.equal(u1, bk.uniform(bk.rng(4), (1000,), -0.3, 0.3))
    assert torch.equal(state, torch.random.get_rng_state())


# --- models ------------------------------------------------------------------------------------
def test_make_model_is_deterministic_and_leaves_global_rng(bk):
    state = torch.random.get_rng_state()
    a = bk.get_params(bk.make_model("cnn4", MNIST, 10, seed=1))
    b = bk.get_params(bk.make_model("cnn4", MNIST, 10, seed=1))
    c = bk.get_params(bk.make_model("cnn4", MNIST, 10, seed=2))
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])
    m = bk.make_model("mlp", MNIST, 10, seed=0)
    assert m.minidyn_arch == {"model": "mlp", "input_shape": [1, 28, 28], "num_classes": 10}
    with pytest.raises(ConfigError):
        bk.make_model("nope", MNIST, 10, seed=0)


@pytest.mark.parametrize("name", ["cnn4", "mlp"])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_loss_and_grad_is_per_example(bk, name, loss):
    model = _warm_bn(bk.make_model(name, MNIST, 10, seed=0))
    x, y = _batch(6)
    losses, grad = bk.loss_and_grad(model, x, y, loss)
    assert losses.shape == (6,) and grad.shape == x.shape
    assert not losses.requires_grad and not grad.requires_grad
    # each row is that example's own gradient, not divided by B
    for i in range(6):
        li, gi = bk.loss_and_grad(model, x[i:i + 1], y[i:i + 1], loss)
        torch.testing.assert_close(li[0], losses[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gi[0], grad[i], rtol=1e-4, atol=1e-7)
    # changing the other examples does not change row 0
    x2 = x.clone()
    x2[1:] = torch.rand_like(x2[1:])
    l2, g2 = bk.loss_and_grad(model, x2, y, loss)
    torch.testing.assert_close(l2[0], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g2[0], grad[0], rtol=1e-4, atol=1e-7)
    # the reference: plain autograd on each example alone, in eval mode
    assert not model.training
    for i in (0, 3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        z = model(xi)[0]
        if loss == "ce":
            ref = F.cross_entropy(z[None], y[i:i + 1])
        else:
            ref = torch.cat([z[:y[i]], z[y[i] + 1:]]).max() - z[y[i]]
        (gref,) = torch.autograd.grad(ref, xi)
        torch.testing.assert_close(losses[i], ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad[i:i + 1], gref, rtol=1e-4, atol=1e-7)


def test_attack_mode_train_couples_batchnorm_examples():
    bk = torch_backend(device="cpu", attack_mode="train")
    model = bk.make_model("cnn4", MNIST, 10, seed=0).eval()
    x, y = _batch(6)
    _, g1 = bk.loss_and_grad(model, x, y)
    x2 = x.clone()
    x2[1:] = torch.rand_like(x2[1:])
    _, g2 = bk.loss_and_grad(model, x2, y)
    assert not torch.allclose(g1[0], g2[0])  # why "eval" is the default
    assert not model.training  # restored


def test_loss_and_grad_leaves_no_parameter_gradients_and_restores_modes(bk):
    model = bk.make_model("cnn4", MNIST, 10, seed=0)
    x, y = _batch(4)
    model.train()
    model.features[1].eval()  # a mixed-mode model: each submodule's mode comes back
    assert all(p.grad is None for p in model.parameters())
    bk.loss_and_grad(model, x, y, "ce")
    assert all(p.grad is None for p in model.parameters())
    assert model.training and not model.features[1].training and model.features[5].training
    # existing gradients are left exactly as they were
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    model.eval()
    x_before = x.clone()
    with torch.no_grad():  # works inside no_grad too
        losses, grad = bk.loss_and_grad(model, x, y, "cw")
    assert grad.abs().sum() > 0
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert not model.training and not x.requires_grad and torch.equal(x, x_before)
    with pytest.raises(ConfigError):
        bk.loss_and_grad(model, x, y, "hinge")


def test_cw_margin_with_all_negative_logits(bk):
    model = bk.make_model("softmax", (4,), 3, seed=0)
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 1.0]]))
        model.fc1.bias.copy_(torch.tensor([-10.0, -20.0, -30.0]))
    x = torch.tensor([[1.0, 2.0, 3.0, 0.5], [0.5, 0.5, 0.5, 0.5]])
    y = torch.tensor([1, 0])
    z = bk.logits(model, x)
    assert (z < 0).all()  # z = [[-9, -16, -20.5], [-9.5, -19, -28]]
    losses, grad = bk.loss_and_grad(model, x, y, "cw")
    # max over j != y: row 0 -> class 0 (-9), row 1 -> class 1 (-19); a (1 - onehot) mask would
    # pick the zeroed true class instead and give 0 - z_y
    torch.testing.assert_close(losses, torch.tensor([-9.0 + 16.0, -19.0 + 9.5]))
    w = model.fc1.weight.detach()
    torch.testing.assert_close(grad, torch.stack([w[0] - w[1], w[1] - w[0]]))


def test_logits(bk):
    model = _warm_bn(bk.make_model("cnn8", (3, 32, 32), 10, seed=0), (3, 32, 32))
    model.train()
    x, _ = _batch(3, (3, 32, 32))
    z = bk.logits(model, x)
    assert z.shape == (3, 10) and not z.requires_grad and model.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(z, model(x))
    torch.testing.assert_close(bk.logits(model, x.numpy()), z)  # host data accepted


def test_train_step(bk):
    model = bk.make_model("cnn4", MNIST, 10, seed=0)
    opt = bk.make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=1e-4)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-4
    x, y = _batch(16)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        z = model(x)
    model.load_state_dict(before)  # undo the running-stat update of the reference pass
    total, correct = bk.train_step(model, opt, x, y)
    assert isinstance(total, float) and isinstance(correct, int)
    assert total == pytest.approx(F.cross_entropy(z, y, reduction="sum").item(), rel=1e-5)
    assert correct == int((z.argmax(1) == y).sum())
    assert not torch.equal(before["fc1.weight"], model.fc1.weight)
    assert all(p.grad is not None for p in model.parameters())
    losses = [bk.train_step(model, opt, x, y)[0] for _ in range(8)]
    assert losses[-1] < losses[0] * 0.7
    bk.set_lr(opt, 0.001)
    assert all(g["lr"] == 0.001 for g in opt.param_groups)


def test_params_round_trip_and_mismatch(bk):
    a = bk.make_model("cnn4", MNIST, 10, seed=0)
    b = bk.make_model("cnn4", MNIST, 10, seed=1)
    params = bk.get_params(a)
    assert all(isinstance(v, np.ndarray) for v in params.values())
    assert "features.1.running_mean" in params
    params["fc1.weight"][0, 0] += 0  # a copy, writable
    bk.set_params(b, params)
    x, _ = _batch(2)
    torch.testing.assert_close(bk.logits(a, x), bk.logits(b, x))
    bad = dict(params, **{"fc2.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(CheckpointError, match="fc2.weight") as info:
        bk.set_params(b, bad)
    assert "\n" not in str(info.value)
    missing = {k: v for k, v in params.items() if k != "fc2.bias"}
    with pytest.raises(CheckpointError, match="missing"):
        bk.set_params(b, missing)
    with pytest.raises(CheckpointError, match="unexpected"):
        bk.set_params(b, dict(params, extra=np.zeros(1)))


# --- checkpoints -------------------------------------------------------------------------------
def _trained(bk, name="cnn4", steps=2):
    model = bk.make_model(name, MNIST, 10, seed=0)
    opt = bk.make_optimizer(model, 0.05, 0.9, 1e-4)
    x, y = _batch(8)
    for _ in range(steps):
        bk.train_step(model, opt, x, y)
    return model, opt


def test_checkpoint_round_trip_with_optimizer(bk, tmp_path):
    model, opt = _trained(bk)
    path = tmp_path / "checkpoint.pt"
    bk.save_checkpoint(str(path), model, opt, {"epoch": 3, "history": [1.5, (2, 3)], "acc": np.float32(0.5)})
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind
    model2 = bk.make_model("cnn4", MNIST, 10, seed=9)
    opt2 = bk.make_optimizer(model2, 0.5, 0.0, 0.0)
    meta = bk.load_checkpoint(str(path), model2, opt2)
    assert meta["epoch"] == 3 and meta["history"] == [1.5, [2, 3]] and meta["acc"] == 0.5
    with pytest.raises(TypeError):
        bk.save_checkpoint(str(tmp_path / "bad.pt"), model, opt, {"oops": object()})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]
    assert meta["arch"] == {"model": "cnn4", "input_shape": [1, 28, 28], "num_classes": 10}
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    assert opt2.param_groups[0]["lr"] == 0.05 and opt2.param_groups[0]["momentum"] == 0.9
    # training goes on identically from the restored momentum buffers
    x, y = _batch(8, seed=5)
    bk.train_step(model, opt, x, y)
    bk.train_step(model2, opt2, x, y)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, model2.state_dict()[k], rtol=0, atol=0)
    # an optimizer that does not fit: refused, and the model is left as it was
    model3 = bk.make_model("cnn4", MNIST, 10, seed=9)
    before = bk.get_params(model3)
    opt3 = torch.optim.SGD(list(model3.parameters())[:2], lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match="optimizer state does not match"):
        bk.load_checkpoint(str(path), model3, opt3)
    assert all(np.array_equal(v, bk.get_params(model3)[k]) for k, v in before.items())
    # overwriting works, and a checkpoint without optimizer state loads weights only
    bk.save_checkpoint(str(path), model, None, {})
    assert bk.load_checkpoint(str(path), model2)["arch"]["model"] == "cnn4"
    with pytest.raises(CheckpointError, match="optimizer"):
        bk.load_checkpoint(str(path), model2, opt2)


def test_checkpoint_is_a_plain_weights_only_file(bk, tmp_path):
    model, opt = _trained(bk, "mlp")
    path = tmp_path / "c.pt"
    bk.save_checkpoint(path, model, opt, {"seed": 0})
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"format", "model", "optimizer", "meta"}


class _Evil:
    """Unpickling this creates `marker` (open(marker, "w")): a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoints_are_refused_without_running_code(bk, tmp_path):
    model = bk.make_model("mlp", MNIST, 10, seed=0)
    # the payload is live: a plain unpickler would run it
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe))).close()
    assert probe.exists()

    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.pt"  # a bare pickle
    raw.write_bytes(pickle.dumps({"model": _Evil(marker)}, protocol=2))
    zipped = tmp_path / "zipped.pt"  # torch's zip format, carrying the object in its data.pkl
    torch.save({"format": "minidyn-checkpoint/1", "model": {"x": _Evil(marker)}, "meta": {}}, zipped)
    for path in (raw, zipped):
        with pytest.raises(CheckpointError) as info:
            bk.load_checkpoint(str(path), model)
        message = str(info.value)
        assert "\n" not in message and "\x1b" not in message and str(path) in message
        assert "weights_only" in message
        with pytest.raises(CheckpointError):
            load_model(path)
        assert not marker.exists()


def test_other_architecture_or_file_is_refused(bk, tmp_path):
    cnn8 = bk.make_model("cnn8", MNIST, 10, seed=0)
    path = tmp_path / "checkpoint.pt"
    bk.save_checkpoint(str(path), cnn8, None, {})
    cnn4 = bk.make_model("cnn4", MNIST, 10, seed=0)
    before = bk.get_params(cnn4)
    with pytest.raises(CheckpointError) as info:
        bk.load_checkpoint(str(path), cnn4)
    assert str(info.value) == f"{path} was saved for model cnn8, not cnn4"
    assert all(np.array_equal(v, bk.get_params(cnn4)[k]) for k, v in before.items())
    with pytest.raises(CheckpointError, match="classes"):
        bk.load_checkpoint(str(path), bk.make_model("cnn8", MNIST, 5, seed=0))
    # a torch file that is not a minidyn checkpoint, garbage, a truncated file, no file
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a minidyn checkpoint"):
        bk.load_checkpoint(str(other), cnn4)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    for bad in (garbage, truncated, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError) as info:
            bk.load_checkpoint(str(bad), cnn4)
        assert "\n" not in str(info.value)


def test_load_model_round_trip(bk, tmp_path):
    model, opt = _trained(bk, "cnn4")
    path = tmp_path / "m.pt"
    bk.save_checkpoint(str(path), model, opt, {"epoch": 1})
    loaded = load_model(str(path))
    assert isinstance(loaded, torch.nn.Module) and not loaded.training
    assert not any(m.training for m in loaded.modules())
    x, _ = _batch(5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), bk.logits(model, x), rtol=0, atol=0)
    assert type(loaded).__name__ == "CNN4"


# --- options -----------------------------------------------------------------------------------
def test_float64_backend():
    bk64 = torch_backend(device="cpu", dtype="float64")
    assert bk64.asarray([0.5]).dtype == torch.float64 and bk64.zeros(2).dtype == torch.float64
    assert bk64.uniform(bk64.rng(0), (3,), 0, 1).dtype == torch.float64
    assert bk64.asarray(np.zeros(2, np.uint8)).dtype == torch.uint8
    model = _warm_bn(bk64.make_model("cnn4", MNIST, 10, seed=0).float()).double()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    x, y = _batch(4)
    x = x.double()
    for loss in ("ce", "cw"):
        losses, grad = bk64.loss_and_grad(model, x, y, loss)
        assert losses.dtype == grad.dtype == torch.float64
        for i in range(4):
            li, gi = bk64.loss_and_grad(model, x[i:i + 1], y[i:i + 1], loss)
            torch.testing.assert_close(gi[0], grad[i], rtol=1e-10, atol=1e-13)
    # float32 data is accepted and promoted
    assert bk64.loss_and_grad(model, x.float(), y)[1].dtype == torch.float64
    assert bk64.logits(model, x).dtype == torch.float64


def test_bf16_autocast_on_cpu():
    fp32, bf16 = torch_backend(device="cpu"), torch_backend(device="cpu", amp="bf16")
    model = _warm_bn(fp32.make_model("cnn4", MNIST, 10, seed=0))
    x, y = _batch(4)
    l32, g32 = fp32.loss_and_grad(model, x, y)
    l16, g16 = bf16.loss_and_grad(model, x, y)
    assert l16.dtype == torch.float32 and g16.dtype == torch.float32 and bf16.logits(model, x).dtype == torch.float32
    torch.testing.assert_close(l16, l32, rtol=0.1, atol=0.05)
    cos = F.cosine_similarity(g16.flatten(1), g32.flatten(1)).min()
    assert cos > 0.9
    opt = bf16.make_optimizer(model, 0.01, 0.9, 0.0)
    total, _ = bf16.train_step(model, opt, x, y)
    assert np.isfinite(total)


def test_channels_last_gives_the_same_results():
    plain, cl = torch_backend(device="cpu"), torch_backend(device="cpu", channels_last=True)
    m1 = _warm_bn(plain.make_model("cnn4", (3, 32, 32), 10, seed=0), (3, 32, 32))
    m2 = cl.make_model("cnn4", (3, 32, 32), 10, seed=0)
    assert m2.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    cl.set_params(m2, plain.get_params(m1))
    x, y = _batch(3, (3, 32, 32))
    l1, g1 = plain.loss_and_grad(m1, x, y)
    l2, g2 = cl.loss_and_grad(m2, x, y)
    torch.testing.assert_close(l1, l2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g1, g2, rtol=1e-3, atol=1e-6)


# --- CUDA --------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_cuda_matches_cpu(tmp_path):
    cpu, gpu = torch_backend(device="cpu"), torch_backend(device="cuda")
    assert gpu.device == "cuda"
    t = gpu.asarray(np.arange(6, dtype=np.uint8).reshape(2, 3), "float")
    assert t.is_cuda and t.dtype == torch.float32 and gpu.to_numpy(t).sum() == 15
    assert gpu.uniform(gpu.rng(0), (5,), 0, 1).is_cuda and gpu.arange(3).is_cuda
    m_cpu = _warm_bn(cpu.make_model("cnn4", MNIST, 10, seed=0))
    m_gpu = gpu.make_model("cnn4", MNIST, 10, seed=0)
    assert next(m_gpu.parameters()).is_cuda
    gpu.set_params(m_gpu, cpu.get_params(m_cpu))
    x, y = _batch(4)
    for loss in ("ce", "cw"):
        lc, gc = cpu.loss_and_grad(m_cpu, x, y, loss)
        lg, gg = gpu.loss_and_grad(m_gpu, gpu.asarray(x.numpy()), gpu.asarray(y.numpy()), loss)
        assert lg.is_cuda and gg.is_cuda
        torch.testing.assert_close(lg.cpu(), lc, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(gg.cpu(), gc, rtol=1e-2, atol=1e-5)
    opt = gpu.make_optimizer(m_gpu, 0.01, 0.9, 1e-4)
    gpu.train_step(m_gpu, opt, gpu.asarray(x.numpy()), gpu.asarray(y.numpy()))
    path = tmp_path / "gpu.pt"
    gpu.save_checkpoint(str(path), m_gpu, opt, {})
    loaded = load_model(str(path), device="cpu")  # a GPU checkpoint loads on the CPU
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), gpu.logits(m_gpu, gpu.asarray(x.numpy())).cpu(), rtol=1e-3, atol=1e-4)
    m_back = gpu.make_model("cnn4", MNIST, 10, seed=1)
    opt_back = gpu.make_optimizer(m_back, 0.1, 0.0, 0.0)
    gpu.load_checkpoint(str(path), m_back, opt_back)
    assert all(s["momentum_buffer"].is_cuda for s in opt_back.state.values())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("options", [{"amp": "bf16"}, {"channels_last": True}])
def test_cuda_options(options):
    gpu = torch_backend(device="cuda", **options)
    model = gpu.make_model("wrn-16-2", (3, 32, 32), 10, seed=0)
    x, y = _batch(4, (3, 32, 32))
    x, y = gpu.asarray(x.numpy()), gpu.asarray(y.numpy())
    losses, grad = gpu.loss_and_grad(model, x, y)
    assert losses.dtype == torch.float32 and torch.isfinite(grad).all()
    opt = gpu.make_optimizer(model, 0.01, 0.9, 0.0)
    assert np.isfinite(gpu.train_step(model, opt, x, y)[0])
