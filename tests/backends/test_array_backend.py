"""The numpy and cupy backends (minidyn.backends.array) against the Backend protocol.

Tests that take the `be` fixture run once per array module; the cupy run is skipped cleanly
unless CuPy and a CUDA device are present.
"""
import json
import os
import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minidyn.backend import Backend, backend_for, get_backend
from minidyn.backends.array import ArrayBackend, cupy_backend, numpy_backend
from minidyn.errors import MinidynError, BackendUnavailable, CheckpointError, ConfigError

SHAPE = (1, 3, 3)
CLASSES = 4


def _make(name, dtype="float32"):
    if name == "numpy":
        return numpy_backend(dtype)
    pytest.importorskip("cupy")
    try:
        return cupy_backend(dtype)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=["numpy", "cupy"])
def be(request):
    return _make(request.param)


def _batch(be, seed, batch=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, *SHAPE)).astype(np.float32)
    return be.asarray(x), be.asarray(rng.integers(0, CLASSES, size=batch))


# --- registry and availability -----------------------------------------------------------------
def test_registry_returns_a_protocol_conforming_backend():
    backend = get_backend("numpy")
    assert isinstance(backend, ArrayBackend) and isinstance(backend, Backend)
    assert backend.name == "numpy" and backend_for(np.zeros(3)) is backend
    assert get_backend("numpy", dtype="float64").float_dtype == np.float64


def test_cupy_missing_is_a_one_line_backend_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(BackendUnavailable) as info:
        cupy_backend()
    message = str(info.value)
    assert message.startswith("--backend cupy needs CuPy and a CUDA GPU: ") and "\n" not in message


def test_bad_float_dtype_is_a_config_error():
    with pytest.raises(ConfigError):
        numpy_backend("float16")


# --- arrays ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [
        (np.zeros(2, np.float64), np.float32),
        (np.zeros(2, np.float16), np.float32),
        ([1.5, 2.0], np.float32),
        (np.zeros(2, bool), np.bool_),
        (np.zeros(2, np.uint8), np.uint8),
        (np.zeros(2, np.int32), np.int64),
        (np.zeros(2, np.uint16), np.int64),
        ([1, 2], np.int64),
    ],
)
def test_asarray_keeps_the_kind(be, value, expected):
    out = be.asarray(value)
    assert isinstance(out, be.xp.ndarray) and out.dtype == expected
    np.testing.assert_array_equal(be.to_numpy(out), np.asarray(value).astype(expected))


def test_asarray_float64_backend_and_explicit_casts(be):
    wide = _make(be.name, "float64")
    assert wide.asarray(np.zeros(2, np.float32)).dtype == np.float64
    assert wide.zeros((2,)).dtype == np.float64 and wide.uniform(wide.rng(0), (2,), 0, 1).dtype == np.float64
    for dtype, expected in [("float", np.float32), ("int", np.int64), ("bool", np.bool_), ("uint8", np.uint8)]:
        assert be.asarray([0, 1, 2], dtype=dtype).dtype == expected
    with pytest.raises(ConfigError):
        be.asarray([1], dtype="complex")
    with pytest.raises(ConfigError):
        be.asarray(np.array(["a"]))


def test_asarray_does_not_copy_what_it_already_owns():
    backend = numpy_backend()
    a = np.zeros(3, np.float32)
    assert backend.asarray(a) is a


def test_asarray_from_torch_through_dlpack_without_a_copy():
    torch = pytest.importorskip("torch")
    backend = numpy_backend()
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    a = backend.asarray(t)
    t[0, 0] = 42.0  # shared memory: the change shows through
    assert a.shape == (2, 3) and a[0, 0] == 42.0
    assert backend.asarray(torch.tensor([True, False])).dtype == np.bool_
    assert backend.asarray(torch.tensor([1, 2], dtype=torch.int32)).dtype == np.int64
    assert backend.asarray(torch.ones(2, requires_grad=True)).dtype == np.float32


def test_asarray_from_torch_on_the_gpu_for_cupy():
    torch = pytest.importorskip("torch")
    backend = _make("cupy")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    t = torch.arange(4.0, device="cuda")
    a = backend.asarray(t)
    t[0] = 7.0
    assert float(a[0]) == 7.0


