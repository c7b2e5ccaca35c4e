"""The checkpoint of a run, for evaluation and analysis: find it, read it, describe it, load it.

    from minidyn.evaluation.checkpoints import checkpoint_in, read_meta, architecture, load_checkpoint
    path = checkpoint_in("runs/x")      # runs/x/checkpoint.pt (or checkpoint.npz)
    meta = read_meta(path)              # {"epoch", "eps", "dataset", "method", ...}, no model built
    architecture(meta)                  # {"model": "mlp", "input_shape": [1, 28, 28], "num_classes": 10}
    backend, model, meta = load_checkpoint(path)
    test_set(meta, None, None, str(path))   # the test split it was trained on; eps_of(meta, ...)

A checkpoint.pt belongs to the torch backend, a checkpoint.npz to the numpy (or cupy) backend;
each backend reads its own format (its public `read_meta` and `load_checkpoint`). Training
writes checkpoints and resumes from them itself (minidyn.runs).
"""
from __future__ import annotations

import os
from pathlib import Path

from minidyn.backend import Backend, Model, get_backend, parse_device
from minidyn.data import load_dataset
from minidyn.errors import CheckpointError, ConfigError
from minidyn.files.readers import check_meta, read_config, read_eval
from minidyn.files.names import CHECKPOINT_NAMES

BACKEND_OF_SUFFIX = {".pt": "torch", ".npz": "numpy"}  # the backend that reads each format
CHECKPOINT_FILES = tuple(dict.fromkeys(CHECKPOINT_NAMES.values()))  # what a run directory can hold
ARCH_KEYS = ("model", "input_shape", "num_classes")     # what rebuilds the model


def checkpoint_in(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the checkpoint of a run directory (checkpoint.pt or .npz; with both,
    the one of the backend its config.json names)."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        return path
    found = [path / name for name in CHECKPOINT_FILES if (path / name).is_file()]
    if not found:
        raise CheckpointError(f"{path} holds no checkpoint.pt or checkpoint.npz")
    if len(found) == 1:
        return found[0]
    config = path / "config.json"
    backend = read_config(config).get("backend") if config.exists() else None
    return path / CHECKPOINT_NAMES["torch" if backend == "torch" else "numpy"]


def read_meta(path: str | os.PathLike) -> dict:
    """The meta dict of a minidyn checkpoint file (.pt or .npz) without building a model,
    checked by minidyn.files.readers.check_meta (sane architecture, eps, epoch)."""
    path = Path(path)
    if path.suffix not in BACKEND_OF_SUFFIX:
        raise CheckpointError(f"{path}: a minidyn checkpoint ends in .pt (torch) or .npz (numpy)")
    return check_meta(get_backend(BACKEND_OF_SUFFIX[path.suffix]).read_meta(path), path)


def architecture(meta: dict) -> dict:
    """The ARCH_KEYS a checkpoint's meta records (those it has): the torch backend keeps them
    under meta["arch"], training also writes them at the top level."""
    merged = {**meta, **(meta.get("arch") or {})}
    return {key: merged[key] for key in ARCH_KEYS if key in merged}


def evaluation_backend(path: Path, device: str | None = "auto") -> Backend:
    """The backend that loads checkpoint `path`: .pt -> torch on `device`; .npz -> numpy, or cupy
    when `device` is cuda or cuda:N."""
    if path.suffix == ".pt":
        return get_backend("torch", device=device)
    try:
        kind, index = parse_device("auto" if device is None else device)
    except ConfigError:
        raise ConfigError(f"unknown device {device!r} for a numpy checkpoint; use cpu or cuda[:N]") from None
    return get_backend("cupy", device=index or 0) if kind == "cuda" else get_backend("numpy")


def load_checkpoint(path: str | os.PathLike, device: str = "auto") -> tuple[Backend, Model, dict]:
    """(backend, model with the checkpoint's weights, meta with "path") for a checkpoint file or
    a run directory; the backend as `evaluation_backend` chooses it."""
    path = checkpoint_in(path)
    arch = architecture(read_meta(path))
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise CheckpointError(f"{path} does not record its architecture ({', '.join(missing)} missing)")
    backend = evaluation_backend(path, device)
    try:
        model = backend.make_model(arch["model"], tuple(arch["input_shape"]), int(arch["num_classes"]), 0)
    except ConfigError as exc:
        raise CheckpointError(f"{path} records a model this backend cannot build ({exc})") from None
    meta = check_meta(backend.load_checkpoint(str(path), model), path)
    return backend, model, {**meta, "path": str(path)}


def run_config(checkpoint: str | os.PathLike) -> dict:
    """The config.json of the run a checkpoint file belongs to ({} when there is none; a
    config.json that minidyn.files.readers.read_config refuses is a ConfigError)."""
    config = Path(checkpoint).parent / "config.json"
    return read_config(config) if config.exists() or config.is_symlink() else {}


def test_set(meta: dict, dataset: str | None, data_dir: str | None, checkpoint: str):
    """The test split the checkpoint was trained on (or --dataset/--data-dir)."""
    name = dataset or meta.get("dataset")
    if not name:
        raise ConfigError(f"{checkpoint} does not record its dataset; pass --dataset")
    if data_dir is None and name == meta.get("dataset"):
        data_dir = run_config(checkpoint).get("data_dir")
    return load_dataset(name, "test", data_dir)


def eps_of(meta: dict, eps: float | None, checkpoint: str) -> float:
    """`eps` where given (--eps), else the eps the checkpoint's meta records."""
    eps = eps if eps is not None else meta.get("eps")
    if eps is None:
        raise ConfigError(f"{checkpoint} does not record the eps it was trained with; pass --eps")
    return float(eps)


def saved_white_box(path) -> dict | None:
    """The eval.json next to checkpoint `path` (minidyn.files.readers.read_eval), None without one."""
    saved = Path(path).parent / "eval.json"
    return read_eval(saved) if saved.exists() or saved.is_symlink() else None
