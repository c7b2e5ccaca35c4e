"""The torch backend's checkpoint files: the format, and the checks that make loading one safe.

A checkpoint.pt is {"format": FORMAT, "model": state_dict, "optimizer": state_dict or None,
"meta": JSON-able dict with "arch"}, written atomically with torch.save and always read with
`torch.load(weights_only=True)`: a checkpoint cannot run code when loaded. A hostile or damaged
file is refused with a one-line CheckpointError before anything changes: a compressed zip entry
(a decompression bomb) before torch inflates it, tensors memory-mapped (zip format) so that one
declared larger than the file is refused rather than allocated, every weight and momentum
buffer checked for its name, shape, kind (float or integer) and finiteness.
`load_model(path)` rebuilds a model from a checkpoint alone, for use outside minidyn.
"""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from typing import Any

import numpy as np
import torch
from torch import nn

from minidyn.backends.torch_devices import resolve_device
from minidyn.backends.torch_models import build_model
from minidyn.errors import CheckpointError, ConfigError
from minidyn.files.fileio import atomic_write

FORMAT = "minidyn-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: Any, meta: dict) -> None:
    """Write {format, model, optimizer, meta} atomically (`minidyn.files.fileio.atomic_write`)."""
    # JSON-able (tuples become lists, numpy scalars and arrays plain numbers and lists);
    # anything else fails loudly here rather than at load time
    meta = json.loads(json.dumps(dict(meta or {}), default=_json_default))
    arch = _arch_of(model)
    if arch is not None:
        meta["arch"] = arch
    else:
        meta.setdefault("arch", {})
    payload = {
        "format": FORMAT,
        "model": _cpu(model.state_dict()),
        "optimizer": None if optimizer is None else _cpu(optimizer.state_dict()),
        "meta": meta,
    }
    target = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    atomic_write(target, lambda f: torch.save(payload, f), mode="wb")


def read_meta(path: str | os.PathLike) -> dict:
    """The meta dict of a checkpoint.pt, without a model; CheckpointError if it is not one."""
    return dict(_read(path, "cpu")["meta"])


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: Any, device: Any) -> dict:
    """Load the weights (and the optimizer state) of checkpoint `path`, read onto `device`, into
    `model` (and `optimizer`); return its meta. Nothing changes unless the whole file is valid
    and matches the model (and optimizer)."""
    name = os.fspath(path)
    obj = _read(name, device)
    meta = obj["meta"]
    saved, mine = meta["arch"], _arch_of(model)
    if mine is not None and saved:
        if saved.get("model") != mine["model"]:
            raise CheckpointError(f"{name} was saved for model {saved.get('model')}, not {mine['model']}")
        if (list(saved.get("input_shape") or []) != list(mine["input_shape"])
                or saved.get("num_classes") != mine["num_classes"]):
            raise CheckpointError(f"{name} was saved for {_describe(saved)}, not {_describe(mine)}")
    state = checked_state(model, obj["model"], name)  # everything is checked before anything changes
    if optimizer is not None:
        if obj.get("optimizer") is None:
            raise CheckpointError(f"{name} holds no optimizer state (it cannot resume training)")
        saved = _checked_optimizer(model, optimizer, obj["optimizer"], name)
        try:  # torch validates the groups before it changes the optimizer
            optimizer.load_state_dict(saved)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{name}: optimizer state does not match ({first_line(exc)})") from None
    model.load_state_dict(state, strict=True)
    return meta


def load_model(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """Rebuild the model saved in a minidyn checkpoint, in eval mode on `device`.

    The model takes NCHW batches with pixels in [0, 1] and returns logits; it needs nothing
    from minidyn to run, so it can be handed to torchattacks or AutoAttack directly.
    """
    dev = resolve_device(device)
    obj = _read(path, dev)
    arch = obj["meta"]["arch"]
    if not {"model", "input_shape", "num_classes"} <= set(arch):
        raise CheckpointError(f"{os.fspath(path)} does not record its architecture (meta.arch)")
    try:
        model = build_model(arch["model"], arch["input_shape"], arch["num_classes"])
    except ConfigError as exc:
        raise CheckpointError(f"{os.fspath(path)} records an architecture minidyn cannot build ({exc})") from None
    model.load_state_dict(checked_state(model, obj["model"], os.fspath(path)), strict=True)
    return model.to(dev).eval()


def _arch_of(model: nn.Module) -> dict | None:
    arch = getattr(model, "minidyn_arch", None)
    return dict(arch) if isinstance(arch, dict) else None


def _describe(arch: dict) -> str:
    shape = tuple(arch.get("input_shape") or ())
    return f"model {arch.get('model')} (input {shape}, {arch.get('num_classes')} classes)"


def _cpu(obj: Any) -> Any:
    """A copy of a nested dict/list structure with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic, np.ndarray)) or (isinstance(obj, torch.Tensor) and obj.numel() <= 1_000):
        return obj.tolist()
    raise TypeError(f"checkpoint meta holds a {type(obj).__name__}, which is not JSON-serialisable")


def first_line(exc: BaseException) -> str:
    """An exception in one line: "Type: the first line of its message" (or the type alone)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _load_failure(exc: BaseException) -> str:
    """The useful part of a torch.load error, on one line and without terminal escapes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    marker = "WeightsUnpickler error:"
    if marker in text or text.startswith("Weights only load failed"):  # weights_only refused something: say what
        rest = text.split(marker, 1)[1] if marker in text else text.partition("\n")[2]
        lines = [ln.strip() for ln in rest.splitlines()
                 if ln.strip() and not ln.strip().startswith(("Check the documentation", "Please file an issue"))]
        detail = lines[0].split(". Please use")[0].rstrip(".") if lines else ""
        return f"refused by weights_only unpickling: {detail}" if detail else "refused by weights_only unpickling"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _read(path: str | os.PathLike, map_location: Any) -> dict:
    """torch.load(weights_only=True) plus a structural check; CheckpointError on any problem."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"{name}: no such checkpoint file")
    is_zip = _check_stored(name)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": refused below anyway
            warnings.simplefilter("ignore")
            # mmap (zip format only): tensor data stays in the file until the checks below have
            # passed (a tensor declared larger than the file holds is refused, not allocated)
            obj = torch.load(name, map_location=map_location, weights_only=True, mmap=is_zip)
    except Exception as exc:  # UnpicklingError (code refused), RuntimeError (not a zip), ...
        reason = _load_failure(exc)
        if not reason.startswith("refused") and not zipfile.is_zipfile(name):
            reason = "truncated or damaged: not a complete zip archive"
        raise CheckpointError(
            f"{name} is not a minidyn checkpoint or cannot be loaded safely ({reason})"
        ) from None
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("model"), dict)
            and isinstance(obj.get("meta"), dict) and isinstance(obj["meta"].get("arch"), dict)):
        raise CheckpointError(f"{name} is not a minidyn checkpoint (no {FORMAT} header with model weights and meta)")
    return obj


