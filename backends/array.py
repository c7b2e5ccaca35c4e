"""The numpy and cupy backends: one `ArrayBackend` class, with the array module `xp` swapped.

Models are the hand-written ones of `minidyn.backends.numpy_models` (softmax, mlp); cupy is
imported only by `cupy_backend`, so this module works on a machine without it.
"""
from __future__ import annotations

import json

import numpy as np

from minidyn.backend import Backend, check_outer
from minidyn.backends import numpy_models as nm
from minidyn.errors import BackendUnavailable, CheckpointError, ConfigError
from minidyn.files.fileio import atomic_write
from minidyn.files.npyfile import npz_headers, read_npz


LOSS_NAMES = (*nm.LOSSES, *nm.TARGETED_LOSSES, "kl")


class ArrayBackend(Backend):
    """`minidyn.backend.Backend` for an array module `xp` (numpy or cupy) and a float dtype.

    The array side is the base's `xp` defaults; this class adds only what numpy and cupy
    need beyond them (arrays of other frameworks in `asarray`, cupy's copy to the host) and
    the model side of the hand-written models.
    """

    def __init__(self, xp, name: str, dtype: str = "float32"):
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"the {name} backend computes in float32 or float64, not {dtype!r}")
        self.xp, self.name = xp, name
        self.float_dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return f"<{self.name} backend, {self.float_dtype.name}>"

    # --- the array side: what numpy's defaults do not cover -----------------------------------
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
        return super().asarray(a, dtype)

    def to_numpy(self, a):
        """Backend array -> numpy.ndarray on the host (a copy for cupy, a view for numpy)."""
        return self.xp.asnumpy(a) if self.xp is not np else np.asarray(a)

    # --- the model side: numpy_models' forward and backward passes ----------------------------
    def loss_and_grad(self, model, x, y, loss="ce", target=None, return_logits=False):
        """(per-example losses (B,), d sum_i loss_i / dx shaped like x): row i is d loss_i / d x_i;
        with return_logits also the logits (B, C) of the same forward pass, as a third item.

        target: (B,) target classes for "dlr-targeted" and "margin-targeted", the (B, C) clean
        logits (a constant) for "kl"; unused by the other losses.
        """
        xp = self.xp
        if loss not in nm.LOSSES and loss not in nm.TARGETED_LOSSES and loss != "kl":
            raise ConfigError(f"unknown loss {loss!r}; use one of {', '.join(LOSS_NAMES)}")
        if target is None and loss not in nm.LOSSES:
            raise ConfigError(f"loss {loss!r} needs a target (" + (
                "the clean logits)" if loss == "kl" else "the target classes)"))
        logits, cache = model.forward(x)
        if loss == "kl":
            target = self.astype(xp.asarray(target), logits.dtype)
            if tuple(target.shape) != tuple(logits.shape):
                raise ConfigError(f"loss 'kl' needs the clean logits shaped {tuple(logits.shape)}, "
                                  f"got {tuple(target.shape)}")
            losses, dlogits = nm.kl(xp, logits, target)
        elif loss in nm.TARGETED_LOSSES:
            losses, dlogits = nm.TARGETED_LOSSES[loss](xp, logits, y, target)
        else:
            losses, dlogits = nm.LOSSES[loss](xp, logits, y)
        grad_x, _ = model.backward(cache, dlogits, param_grads=False)
        return (losses, grad_x, logits) if return_logits else (losses, grad_x)

    def logits(self, model, x):
        """(B, ...) -> (B, C). These models have no train/eval difference."""
        return model.forward(x)[0]

    def train_step(self, model, optimizer, x, y, batch_size=None, weights=None, outer="ce",
                   x_natural=None, beta=6.0):
        """One SGD step -> (sum of the B unweighted losses, count of z(x) argmax == y), both of
        the weights before the step.

        outer "ce": l_i = CE(z(x_i), y_i). "trades" / "mart": l_i of numpy_models.trades_outer /
        mart_outer at the natural x_natural (forward first) and the adversarial x, with the
        hand-written gradients w.r.t. both logits back-propagated through each forward's cache
        and the parameter gradients summed. weights None: the loss is the batch mean of l_i
        (one process: batch_size is len(x)), so the logit gradients are divided by the batch
        size. weights (B,) given: the loss is sum_i w_i l_i, and d(sum_i w_i l_i)/dz_i =
        w_i dl_i/dz_i scales the rows of the logit gradients instead.
        """
        check_outer(outer, x, x_natural, beta)
        if outer != "ce":
            return self._two_forward_step(model, optimizer, x, y, batch_size, weights, outer,
                                          x_natural, beta)
        logits, cache = model.forward(x)
        losses, dlogits = nm.cross_entropy(self.xp, logits, y)
        if weights is None:
            dlogits = dlogits / (batch_size or x.shape[0])
        else:
            dlogits = dlogits * self.astype(self.xp.asarray(weights), dlogits.dtype)[:, None]
        _, grads = model.backward(cache, dlogits, input_grad=False)
        optimizer.step(grads)
        return float(losses.sum()), self.count(logits.argmax(axis=1) == y)

    def _two_forward_step(self, model, optimizer, x, y, batch_size, weights, outer, x_natural, beta):
        """train_step for the outer losses of a natural and an adversarial forward pass."""
        z_nat, cache_nat = model.forward(x_natural)
        logits, cache = model.forward(x)
        losses, d_nat, d_adv = nm.OUTER[outer](self.xp, z_nat, logits, y, float(beta))
        if weights is None:
            d_nat, d_adv = d_nat / (batch_size or x.shape[0]), d_adv / (batch_size or x.shape[0])
        else:
            w = self.astype(self.xp.asarray(weights), d_adv.dtype)[:, None]
            d_nat, d_adv = d_nat * w, d_adv * w
        _, grads = model.backward(cache, d_adv, input_grad=False)
        _, grads_nat = model.backward(cache_nat, d_nat, input_grad=False)
        optimizer.step({name: g + grads_nat[name] for name, g in grads.items()})
        return float(losses.sum()), self.count(logits.argmax(axis=1) == y)

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
        (`minidyn.files.fileio.atomic_write`): a crash leaves the old checkpoint or the new one.
        """
        arrays = {f"model/{k}": v for k, v in self.get_params(model).items()}
        if optimizer is not None:
            arrays |= {f"optimizer/{k}": self.to_numpy(v) for k, v in optimizer.buffers.items()}
        arrays["meta"] = np.array(json.dumps(meta))
        atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")

    def read_meta(self, path):
        """The meta dict of a checkpoint.npz, without a model; CheckpointError if it is not one.

        Only the meta member's data is read; every other member's header must be a float array."""
        headers = _checkpoint_headers(path)
        for key, header in headers.items():
            if key != "meta" and header.dtype.kind != "f":
                raise CheckpointError(f"{path}: {key!r} has dtype {header.dtype}, not a float")
        return _read_meta(path, headers)

    def load_checkpoint(self, path, model, optimizer=None):
        """Load weights (and momentum buffers) saved by save_checkpoint; return the meta dict.

        Never unpickles. Every member's header is checked against the model (names, float
        dtypes, shapes) before any data is read, and every value must be finite: nothing is
        changed unless the whole file is valid and matches the model.
        """
        headers = _checkpoint_headers(path)
        params = {k[6:]: h for k, h in headers.items() if k.startswith("model/")}
        buffers = {k[10:]: h for k, h in headers.items() if k.startswith("optimizer/")}
        self._check_match(f"{path}: model parameter", model.params, params, kinds="f")
        self._check_match(f"{path}: momentum buffer", model.params, buffers, partial=True, kinds="f")
        meta = _read_meta(path, headers)
        weights = read_npz(path, headers, [f"model/{k}" for k in params] + [f"optimizer/{k}" for k in buffers],
                           error=CheckpointError, what=_WHAT)
        for key, value in weights.items():
            if not np.isfinite(value).all():
                raise CheckpointError(f"{path}: {key!r} holds NaN or infinite values")
        self.set_params(model, {k: weights[f"model/{k}"] for k in params})
        if optimizer is not None:
            optimizer.buffers = {k: self.xp.asarray(weights[f"optimizer/{k}"], dtype=self.float_dtype)
                                 for k in buffers}
        return meta

    @staticmethod
    def _check_match(what, expected, given, partial=False, kinds="fiu"):
        """CheckpointError unless `given` has `expected`'s names (a subset if partial) and shapes,
        and dtypes of `kinds` (anything with .dtype and .shape: arrays or .npy headers)."""
        missing = [] if partial else sorted(set(expected) - set(given))
        unknown = sorted(set(given) - set(expected))
        if missing or unknown:
            raise CheckpointError(f"{what} names do not match: missing {missing}, unexpected {unknown}")
        for name, value in given.items():
            if value.dtype.kind not in kinds:
                raise CheckpointError(f"{what} {name!r} has dtype {value.dtype}, not a "
                                      f"{'float' if kinds == 'f' else 'number'}")
            if tuple(value.shape) != tuple(expected[name].shape):
                raise CheckpointError(
                    f"{what} {name!r} has shape {tuple(value.shape)}, the model needs "
                    f"{tuple(expected[name].shape)}"
                )


# a checkpoint's meta is one JSON string (a mid-epoch state holds every example's FOSC and steps)
_META_MAX_BYTES = 256 << 20
_WHAT = "minidyn checkpoint"


def _checkpoint_headers(path) -> dict:
    """The checked member headers of a checkpoint.npz (`minidyn.files.npyfile`); no data is read.
    CheckpointError unless every member is a plain .npy array and "meta" is one string."""
    headers = npz_headers(path, error=CheckpointError, what=_WHAT)
    meta = headers.get("meta")
    if meta is None or meta.dtype.kind != "U" or meta.shape != ():
        raise CheckpointError(f"{path} is not a valid minidyn checkpoint: no meta string")
    if meta.nbytes > _META_MAX_BYTES:
        raise CheckpointError(f"{path}: its meta declares {meta.nbytes} bytes, more than the "
                              f"{_META_MAX_BYTES} allowed")
    return headers


def _read_meta(path, headers) -> dict:
    """The JSON object in a checkpoint's meta member; CheckpointError if it is not one."""
    text = read_npz(path, headers, ["meta"], error=CheckpointError, what=_WHAT)["meta"].item()
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is not a valid minidyn checkpoint: {reason}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a valid minidyn checkpoint: its meta is not a JSON object")
    return meta


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
