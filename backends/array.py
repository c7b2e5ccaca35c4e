"""The numpy and cupy backends: one `ArrayBackend` class, with the array module `xp` swapped.

Models are the hand-written ones of `minidyn.backends.numpy_models` (softmax, mlp); cupy is
imported only by `cupy_backend`, so this module works on a machine without it.
"""
from __future__ import annotations

import json

import numpy as np

from minidyn.backends import numpy_models as nm
from minidyn.errors import BackendUnavailable, CheckpointError, ConfigError
from minidyn.fileio import atomic_write


class ArrayBackend:
    """`minidyn.backend.Backend` for an array module `xp` (numpy or cupy) and a float dtype."""

    def __init__(self, xp, name: str, dtype: str = "float32"):
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"the {name} backend computes in float32 or float64, not {dtype!r}")
        self.xp, self.name = xp, name
        self.float_dtype = np.dtype(dtype)
        self._dtypes = {"float": self.float_dtype, "int": np.dtype(np.int64),
                        "bool": np.dtype(bool), "uint8": np.dtype(np.uint8)}
        self._asnumpy = getattr(xp, "asnumpy", np.asarray)  # cupy.asnumpy copies to the host
        self.rank, self.world_size = 0, 1  # one process (torchrun needs the torch backend)

    def __repr__(self) -> str:
        return f"<{self.name} backend, {self.float_dtype.name}>"

    def _dtype(self, dtype: str):
        if dtype not in self._dtypes:
            raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(self._dtypes)}")
        return self._dtypes[dtype]

    # --- arrays: creation and transfer ---------------------------------------------------------
    def asarray(self, a, dtype=None):
        """numpy/cupy arrays, __dlpack__ objects (zero-copy where the device allows) or lists.

        dtype None keeps the kind: floats -> the backend's float dtype, bool and uint8 stay,
        other integers -> int64. Otherwise "float" | "int" | "bool" | "uint8" casts. An input
        that already has the wanted type and dtype is returned as is (no copy).
        """
        xp = self.xp
        if type(a).__module__.split(".")[0] == "cupy" and xp is np:
            a = a.get()  # device -> host
        elif hasattr(a, "__dlpack__") and not isinstance(a, (np.ndarray, xp.ndarray)):
            a = a.detach() if hasattr(a, "detach") else a  # e.g. a torch tensor
            try:
                a = xp.from_dlpack(a)  # zero-copy on the same device
            except (BufferError, RuntimeError, TypeError, ValueError):
                a = np.from_dlpack(a)  # a host tensor for cupy: copied below by xp.asarray
        arr = xp.asarray(a)
        if dtype is not None:
            return arr.astype(self._dtype(dtype), copy=False)
        kind = arr.dtype.kind
        if kind == "f":
            return arr.astype(self.float_dtype, copy=False)
        if kind == "b" or arr.dtype == np.uint8:
            return arr
        if kind in "iu":
            return arr.astype(np.int64, copy=False)
        raise ConfigError(f"the {self.name} backend cannot hold arrays of dtype {arr.dtype}")

    def to_numpy(self, a):
        """Backend array -> numpy.ndarray on the host (a copy for cupy, a view for numpy)."""
        return self._asnumpy(a)

    def zeros(self, shape, dtype="float"):
        return self.xp.zeros(shape, dtype=self._dtype(dtype))

    def full(self, shape, value, dtype="float"):
        return self.xp.full(shape, value, dtype=self._dtype(dtype))

    def arange(self, n):
        """int64 index array [0, n)."""
        return self.xp.arange(n, dtype=np.int64)

    # --- element-wise and per-example math -----------------------------------------------------
    def sign(self, a):
        return self.xp.sign(a)

    def abs(self, a):
        return self.xp.abs(a)

    def clip(self, a, lo, hi):
        """min(max(a, lo), hi) element-wise; lo, hi arrays of a's shape or scalars; a's dtype kept."""
        xp = self.xp
        return xp.minimum(xp.maximum(a, lo), hi).astype(a.dtype, copy=False)

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def sum_per_example(self, a):
        """(B, ...) -> (B,)."""
        return a.reshape(a.shape[0], -1).sum(axis=1)

    def argmax(self, a):
        """(B, C) -> (B,) int64."""
        return a.argmax(axis=1).astype(np.int64, copy=False)

    # --- gather / scatter of sub-batches -------------------------------------------------------
    def take(self, a, idx):
        """a[idx], a new array."""
        return a[idx]

    def put(self, a, idx, values):
        """a[idx] = values, in place."""
        a[idx] = values

    def nonzero(self, mask):
        """(B,) bool -> int64 positions of the True entries."""
        return self.xp.nonzero(mask)[0].astype(np.int64, copy=False)

    def count(self, mask):
        return int(self.xp.count_nonzero(mask))

    # --- explicit random generators ------------------------------------------------------------
    def rng(self, seed):
        """xp.random.default_rng(seed): a generator on the backend's device, owned by the caller."""
        return self.xp.random.default_rng(seed)

    def uniform(self, rng, shape, low, high):
        """U(low, high) samples of `shape` in the backend's float dtype."""
        return rng.uniform(low, high, size=shape).astype(self.float_dtype, copy=False)

    def rng_state(self, rng):
        """{"numpy": bit_generator.state}, JSON-able (numpy only: cupy's state is not exposed)."""
        if self.xp is not np:
            raise ConfigError(f"the {self.name} backend cannot save a generator's state "
                              "(mid-epoch checkpoints need the numpy or torch backend)")
        return {"numpy": rng.bit_generator.state}

    def set_rng_state(self, rng, state):
        """Restore a state from rng_state; CheckpointError if it is not one of this generator's."""
        saved = state.get("numpy") if isinstance(state, dict) else None
        if self.xp is not np or not isinstance(saved, dict) \
                or saved.get("bit_generator") != type(rng.bit_generator).__name__:
            raise CheckpointError(f"the saved random generator state does not fit the {self.name} backend")
        try:
            rng.bit_generator.state = saved
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise CheckpointError(f"the saved random generator state is damaged ({type(exc).__name__})") from None

    # --- the model side ------------------------------------------------------------------------

    def all_reduce_sum(self, a):
        """One process: the sum over ranks is the array itself."""
        return a

    def crop_flip(self, x, rng, pad=4):
        """Standard CIFAR augmentation, per example: zero-pad `pad` pixels, crop back to H x W
        at a random offset, flip horizontally with probability 1/2. (B, C, H, W) -> same."""
        xp = self.xp
        n, c, h, w = x.shape
        padded = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        dy = rng.integers(0, 2 * pad + 1, (n, 1))
        dx = rng.integers(0, 2 * pad + 1, (n, 1))
        flip = rng.random((n, 1)) < 0.5
        rows = dy + xp.arange(h)
        cols = dx + xp.arange(w)
        cols = xp.where(flip, cols[:, ::-1], cols)
        batch = xp.arange(n)[:, None, None, None]
        channel = xp.arange(c)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    def loss_and_grad(self, model, x, y, loss="ce"):
        """(per-example losses (B,), d sum_i loss_i / dx shaped like x): row i is d loss_i / d x_i."""
        if loss not in nm.LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; use one of {', '.join(nm.LOSSES)}")
        logits, cache = model.forward(x)
        losses, dlogits = nm.LOSSES[loss](self.xp, logits, y)
        grad_x, _ = model.backward(cache, dlogits, param_grads=False)
        return losses, grad_x

    def logits(self, model, x):
        """(B, ...) -> (B, C). These models have no train/eval difference."""
        return model.forward(x)[0]

    def train_step(self, model, optimizer, x, y, batch_size=None):
        """One SGD step on the batch-mean cross-entropy -> (sum of the B losses, correct count).

        Losses and accuracy are those of the weights before the step (one process: batch_size
        is len(x)).
        """
        logits, cache = model.forward(x)
        losses, dlogits = nm.cross_entropy(self.xp, logits, y)
        _, grads = model.backward(cache, dlogits / (batch_size or x.shape[0]), input_grad=False)
        optimizer.step(grads)
        return float(losses.sum()), self.count(logits.argmax(axis=1) == y)

    def min_train_batch(self, model):
        """softmax and mlp have no batch statistics: one example trains."""
        return 1

    # --- construction and persistence ----------------------------------------------------------
    def make_model(self, name, input_shape, num_classes, seed):
        """"softmax" | "mlp" (see numpy_models), in the backend's float dtype."""
        return nm.make_model(name, input_shape, num_classes, seed, self.xp, self.float_dtype)

    def make_optimizer(self, model, lr, momentum, weight_decay):
        return nm.SGD(model.params, lr, momentum, weight_decay)

    def set_lr(self, optimizer, lr):
        optimizer.lr = lr

    def get_params(self, model):
        """{name: numpy copy}, torch's state_dict names and layouts."""
        return {name: np.array(self.to_numpy(p)) for name, p in model.params.items()}

    def set_params(self, model, params):
        """Copy {name: array} into the model's arrays; CheckpointError on other names or shapes."""
        self._check_match("model parameter", model.params, params)
        for name, value in params.items():
            model.params[name][...] = self.xp.asarray(value)

    def save_checkpoint(self, path, model, optimizer, meta):
        """Atomically write an .npz (no pickle): "model/<name>", "optimizer/<name>", "meta" (JSON).

        The file is written to a temporary name in the same directory, fsynced, then renamed
        (`minidyn.fileio.atomic_write`): a crash leaves the old checkpoint or the new one.
        """
        arrays = {f"model/{k}": v for k, v in self.get_params(model).items()}
        if optimizer is not None:
            arrays |= {f"optimizer/{k}": self.to_numpy(v) for k, v in optimizer.buffers.items()}
        arrays["meta"] = np.array(json.dumps(meta))
        atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")

    def read_meta(self, path):
        """The meta dict of a checkpoint.npz, without a model; CheckpointError if it is not one."""
        return _read_checkpoint(path)[0]

    def load_checkpoint(self, path, model, optimizer=None):
        """Load weights (and momentum buffers) saved by save_checkpoint; return the meta dict.

        Never unpickles. Nothing is changed unless the whole file is valid and matches the model.
        """
        meta, contents = _read_checkpoint(path)
        params = {k[6:]: v for k, v in contents.items() if k.startswith("model/")}
        buffers = {k[10:]: v for k, v in contents.items() if k.startswith("optimizer/")}
        self._check_match(f"{path}: model parameter", model.params, params)
        self._check_match(f"{path}: momentum buffer", model.params, buffers, partial=True)
        self.set_params(model, params)
        if optimizer is not None:
            optimizer.buffers = {k: self.xp.asarray(v, dtype=self.float_dtype) for k, v in buffers.items()}
        return meta

    @staticmethod
    def _check_match(what, expected, given, partial=False):
        """CheckpointError unless `given` has `expected`'s names (a subset if partial) and shapes."""
        missing = [] if partial else sorted(set(expected) - set(given))
        unknown = sorted(set(given) - set(expected))
        if missing or unknown:
            raise CheckpointError(f"{what} names do not match: missing {missing}, unexpected {unknown}")
        for name, value in given.items():
            if value.dtype.kind not in "fiu":
                raise CheckpointError(f"{what} {name!r} has dtype {value.dtype}, not a number")
            if tuple(value.shape) != tuple(expected[name].shape):
                raise CheckpointError(
                    f"{what} {name!r} has shape {tuple(value.shape)}, the model needs "
                    f"{tuple(expected[name].shape)}"
                )


