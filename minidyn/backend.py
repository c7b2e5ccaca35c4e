"""The backend protocol, read in two parts: what the algorithm may call, what the run needs.

Algorithm modules (`fosc`, `projection`, `active`, `attacks`, `apgd`, `train`) never import
torch or cupy. They receive arrays that support `+ - * /`, comparisons and indexing, and do
everything else through a backend. A backend is found by name (`get_backend("torch")`) or by
the type of an array it owns (`backend_for(x)`); both import the framework lazily.

A backend is a subclass of `Backend`, which joins two parts (einops' `_backends.py` and
scikit-learn's array-API `xp` namespace are the models):

- `AlgorithmOps`, everything the algorithm modules may call besides arithmetic:
  - `ArrayOps`, the arrays: creation and transfer, per-example math, sub-batches, a generator
    and its uniform and normal draws (PGD's random starts), each written once against a
    numpy-like namespace `self.xp`. A backend whose arrays behave like numpy's (numpy, cupy) sets `xp`
    and `float_dtype` and is done; torch overrides the few operations whose names or
    arguments differ.
  - `ModelOps`, the model as the algorithm sees it: per-example losses and input gradients,
    logits, one training step. A model is the framework's own business, so these three have
    no defaults: they are what every backend writes.
- `RunOps`, what the run machinery (`minidyn.runs`, evaluation, studies, the CLI) needs:
  more generator draws and the generator's state (mid-epoch checkpoints), the CIFAR
  augmentation, the model's construction, learning rate, parameters and checkpoint files,
  `min_train_batch`, and `ProcessOps` (rank, world size, the sum over ranks). The draws, the
  state, the augmentation and the processes have defaults (numpy's, one process); a backend
  writes the construction and checkpoint methods to train with `minidyn train`.

Random generators are owned by the caller: a generator lives on the device of the arrays it
draws (a torch CUDA generator, cupy's generator on its GPU), its draws are the backend's
arrays, and its state is in the framework's own format. The defaults are numpy's `Generator`
API, which cupy shares.

Shapes: a batch `x` is (B, ...) with B examples; per-example results are (B,); labels are (B,)
integers; index arrays (from `nonzero`, `arange`) are 1-D integer arrays on the backend's device.
See docs/backends.md for a complete minimal backend.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np

from minidyn.errors import BackendUnavailable, CheckpointError, ConfigError

Array = Any  # numpy.ndarray, cupy.ndarray or torch.Tensor, depending on the backend
Model = Any  # whatever the backend's make_model returns (an nn.Module for torch)


class ArrayOps:
    """The array operations the algorithm calls, with defaults written against `self.xp`.

    A subclass sets `name`, `xp` (numpy unless set: a namespace with numpy's zeros, full,
    arange, sign, abs, maximum, minimum, where, argmax, nonzero, count_nonzero, flip, pad and
    random.default_rng) and `float_dtype` (the `xp` dtype floats are computed in, float32
    unless set), then overrides the operations its framework spells differently.
    """

    name: str = "array"
    xp: Any = np
    float_dtype: Any = np.dtype("float32")
    device_kwargs: dict = {}  # passed to xp's creation functions, e.g. {"device": ...} for torch

    def __repr__(self) -> str:
        return f"<{self.name} backend>"

    @functools.cached_property
    def dtypes(self) -> dict[str, Any]:
        """The protocol's dtype names ("float", "int", "bool", "uint8") -> this backend's dtypes."""
        xp = self.xp
        return {"float": self.float_dtype, "int": xp.int64, "bool": xp.bool_, "uint8": xp.uint8}

    def _dtype(self, dtype: str) -> Any:
        if dtype not in self.dtypes:
            raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(self.dtypes)}")
        return self.dtypes[dtype]

    @staticmethod
    def _shape(shape: Any) -> tuple[int, ...]:
        """An int or a sequence of ints (numpy integers too) -> a tuple of Python ints."""
        return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)

    def astype(self, a: Array, dtype: Any) -> Array:
        """`a` in `dtype` (an `xp` dtype), `a` itself when it already has it."""
        return a.astype(dtype, copy=False)

    # --- creation and transfer ---------------------------------------------------------------
    def asarray(self, a: Any, dtype: str | None = None) -> Array:
        """Host data (numpy arrays, lists) -> backend array, `a` itself when nothing changes.

        dtype None keeps the kind: floats -> the backend's float dtype, bool and uint8 stay,
        other integers -> int64. Otherwise "float" | "int" | "bool" | "uint8" casts.
        """
        if not hasattr(a, "dtype"):  # lists and scalars: read as numpy reads them
            a = np.asarray(a)
        if a.dtype.kind not in "fiub":  # before xp.asarray: CuPy raises its own ValueError on text
            raise ConfigError(f"the {self.name} backend cannot hold arrays of dtype {a.dtype}")
        arr = self.xp.asarray(a)
        if dtype is not None:
            return self.astype(arr, self._dtype(dtype))
        kind = arr.dtype.kind
        if kind == "f":
            return self.astype(arr, self._dtype("float"))
        if kind == "b" or arr.dtype == np.uint8:
            return arr
        return self.astype(arr, self._dtype("int"))

    def to_numpy(self, a: Array) -> np.ndarray:
        """Backend array -> numpy.ndarray on the host (a copy where the data lives elsewhere)."""
        return np.asarray(a)

    def zeros(self, shape: tuple[int, ...] | int, dtype: str = "float") -> Array:
        return self.xp.zeros(self._shape(shape), dtype=self._dtype(dtype), **self.device_kwargs)

    def full(self, shape: tuple[int, ...] | int, value: float, dtype: str = "float") -> Array:
        return self.xp.full(self._shape(shape), value, dtype=self._dtype(dtype), **self.device_kwargs)

    def arange(self, n: int) -> Array:
        """Integer (int64) index array [0, n)."""
        return self.xp.arange(int(n), dtype=self._dtype("int"), **self.device_kwargs)

    # --- element-wise and per-example math -----------------------------------------------------
    def sign(self, a: Array) -> Array:
        return self.xp.sign(a)

    def abs(self, a: Array) -> Array:
        return self.xp.abs(a)

    def clip(self, a: Array, lo: Array | float, hi: Array | float) -> Array:
        """Element-wise min(max(a, lo), hi) in a's dtype; lo and hi are arrays of a's shape or scalars."""
        xp = self.xp
        return self.astype(xp.minimum(xp.maximum(a, lo), hi), a.dtype)

    def where(self, cond: Array, a: Array, b: Array) -> Array:
        return self.xp.where(cond, a, b)

    def sum_per_example(self, a: Array) -> Array:
        """(B, ...) -> (B,): the sum over every axis but the first."""
        return a.reshape(a.shape[0], -1).sum(axis=1)

    def argmax(self, a: Array) -> Array:
        """(B, C) -> (B,) int64 index of the largest entry of each row."""
        return self.astype(self.xp.argmax(a, axis=1), self._dtype("int"))

    # --- gather / scatter of sub-batches -------------------------------------------------------
    def take(self, a: Array, idx: Array) -> Array:
        """Rows `idx` of `a` (a new array)."""
        return a[idx]

    def put(self, a: Array, idx: Array, values: Array) -> None:
        """In place: a[idx] = values."""
        a[idx] = values

    def nonzero(self, mask: Array) -> Array:
        """(B,) bool -> 1-D int64 array of the positions that are True."""
        return self.astype(self.xp.nonzero(mask)[0], self._dtype("int"))

    def count(self, mask: Array) -> int:
        """Number of True entries, as a Python int (a host synchronisation on a GPU)."""
        return int(self.xp.count_nonzero(mask))

    # --- random generators: explicit, owned by the caller; no global random state --------------
    def rng(self, seed: int) -> Any:
        """A generator on the backend's device, seeded with `seed`."""
        return self.xp.random.default_rng(seed)

    def uniform(self, rng: Any, shape: tuple[int, ...], low: float, high: float) -> Array:
        """U(low, high) samples of `shape` in the backend's float dtype."""
        return self.astype(rng.uniform(low, high, size=shape), self._dtype("float"))

    def normal(self, rng: Any, shape: tuple[int, ...], std: float) -> Array:
        """N(0, std^2) samples of `shape` in the backend's float dtype (TRADES' and MART's
        0.001 N(0, 1) start): std * rng.standard_normal(shape), the numbers of numpy's
        rng.normal(0, std, shape) (cupy's Generator has standard_normal but no normal)."""
        return self.astype(float(std) * rng.standard_normal(size=self._shape(shape)), self._dtype("float"))