def test_creation(be):
    assert be.zeros((2, 3)).dtype == np.float32 and be.zeros((2,), "int").dtype == np.int64
    assert be.zeros((2,), "bool").dtype == np.bool_
    np.testing.assert_array_equal(be.to_numpy(be.full((2,), 3, "int")), [3, 3])
    np.testing.assert_array_equal(be.to_numpy(be.full((2, 2), 0.5)), np.full((2, 2), 0.5, np.float32))
    out = be.arange(4)
    assert out.dtype == np.int64 and be.to_numpy(out).tolist() == [0, 1, 2, 3]
    assert isinstance(be.to_numpy(out), np.ndarray)


# No subnormals: CuPy's kernels flush them to zero on the GPU (clip(0, 1.2e-42, 1.2e-42) is 0 there,
# 1.2e-42 in numpy), a difference of the hardware that no image or eps of this package reaches.
_floats = st.floats(-10, 10, width=32, allow_subnormal=False)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, (3, 4), elements=_floats),
    hnp.arrays(np.float32, (3, 4), elements=_floats),
    st.floats(0, 5, width=32),
    st.booleans(),
)
def test_clip_matches_numpy_with_array_or_scalar_bounds(be, a, centre, radius, scalar):
    lo, hi = (-radius, radius) if scalar else (centre - radius, centre + radius)
    out = be.clip(be.asarray(a), lo if scalar else be.asarray(lo), hi if scalar else be.asarray(hi))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(be.to_numpy(out), np.clip(a, lo, hi))


def test_elementwise_and_reductions(be):
    a = np.array([[-2.0, 0.0, 3.0], [1.0, -1.0, 0.5]], np.float32)
    x = be.asarray(a)
    np.testing.assert_array_equal(be.to_numpy(be.sign(x)), np.sign(a))
    np.testing.assert_array_equal(be.to_numpy(be.abs(x)), np.abs(a))
    np.testing.assert_array_equal(be.to_numpy(be.where(x > 0, x, be.zeros(a.shape))), np.maximum(a, 0))
    np.testing.assert_allclose(be.to_numpy(be.sum_per_example(be.asarray(a.reshape(2, 1, 3)))), a.sum(1))
    out = be.argmax(x)
    assert out.dtype == np.int64 and be.to_numpy(out).tolist() == [2, 0]


def test_gather_scatter(be):
    a = be.asarray(np.arange(12, dtype=np.float32).reshape(4, 3))
    mask = be.asarray(np.array([True, False, True, False]))
    idx = be.nonzero(mask)
    assert idx.dtype == np.int64 and be.to_numpy(idx).tolist() == [0, 2]
    assert be.count(mask) == 2 and isinstance(be.count(mask), int)
    rows = be.take(a, idx)
    rows += 100  # a new array: `a` is untouched
    assert float(a[0, 0]) == 0.0
    be.put(a, idx, rows)
    np.testing.assert_array_equal(be.to_numpy(a)[:, 0], [100, 3, 106, 9])


def test_rng_is_explicit_and_uniform_in_range(be):
    first = be.to_numpy(be.uniform(be.rng(5), (1000,), -0.3, 0.3))
    again = be.to_numpy(be.uniform(be.rng(5), (1000,), -0.3, 0.3))
    other = be.to_numpy(be.uniform(be.rng(6), (1000,), -0.3, 0.3))
    assert first.dtype == np.float32 and np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.min() >= -0.3 and first.max() <= 0.3 and first.std() > 0.15


# --- the model side ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp(be):
    return be.make_model("mlp", SHAPE, CLASSES, seed=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.data(), st.sampled_from(["ce", "cw"]))