def _check_stored(name: str) -> bool:
    """Whether `name` is a zip archive; CheckpointError if it holds a compressed entry:
    torch.save stores every entry as is, torch.load would inflate one whatever its size."""
    try:
        with zipfile.ZipFile(name) as archive:
            packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False  # not a zip archive: torch.load says what it is
    if packed:
        raise CheckpointError(f"{name} is not a minidyn checkpoint: its entry {packed[0]} is compressed "
                              "(torch.save never compresses; refused before inflating it)")
    return True


def _checked_tensor(value: Any, ref: torch.Tensor, where: str) -> torch.Tensor:
    """`value` as a tensor of ref's device and dtype; CheckpointError (naming `where`) unless it
    has ref's shape and kind (a float for a float, an integer for an integer, never complex or
    bool), and, for a float, only finite values (after the cast: 1e300 is no float32)."""
    try:
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise CheckpointError(f"{where} is not a numeric array") from None
    if tuple(tensor.shape) != tuple(ref.shape):
        raise CheckpointError(f"{where} has shape {tuple(tensor.shape)}, the model expects {tuple(ref.shape)}")
    integer = not ref.is_floating_point()
    if tensor.is_complex() or tensor.dtype == torch.bool or tensor.is_floating_point() == integer:
        raise CheckpointError(f"{where} has dtype {str(tensor.dtype).removeprefix('torch.')}, "
                              f"the model holds {'integers' if integer else 'floats'}")
    tensor = tensor.to(device=ref.device, dtype=ref.dtype)
    if not integer and not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{where} holds NaN or infinite values")
    return tensor


def checked_state(model: nn.Module, state: dict, where: str) -> dict:
    """{name: tensor on the model's device and dtype} from a {name: tensor or array} dict.

    CheckpointError unless the names are exactly the model's and every value is one
    `_checked_tensor` accepts (shape, kind, finite).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if extra:
            parts.append(f"unexpected {len(extra)} (e.g. {extra[0]})")
        raise CheckpointError(f"{where} does not match the model's parameters: {', '.join(parts)}")
    return {name: _checked_tensor(state[name], ref, f"{where}: parameter {name}") for name, ref in own.items()}


def _checked_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, saved: Any, where: str) -> dict:
    """A copy of a saved SGD state_dict whose momentum buffers are checked (`_checked_tensor`:
    each parameter's shape, a float, finite) and cloned out of the mmapped file; torch checks
    the groups itself but loads a buffer of any shape (it fails at the first step)."""
    names = {id(p): n for n, p in model.named_parameters()}
    mine = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        ids = [i for group in saved["param_groups"] for i in group["params"]]
        state = dict(saved["state"])
        unknown = not set(state) <= set(ids)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{where}: optimizer state is not one of torch.optim.SGD") from None
    if len(ids) != len(mine) or unknown:
        return saved  # torch's load_state_dict refuses it, naming the mismatch
    params = dict(zip(ids, mine))
    checked = {}
    for i, entry in state.items():
        if not isinstance(entry, dict) or not set(entry) <= {"momentum_buffer"}:
            raise CheckpointError(f"{where}: optimizer state of {names.get(id(params[i]), i)} is not SGD's")
        buf = entry.get("momentum_buffer")
        what = f"{where}: momentum buffer of {names.get(id(params[i]), i)}"
        checked[i] = {**entry, "momentum_buffer": None if buf is None else _checked_tensor(buf, params[i], what).clone()}
    return {**saved, "state": checked}