def _missing(backend: Any, method: str) -> NotImplementedError:
    return NotImplementedError(f"the {backend.name} backend does not implement {method} "
                               "(docs/backends.md lists what a backend writes)")


OUTER_LOSSES = ("ce", "trades", "mart")  # train_step's outer objectives


def check_outer(outer: str, x: Array, x_natural: Array | None, beta: float = 6.0) -> None:
    """ConfigError (one line) unless `outer` is one of OUTER_LOSSES, "trades" and "mart" have
    an x_natural shaped like x, and beta is a finite number >= 0."""
    if outer not in OUTER_LOSSES:
        raise ConfigError(f"unknown outer loss {outer!r}; use one of {', '.join(OUTER_LOSSES)}")
    if outer == "ce":
        return
    if x_natural is None:
        raise ConfigError(f"outer loss {outer!r} needs x_natural, the clean batch")
    if tuple(x_natural.shape) != tuple(x.shape):
        raise ConfigError(f"outer loss {outer!r}: x_natural is shaped {tuple(x_natural.shape)}, "
                          f"x {tuple(x.shape)}; they must match")
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not np.isfinite(beta) or beta < 0:
        raise ConfigError(f"outer loss {outer!r} needs a finite beta >= 0, got {beta!r}")


class ModelOps:
    """The model as the algorithm sees it: what every backend writes for its framework's models."""

    def loss_and_grad(self, model: Model, x: Array, y: Array, loss: str = "ce",
                      target: Array | None = None, return_logits: bool = False) -> tuple[Array, ...]:
        """Per-example losses (B,) and grad_x of each example's own loss, shaped like x.

        The gradient is of the *sum* of the per-example losses, so row i is exactly
        d loss_i / d x_i (never divided by B). `loss` is "ce" (cross-entropy), "cw"
        (the margin max_{j != y} z_j - z_y) or "dlr" (Croce & Hein's Difference of Logits
        Ratio -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), for APGD-DLR; needs >= 3
        classes), which take no target. "dlr-targeted" (APGD-T's -(z_y - z_t) / (z_pi1 -
        (z_pi3 + z_pi4) / 2 + 1e-12), needs >= 4 classes) and "margin-targeted" (FAB-T's
        z_t - z_y) take the (B,) target classes t in `target`; "kl" (TRADES' inner loss
        sum_j p_j (log p_j - log q_j), p = softmax(target), q = softmax(z(x)), gradient q - p
        w.r.t. z) takes the (B, C) clean logits, a constant. return_logits=True returns
        (losses, grad, logits), the (B, C) logits of the same forward pass. The targeted
        losses, "kl" and return_logits serve APGD-T, FAB-T, TRADES, FAT and GAIRAT only, so a
        backend without them may leave them out. No parameter gradient is left behind.
        """
        raise _missing(self, "loss_and_grad")

    def logits(self, model: Model, x: Array) -> Array:
        """(B, ...) -> (B, C), in inference mode."""
        raise _missing(self, "logits")

    def train_step(self, model: Model, optimizer: Any, x: Array, y: Array,
                   batch_size: int | None = None, weights: Array | None = None, outer: str = "ce",
                   x_natural: Array | None = None, beta: float = 6.0) -> tuple[float, int]:
        """One SGD step; returns (sum of this rank's unweighted losses l_i, its count of
        examples whose z(x) argmax is y), both of the weights before the step.

        outer (OUTER_LOSSES) picks l_i: "ce" CE(z(x_i), y_i); "trades" CE(z(xn_i), y_i) +
        beta KL(p(xn_i) || p(x_i)) (yaodongyu/TRADES `trades_loss`); "mart" CE(z(x_i), y_i) -
        log(1.0001 - q_i[t_i] + 1e-12) + beta sum_j p_j (log p_j - log(q_j + 1e-12))
        (1.0000001 - p_{y_i}), q = softmax(z(x_i)), p = softmax(z(xn_i)), t_i the most probable
        class of q other than y_i (YisenWang/MART `mart_loss`). For those two, x_natural (xn,
        shaped like x) is the clean batch, run forward first in training mode, and the gradient
        flows through both forwards; `check_outer` gives the ConfigErrors.

        weights None: the loss is the mean of l_i over the global batch of `batch_size`
        examples, of which x is this rank's share under torchrun (default: x's own mean, which
        is right when every rank has len(x)). weights (B,) given: the loss is sum_i w_i l_i,
        the weights constants (no gradient flows through them) and already normalised (the
        caller divides them as it wants the loss scaled; batch_size is then unused); under
        torchrun the step is on the sum over every rank's examples. A backend may leave the
        weighted case out (only `--loss-weights ce` and GAIRAT use it), and `outer` (callers
        pass it only for TRADES and MART).
        """
        raise _missing(self, "train_step")