def test_loss_and_grad_is_per_example(be, mlp, batch, data, loss):
    """Row i depends on example i only: changing the other examples leaves it unchanged."""
    i = data.draw(st.integers(0, batch - 1))
    seeds = data.draw(st.lists(st.integers(0, 2**16), min_size=2, max_size=2, unique=True))
    x, y = _batch(be, seeds[0], batch)
    x2, y2 = _batch(be, seeds[1], batch)
    be.put(x2, be.arange(batch)[i : i + 1], x[i : i + 1])
    y2[i] = y[i]
    losses, grad = be.loss_and_grad(mlp, x, y, loss)
    losses2, grad2 = be.loss_and_grad(mlp, x2, y2, loss)
    alone, grad_alone = be.loss_and_grad(mlp, x[i : i + 1], y[i : i + 1], loss)
    assert losses.shape == (batch,) and grad.shape == x.shape and grad.dtype == np.float32
    for other_losses, other_grad, j in [(losses2, grad2, i), (alone, grad_alone, 0)]:
        np.testing.assert_allclose(be.to_numpy(other_losses)[j], be.to_numpy(losses)[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(be.to_numpy(other_grad)[j], be.to_numpy(grad)[i], rtol=1e-5, atol=1e-7)


def test_loss_and_grad_sum_is_not_divided_by_batch(be, mlp):
    x, y = _batch(be, 0, batch=4)
    doubled = be.asarray(np.concatenate([be.to_numpy(x)] * 2))
    _, grad = be.loss_and_grad(mlp, x, y)
    _, grad2 = be.loss_and_grad(mlp, doubled, be.asarray(np.concatenate([be.to_numpy(y)] * 2)))
    np.testing.assert_allclose(be.to_numpy(grad2)[:4], be.to_numpy(grad), rtol=1e-5, atol=1e-7)


def test_unknown_loss_and_model_are_config_errors(be, mlp):
    x, y = _batch(be, 0)
    with pytest.raises(ConfigError, match="unknown loss"):
        be.loss_and_grad(mlp, x, y, "hinge")
    with pytest.raises(ConfigError, match="need --backend torch"):
        be.make_model("wrn", SHAPE, CLASSES, seed=0)


def test_logits_and_train_step_types(be):
    model = be.make_model("softmax", SHAPE, CLASSES, seed=0)
    x, y = _batch(be, 0)
    assert be.logits(model, x).shape == (5, CLASSES)
    opt = be.make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss, correct = be.train_step(model, opt, x, y)
    assert type(loss) is float and type(correct) is int and 0 <= correct <= 5
    be.set_lr(opt, 0.0)
    before = be.get_params(model)
    be.train_step(model, opt, x, y)  # lr 0: momentum cannot move the weights either
    assert all(np.array_equal(before[k], v) for k, v in be.get_params(model).items())


# --- parameters and checkpoints -----------------------------------------------------------------
def test_get_set_params_round_trip(be):
    model = be.make_model("mlp", SHAPE, CLASSES, seed=0)
    other = be.make_model("mlp", SHAPE, CLASSES, seed=1)
    params = be.get_params(model)
    assert all(type(v) is np.ndarray for v in params.values())
    params["fc1.bias"][:] = 9.0  # copies: the model is untouched
    assert float(model.params["fc1.bias"][0]) != 9.0
    be.set_params(other, be.get_params(model))
    x, _ = _batch(be, 0)
    np.testing.assert_array_equal(be.to_numpy(be.logits(other, x)), be.to_numpy(be.logits(model, x)))


def test_set_params_shape_mismatch_names_both_shapes(be):
    model = be.make_model("mlp", SHAPE, CLASSES, seed=0)
    params = be.get_params(model)
    params["fc2.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointError, match=r"'fc2.weight'.*\(3, 3\).*\(256, 256\)"):
        be.set_params(model, params)
    with pytest.raises(CheckpointError, match="missing"):
        be.set_params(model, {"fc1.weight": be.get_params(model)["fc1.weight"]})


def _trained(be, seed=0, steps=2):
    model = be.make_model("mlp", SHAPE, CLASSES, seed=seed)
    opt = be.make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for s in range(steps):
        be.train_step(model, opt, *_batch(be, s))
    return model, opt


def test_checkpoint_round_trip_resumes_exactly(be, tmp_path):
    model, opt = _trained(be)
    path = tmp_path / "ck.npz"
    meta = {"epoch": 3, "eps": 0.3, "name": "mnist", "history": [1.5, None]}
    be.save_checkpoint(str(path), model, opt, meta)
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as f:
        assert set(f.files) == {"meta"} | {f"model/{k}" for k in model.params} | {
            f"optimizer/{k}" for k in model.params
        }
        assert json.loads(f["meta"].item()) == meta

    fresh, fresh_opt = _trained(be, seed=1, steps=0)
    assert be.load_checkpoint(str(path), fresh, fresh_opt) == meta
    for k in model.params:
        np.testing.assert_array_equal(be.to_numpy(fresh.params[k]), be.to_numpy(model.params[k]))
        np.testing.assert_array_equal(be.to_numpy(fresh_opt.buffers[k]), be.to_numpy(opt.buffers[k]))
    batch = _batch(be, 9)
    assert be.train_step(fresh, fresh_opt, *batch) == be.train_step(model, opt, *batch)
    for k in model.params:
        np.testing.assert_array_equal(be.to_numpy(fresh.params[k]), be.to_numpy(model.params[k]))


def test_checkpoint_write_is_atomic(be, tmp_path, monkeypatch):
    model, opt = _trained(be, steps=0)
    path = str(tmp_path / "ck.npz")
    be.save_checkpoint(path, model, opt, {"epoch": 1})

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(MinidynError, match="the previous version is kept"):  # one line, not OSError
        be.save_checkpoint(path, model, opt, {"epoch": 2})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.npz"]
    assert be.load_checkpoint(path, model) == {"epoch": 1}


class _Bomb:
    """Unpickling this creates the directory `path`: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _assert_refused(be, path, model):
    before = be.get_params(model)
    with pytest.raises(CheckpointError) as info:
        be.load_checkpoint(str(path), model)
    assert "\n" not in str(info.value)
    assert all(np.array_equal(before[k], v) for k, v in be.get_params(model).items())


def test_pickles_are_refused_and_never_unpickled(be, tmp_path):
    model = be.make_model("softmax", SHAPE, CLASSES, seed=0)
    sentinel = tmp_path / "unpickled"
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"meta": _Bomb(str(sentinel))}, f)
    np.savez(tmp_path / "objects.npz", meta=np.array([_Bomb(str(sentinel))], dtype=object),
             **{f"model/{k}": v for k, v in be.get_params(model).items()})
    np.save(tmp_path / "single.npy", np.zeros(3))
    for name in ["plain.pkl", "objects.npz", "single.npy", "missing.npz"]:
        _assert_refused(be, tmp_path / name, model)
    assert not sentinel.exists()


def test_checkpoint_of_another_model_is_refused(be, tmp_path):
    softmax = be.make_model("softmax", SHAPE, CLASSES, seed=0)
    be.save_checkpoint(str(tmp_path / "softmax.npz"), softmax, None, {})
    _assert_refused(be, tmp_path / "softmax.npz", be.make_model("mlp", SHAPE, CLASSES, seed=0))
    _assert_refused(be, tmp_path / "softmax.npz", be.make_model("softmax", (1, 2, 2), CLASSES, seed=0))


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    backend = numpy_backend()
    model = backend.make_model("softmax", (1, 2, 2), 3, seed=0)
    opt = backend.make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=0.0)
    backend.train_step(model, opt, np.ones((2, 1, 2, 2), np.float32), np.array([0, 1]))
    path = tmp_path_factory.mktemp("ck") / "ck.npz"
    backend.save_checkpoint(str(path), model, opt, {"epoch": 1})
    return backend, model, path.read_bytes()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_corrupted_checkpoint_is_a_checkpoint_error_or_loads_unchanged(saved_checkpoint, tmp_path_factory, data):
    """Truncation or a flipped byte anywhere: CheckpointError, or (an unchecked zip field) the
    very same contents. Never another exception, never wrong weights."""
    backend, reference, blob = saved_checkpoint
    if data.draw(st.booleans(), label="truncate"):
        blob = blob[: data.draw(st.integers(0, len(blob) - 1), label="length")]
    else:
        position = data.draw(st.integers(0, len(blob) - 1), label="position")
        blob = blob[:position] + bytes([blob[position] ^ data.draw(st.integers(1, 255))]) + blob[position + 1 :]
    path = tmp_path_factory.mktemp("bad") / "ck.npz"
    path.write_bytes(blob)
    model = backend.make_model("softmax", (1, 2, 2), 3, seed=1)
    opt = backend.make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=0.0)
    try:
        meta = backend.load_checkpoint(str(path), model, opt)
    except CheckpointError:
        return
    assert meta == {"epoch": 1}
    for k, v in backend.get_params(reference).items():
        np.testing.assert_array_equal(model.params[k], v)


# --- numpy and cupy agree ----------------------------------------------------------------------
def test_cupy_matches_numpy():
    gpu, cpu = _make("cupy"), numpy_backend()
    models = [b.make_model("mlp", SHAPE, CLASSES, seed=3) for b in (gpu, cpu)]
    assert all(np.array_equal(v, cpu.get_params(models[1])[k]) for k, v in gpu.get_params(models[0]).items())
    x, y = _batch(cpu, 0)
    for loss in ("ce", "cw"):
        (lg, gg), (lc, gc) = (b.loss_and_grad(m, b.asarray(x), b.asarray(y), loss) for b, m in zip((gpu, cpu), models))
        np.testing.assert_allclose(gpu.to_numpy(lg), lc, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gpu.to_numpy(gg), gc, rtol=1e-4, atol=1e-6)
