"""The backend protocol: everything algorithm code may call besides arithmetic.

Algorithm modules (`fosc`, `projection`, `attacks`, `train`) never import torch or cupy. They
receive arrays that support `+ - * /`, comparisons and boolean indexing, and do everything else
through a `Backend`. A backend is found by name (`get_backend("torch")`) or by the type of an
array it owns (`backend_for(x)`); both import the framework lazily.

Shapes: a batch `x` is (B, ...) with B examples; per-example results are (B,); labels are (B,)
integers; index arrays (from `nonzero`, `arange`) are 1-D integer arrays on the backend's device.
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from minidyn.errors import BackendUnavailable, ConfigError

Array = Any  # numpy.ndarray, cupy.ndarray or torch.Tensor, depending on the backend
Model = Any  # whatever the backend's make_model returns (an nn.Module for torch)


@runtime_checkable
class Backend(Protocol):
    """The operations the algorithms need. See `docs/backends.md` for how to add one."""

    name: str
    rank: int        # this process's rank under torchrun (0 otherwise)
    world_size: int  # number of training processes (1 without torchrun)

    # --- arrays: creation and transfer -----------------------------------------------------
    def asarray(self, a: Any, dtype: str | None = None) -> Array:
        """Host or device data -> backend array. Floats become the backend's float dtype."""

    def to_numpy(self, a: Array) -> Any:
        """Backend array -> numpy.ndarray on the host (a copy where the data lives elsewhere)."""

    def zeros(self, shape: tuple[int, ...], dtype: str = "float") -> Array: ...

    def full(self, shape: tuple[int, ...], value: float, dtype: str = "float") -> Array: ...

    def arange(self, n: int) -> Array:
        """Integer index array [0, n)."""

    # --- element-wise and per-example math ---------------------------------------------------
    def sign(self, a: Array) -> Array: ...

    def abs(self, a: Array) -> Array: ...

    def clip(self, a: Array, lo: Array | float, hi: Array | float) -> Array:
        """Element-wise min(max(a, lo), hi); lo and hi are arrays of a's shape or scalars."""

    def where(self, cond: Array, a: Array, b: Array) -> Array: ...

    def sum_per_example(self, a: Array) -> Array:
        """(B, ...) -> (B,): the sum over every axis but the first."""

    def argmax(self, a: Array) -> Array:
        """(B, C) -> (B,) integer index of the largest entry of each row."""

    # --- gather / scatter of sub-batches -----------------------------------------------------
    def take(self, a: Array, idx: Array) -> Array:
        """Rows `idx` of `a` (a new array)."""

    def put(self, a: Array, idx: Array, values: Array) -> None:
        """In place: a[idx] = values."""

    def nonzero(self, mask: Array) -> Array:
        """(B,) bool -> 1-D integer array of the positions that are True."""

    def count(self, mask: Array) -> int:
        """Number of True entries, as a Python int (a host synchronisation on a GPU)."""

    def all_reduce_sum(self, a: Any) -> Any:
        """A host numpy array summed element-wise over the ranks (itself with one process)."""

    # --- explicit random generators ----------------------------------------------------------
    def rng(self, seed: int) -> Any:
        """A generator owned by the caller; no global random state is used anywhere."""

    def uniform(self, rng: Any, shape: tuple[int, ...], low: float, high: float) -> Array: ...

    def rng_state(self, rng: Any) -> dict:
        """The generator's current state as a JSON-able dict (saved by mid-epoch checkpoints).

        ConfigError where the framework does not expose it (cupy)."""

    def set_rng_state(self, rng: Any, state: dict) -> None:
        """Put `rng` back in a state returned by rng_state; CheckpointError if it does not fit."""

    def crop_flip(self, x: Array, rng: Any, pad: int = 4) -> Array:
        """Per-example random crop of the zero-padded image and random horizontal flip (CIFAR)."""

    # --- the model side ----------------------------------------------------------------------
    def loss_and_grad(self, model: Model, x: Array, y: Array, loss: str = "ce") -> tuple[Array, Array]:
        """Per-example losses (B,) and grad_x of each example's own loss, shaped like x.

        The gradient is of the *sum* of the per-example losses, so row i is exactly
        d loss_i / d x_i (never divided by B). `loss` is "ce" (cross-entropy), "cw"
        (the margin max_{j != y} z_j - z_y) or "dlr" (Croce & Hein's Difference of Logits
        Ratio -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), for APGD-DLR; needs >= 3
        classes). No parameter gradient is left behind.
        """

    def logits(self, model: Model, x: Array) -> Array:
        """(B, ...) -> (B, C), in inference mode."""

    def train_step(self, model: Model, optimizer: Any, x: Array, y: Array,
                   batch_size: int | None = None) -> tuple[float, int]:
        """One SGD step on the mean cross-entropy over the global batch of `batch_size` examples,
        of which x is this rank's share under torchrun (default: x's own mean, which is right
        when every rank has len(x)); returns (sum of this rank's losses, its correct count)."""

    def min_train_batch(self, model: Model) -> int:
        """The fewest examples one process can train on (2 where BatchNorm needs batch statistics)."""

    # --- construction and persistence --------------------------------------------------------
    def make_model(self, name: str, input_shape: tuple[int, ...], num_classes: int, seed: int) -> Model: ...

    def make_optimizer(self, model: Model, lr: float, momentum: float, weight_decay: float) -> Any: ...

    def set_lr(self, optimizer: Any, lr: float) -> None: ...

    def get_params(self, model: Model) -> dict:
        """Model weights as {name: numpy.ndarray}, torch's state_dict names and layouts."""

    def set_params(self, model: Model, params: dict) -> None:
        """Load {name: numpy.ndarray} (as returned by get_params) into the model."""

    def save_checkpoint(self, path: str, model: Model, optimizer: Any, meta: dict) -> None: ...

    def load_checkpoint(self, path: str, model: Model, optimizer: Any | None = None) -> dict:
        """Load weights (and optimizer state) into the given objects; return the saved meta."""

    def read_meta(self, path: str) -> dict:
        """The meta dict save_checkpoint wrote, without a model; CheckpointError if the file is
        not such a checkpoint."""


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