class AlgorithmOps(ArrayOps, ModelOps):
    """Everything the algorithm modules may call besides arithmetic: the arrays (`ArrayOps`:
    asarray, to_numpy, astype, zeros, full, arange, sign, abs, clip, where, sum_per_example,
    argmax, take, put, nonzero, count, rng, uniform, normal) and the model (`ModelOps`: loss_and_grad,
    logits, train_step)."""


class ProcessOps:
    """The process side, for data-parallel training: one process unless a backend says more."""

    rank: int = 0        # this process's rank under torchrun
    world_size: int = 1  # number of training processes

    def all_reduce_sum(self, a: np.ndarray) -> np.ndarray:
        """A host numpy array summed element-wise over the ranks: itself with one process."""
        return a


class RunOps(ProcessOps):
    """What the run machinery needs besides the algorithm's part; mixed with `AlgorithmOps` in
    `Backend`, so its defaults use the array operations (`self.xp`, `arange`, `where`).

    Defaults: the generator draws and state (numpy's `Generator` API), the CIFAR augmentation,
    `min_train_batch` and the processes (one). No defaults: the model's construction,
    learning rate, parameters and checkpoint files, which `minidyn train` needs.
    """

    # --- more generator draws (the augmentation's) and the state mid-epoch checkpoints save ---
    def integers(self, rng: Any, high: int, shape: tuple[int, ...]) -> Array:
        """Integers drawn uniformly from [0, high), of `shape`."""
        return rng.integers(0, high, shape)

    def random(self, rng: Any, shape: tuple[int, ...]) -> Array:
        """U[0, 1) samples of `shape` (the generator's own float dtype)."""
        return rng.random(shape)

    def rng_state(self, rng: Any) -> dict:
        """{"numpy": bit_generator.state}, JSON-able, saved by mid-epoch checkpoints.

        ConfigError for a generator that does not expose its state (cupy's)."""
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(f"the {self.name} backend cannot save a generator's state "
                              "(mid-epoch checkpoints need the numpy or torch backend)")
        return {"numpy": rng.bit_generator.state}

    def set_rng_state(self, rng: Any, state: dict) -> None:
        """Put `rng` back in a state returned by rng_state; CheckpointError if it does not fit."""
        saved = state.get("numpy") if isinstance(state, dict) else None
        if not isinstance(rng, np.random.Generator) or not isinstance(saved, dict) \
                or saved.get("bit_generator") != type(rng.bit_generator).__name__:
            raise CheckpointError(f"the saved random generator state does not fit the {self.name} backend")
        try:
            rng.bit_generator.state = saved
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise CheckpointError(f"the saved random generator state is damaged ({type(exc).__name__})") from None

    # --- the CIFAR augmentation, from the array operations and these two -----------------------
    def zero_pad(self, x: Array, pad: int) -> Array:
        """(B, C, H, W) -> (B, C, H + 2 pad, W + 2 pad), zeros around each image."""
        return self.xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))

    def reverse_last(self, a: Array) -> Array:
        """`a` with its last axis reversed."""
        return self.xp.flip(a, (-1,))

    def crop_flip(self, x: Array, rng: Any, pad: int = 4) -> Array:
        """Standard CIFAR augmentation, per example: zero-pad `pad` pixels, crop back to H x W
        at a random offset, flip horizontally with probability 1/2. (B, C, H, W) -> same.

        Draws, in this order: the row offsets (B, 1), the column offsets (B, 1), then (B, 1)
        U[0, 1) numbers of which those < 1/2 flip; then one gather from the padded batch.
        """
        n, c, h, w = x.shape
        padded = self.zero_pad(x, pad)
        dy = self.integers(rng, 2 * pad + 1, (n, 1))
        dx = self.integers(rng, 2 * pad + 1, (n, 1))
        flip = self.random(rng, (n, 1)) < 0.5
        rows = dy + self.arange(h)  # (B, H): the padded rows each output row reads
        cols = dx + self.arange(w)  # (B, W)
        cols = self.where(flip, self.reverse_last(cols), cols)
        batch = self.arange(n)[:, None, None, None]
        channel = self.arange(c)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    # --- the model's life: construction, learning rate, training-batch floor ------------------
    def make_model(self, name: str, input_shape: tuple[int, ...], num_classes: int, seed: int) -> Model:
        """The model called `name`, initialised from `seed` alone."""
        raise _missing(self, "make_model")

    def make_optimizer(self, model: Model, lr: float, momentum: float, weight_decay: float) -> Any:
        """SGD with momentum and weight decay, torch.optim.SGD's semantics."""
        raise _missing(self, "make_optimizer")

    def set_lr(self, optimizer: Any, lr: float) -> None:
        raise _missing(self, "set_lr")

    def min_train_batch(self, model: Model) -> int:
        """The fewest examples one process can train on: 1, unless the model needs batch
        statistics (2 for BatchNorm)."""
        return 1

    # --- parameters and checkpoint files ------------------------------------------------------
    def get_params(self, model: Model) -> dict:
        """Model weights as {name: numpy.ndarray}, torch's state_dict names and layouts."""
        raise _missing(self, "get_params")

    def set_params(self, model: Model, params: dict) -> None:
        """Load {name: numpy.ndarray} (as returned by get_params) into the model."""
        raise _missing(self, "set_params")

    def save_checkpoint(self, path: str, model: Model, optimizer: Any, meta: dict) -> None:
        """Write weights, optimizer state and the JSON-able `meta` to `path`, atomically."""
        raise _missing(self, "save_checkpoint")

    def load_checkpoint(self, path: str, model: Model, optimizer: Any | None = None) -> dict:
        """Load weights (and optimizer state) into the given objects; return the saved meta."""
        raise _missing(self, "load_checkpoint")

    def read_meta(self, path: str) -> dict:
        """The meta dict save_checkpoint wrote, without a model; CheckpointError if the file is
        not such a checkpoint."""
        raise _missing(self, "read_meta")


