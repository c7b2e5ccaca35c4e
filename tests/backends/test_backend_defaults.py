"""The protocol's defaults (minidyn.backend): what a backend gets without writing it."""
import hashlib

import numpy as np
import pytest

from minidyn.backend import ArrayOps, Backend, ModelOps, ProcessOps, get_backend
from minidyn.backends.array import ArrayBackend
from minidyn.errors import CheckpointError, ConfigError


class Bare(Backend):
    """A backend that writes nothing: numpy arrays in float64."""

    name = "bare"
    float_dtype = np.dtype("float64")


def test_the_array_side_defaults_are_numpy_operations():
    backend, a = Bare(), np.array([[-2.0, 0.0, 3.0], [1.0, -1.0, 0.5]])
    assert backend.asarray(a) is a and backend.asarray([1, 2]).dtype == np.int64
    assert backend.asarray(np.zeros(2, np.float32)).dtype == np.float64
    assert backend.zeros(3, "bool").dtype == np.bool_ and backend.full((2,), 7, "int").tolist() == [7, 7]
    np.testing.assert_array_equal(backend.clip(a, -1.0, 1.0), np.clip(a, -1, 1))
    np.testing.assert_array_equal(backend.sum_per_example(a), a.sum(1))
    assert backend.argmax(a).tolist() == [2, 0] and backend.count(a > 0) == 3
    idx = backend.nonzero(a[:, 0] > 0)
    assert idx.dtype == np.int64 and idx.tolist() == [1]
    backend.put(a, idx, backend.take(a, idx) * 0)
    assert a[1].tolist() == [0, 0, 0]
    with pytest.raises(ConfigError):
        backend.zeros(2, "complex")


def test_the_generator_state_default_round_trips_numpy_generators_only():
    backend = Bare()
    rng = backend.rng(1)
    state = backend.rng_state(rng)
    first = backend.uniform(rng, (5,), -1, 1)
    backend.set_rng_state(rng, state)
    np.testing.assert_array_equal(backend.uniform(rng, (5,), -1, 1), first)
    with pytest.raises(ConfigError):
        backend.rng_state(object())
    with pytest.raises(CheckpointError):
        backend.set_rng_state(rng, {"torch": "..."})


def test_the_model_side_has_no_defaults_but_min_train_batch():
    backend = Bare()
    for method, args in [("loss_and_grad", (None, None, None)), ("logits", (None, None)),
                         ("train_step", (None, None, None, None)), ("make_model", ("mlp", (1,), 2, 0)),
                         ("make_optimizer", (None, 0.1, 0.0, 0.0)), ("set_lr", (None, 0.1)),
                         ("get_params", (None,)), ("set_params", (None, {})),
                         ("save_checkpoint", ("x", None, None, {})), ("load_checkpoint", ("x", None)),
                         ("read_meta", ("x",))]:
        with pytest.raises(NotImplementedError, match=f"the bare backend does not implement {method}"):
            getattr(backend, method)(*args)
    assert backend.min_train_batch(None) == 1


def test_the_process_side_defaults_are_one_process():
    backend, a = Bare(), np.arange(3.0)
    assert (backend.rank, backend.world_size) == (0, 1) and backend.all_reduce_sum(a) is a


def test_backend_joins_the_three_sides_and_crop_flip_is_written_once():
    assert issubclass(Backend, ArrayOps) and issubclass(Backend, ModelOps) and issubclass(Backend, ProcessOps)
    array_side = {k for k in vars(ArrayOps) if not k.startswith("_")}
    assert {k for k in vars(ArrayBackend) if k in array_side} == {"asarray", "to_numpy"}
    assert "crop_flip" not in vars(ArrayBackend)
    torch_backend = pytest.importorskip("minidyn.backends.torch_backend")
    assert "crop_flip" not in vars(torch_backend.TorchBackend)


# sha256 prefixes of crop_flip's output as written at af494fc, before it was written once in the
# base (one implementation per backend then): the same draws, in the same order, the same gather
CROP_FLIP_BEFORE = {
    ("numpy", (8, 3, 32, 32), 3, 4): "15428edf852d0900",
    ("numpy", (5, 2, 6, 7), 11, 2): "1379ed0c7e51e52c",
    ("torch", (8, 3, 32, 32), 3, 4): "03b185c1f45c9a7e",
    ("torch", (5, 2, 6, 7), 11, 2): "be252afae83e3d12",
}


@pytest.mark.parametrize("name, shape, seed, pad", list(CROP_FLIP_BEFORE))
def test_crop_flip_is_bit_identical_to_the_two_implementations_it_replaced(name, shape, seed, pad):
    if name == "torch":
        pytest.importorskip("torch")
    backend = get_backend(name, **({"device": "cpu"} if name == "torch" else {}))
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    out = backend.to_numpy(backend.crop_flip(backend.asarray(x), backend.rng(seed), pad=pad))
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == CROP_FLIP_BEFORE[name, shape, seed, pad]


# --- the protocol read in two parts ----------------------------------------------------------
ALGORITHM_MODULES = ["fosc", "projection", "active", "attacks", "apgd", "train", "methods", "schedules"]


def _public(cls):
    return {k for k, v in vars(cls).items() if not k.startswith("_") and callable(v)}


def test_the_algorithm_modules_call_only_what_algorithm_ops_offers():
    """Every `backend.<method>(` / `B.<method>(` in the algorithm modules is AlgorithmOps'."""
    import re
    from pathlib import Path

    import minidyn
    from minidyn.backend import AlgorithmOps
    offered = {k for k in dir(AlgorithmOps) if not k.startswith("_")}
    root = Path(minidyn.__file__).parent
    called = {}
    for name in ALGORITHM_MODULES:
        for method in re.findall(r"\b(?:backend|B)\.(\w+)\(", (root / f"{name}.py").read_text()):
            called.setdefault(method, name)
    assert {"loss_and_grad", "train_step", "clip", "take", "put"} <= set(called)  # the parse finds them
    assert {m: where for m, where in called.items() if m not in offered} == {}


def test_backend_is_what_the_algorithm_calls_and_what_the_run_needs():
    from minidyn.backend import AlgorithmOps, RunOps
    assert Backend.__mro__[1:3] == (AlgorithmOps, ArrayOps) and issubclass(Backend, RunOps)
    assert issubclass(RunOps, ProcessOps) and not issubclass(RunOps, AlgorithmOps)
    assert _public(ModelOps) == {"loss_and_grad", "logits", "train_step"}
    assert {"crop_flip", "rng_state", "set_rng_state", "min_train_batch", "save_checkpoint",
            "make_model"} <= _public(RunOps)
    assert not _public(AlgorithmOps) & _public(RunOps)


def test_a_backend_writes_at_most_eleven_methods():
    """The methods without a default: the algorithm's three and what `minidyn train` needs."""
    import inspect
    backend, written = Bare(), set()
    for name in sorted(k for k in dir(Backend) if not k.startswith("_") and k != "dtypes"):
        method = getattr(backend, name)
        if not callable(method):
            continue
        required = [p for p in inspect.signature(method).parameters.values() if p.default is p.empty]
        try:
            method(*[None] * len(required))
        except NotImplementedError as exc:  # its own, not that of a method its default calls
            written |= {name} if f" implement {name} " in str(exc) else set()
        except Exception:  # a default that ran (and tripped over the None arguments)
            pass
    assert written == {"loss_and_grad", "logits", "train_step", "make_model", "make_optimizer", "set_lr",
                       "get_params", "set_params", "save_checkpoint", "load_checkpoint", "read_meta"}