def _read_checkpoint(path) -> tuple[dict, dict]:
    """(meta, the other arrays) of a checkpoint.npz; CheckpointError on any problem."""
    try:
        contents = _read_npz(path)
        meta = json.loads(contents.pop("meta").item())
        if not isinstance(meta, dict):
            raise ValueError("its meta is not a JSON object")
    except Exception as exc:  # a damaged zip raises nearly anything (NotImplementedError, ...)
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is not a valid minidyn checkpoint: {reason}") from None
    return meta, contents


def _read_npz(path) -> dict:
    """{key: numpy array} of an .npz file, refusing pickled objects; ValueError if not an .npz."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError("it is a single .npy array, not an .npz archive")
    with loaded:
        return {key: loaded[key] for key in loaded.files}


def numpy_backend(dtype: str = "float32") -> ArrayBackend:
    """The numpy backend (CPU), computing in `dtype` ("float32" or "float64")."""
    return ArrayBackend(np, "numpy", dtype)


def cupy_backend(dtype: str = "float32", device: int = 0) -> ArrayBackend:
    """The cupy backend on CUDA device `device` (made the current device)."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= device < count:
            raise RuntimeError(f"no CUDA device {device} ({count} found)")
        cupy.cuda.Device(device).use()
    except Exception as exc:  # ImportError, CUDARuntimeError, missing driver libraries, ...
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BackendUnavailable(f"--backend cupy needs CuPy and a CUDA GPU: {reason}") from None
    return ArrayBackend(cupy, "cupy", dtype)