class Backend(AlgorithmOps, RunOps):
    """A backend: what the algorithm calls (`AlgorithmOps`) and what the run machinery needs
    (`RunOps`); subclass it to add one (docs/backends.md)."""


def parse_device(device: Any) -> tuple[str, int | None]:
    """A device string -> (kind, index): "auto", "cpu", "cuda" -> (that, None); "cuda:N" ->
    ("cuda", N). Case and surrounding spaces are ignored; anything else is a ConfigError.
    The one parser of device strings (the torch backend, the config check, evaluation)."""
    kind, colon, index = str(device).strip().lower().partition(":")
    if kind in ("auto", "cpu", "cuda") and not colon:
        return kind, None
    if kind == "cuda" and index.isascii() and index.isdigit():
        return kind, int(index)
    raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


# name -> "module:factory"; the module is imported only when the backend is asked for.
_REGISTRY = {
    "numpy": "minidyn.backends.array:numpy_backend",
    "cupy": "minidyn.backends.array:cupy_backend",
    "torch": "minidyn.backends.torch_backend:torch_backend",
}
_ARRAY_MODULES = {"numpy": "numpy", "cupy": "cupy", "torch": "torch"}
_CACHE: dict[tuple, Backend] = {}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str, **options: Any) -> Backend:
    """The backend called `name` ("numpy", "cupy" or "torch"), built with `options`.

    Raises ConfigError for an unknown name and BackendUnavailable when its framework or device
    is missing. Instances are cached by (name, options), so `backend_for` and the CLI share one.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}")
    key = (name, tuple(sorted(options.items())))
    if key in _CACHE:
        return _CACHE[key]
    module_name, factory = _REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # torch or cupy not installed
        extra = "torch" if name == "torch" else "cupy"
        raise BackendUnavailable(
            f"the {name} backend needs {exc.name or name}: pip install 'minidyn[{extra}]'"
        ) from None
    backend = _CACHE[key] = getattr(module, factory)(**options)
    return backend


def backend_for(a: Any) -> Backend:
    """The default backend that owns array `a` (numpy, cupy or torch), by the array's type.

    For torch tensors the backend works on the tensor's own device.
    """
    root = type(a).__module__.split(".")[0]
    if root not in _ARRAY_MODULES:
        raise ConfigError(f"no backend handles arrays of type {type(a).__name__}")
    if root == "torch":
        return get_backend("torch", device=str(a.device))
    return get_backend(root)
