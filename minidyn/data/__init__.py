"""Datasets: the embedded ``mnist-sample``, MNIST, Fashion-MNIST and CIFAR-10.

    >>> from minidyn.data import load_dataset
    >>> train = load_dataset("mnist-sample", "train")
    >>> train.x.shape, train.x.dtype, train.y.dtype
    ((8000, 1, 28, 28), dtype('uint8'), dtype('int64'))

Images are always uint8 (N, C, H, W) as stored in the official files (no scaling); labels int64.

* ``mnist-sample``: embedded in the package (8,000 train / 2,000 test real MNIST digits).
* ``mnist`` / ``fashion-mnist``: the four official IDX files, plain or ``.gz``, in ``data_dir``
  (also found under torchvision's ``MNIST/raw/`` / ``FashionMNIST/raw/`` below it).
* ``cifar10``: the official binary version, ``cifar-10-batches-bin/`` or
  ``cifar-10-binary.tar.gz`` in ``data_dir``.

``data_dir`` defaults to :func:`default_data_dir` (``~/.cache/minidyn/NAME``; for fashion-mnist,
Debian's ``/usr/share/datasets/fashion-mnist`` when the ``dataset-fashion-mnist`` package is
installed). ``minidyn.data.download.download(name, data_dir)`` fetches the official files
with hash verification (the submodule is not shadowed by a function of the same name here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minidyn.data.batches import batch_indices, to_backend
from minidyn.data.download import IDX_FILES, default_data_dir
from minidyn.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "Dataset",
    "batch_indices",
    "default_data_dir",
    "input_shape",
    "load_dataset",
    "to_backend",
]

DATASETS = ("mnist-sample", "mnist", "fashion-mnist", "cifar10")
SPLITS = ("train", "test")
_INPUT_SHAPES = {
    "mnist-sample": (1, 28, 28),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}
_NUM_CLASSES = 10
# torchvision's layout below a root directory, searched after data_dir itself
_TORCHVISION_DIRS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images ``x`` uint8 (N, C, H, W) and labels ``y`` int64 (N,) of one split."""

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    split: str = "train"

    def __post_init__(self):
        if self.x.dtype != np.uint8 or self.x.ndim != 4:
            raise DataError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.x.dtype} {self.x.shape}")
        if self.y.dtype != np.int64 or self.y.shape != (len(self.x),):
            raise DataError(f"{self.name}: labels must be int64 ({len(self.x)},), got {self.y.dtype} {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int) -> "Dataset":
        """The first ``n`` examples (a view, no copy)."""
        what = "training" if self.split == "train" else self.split
        if n < 1:
            raise ConfigError(f"--limit {n} must be at least 1")
        if n > len(self):
            raise DataError(f"--limit {n} exceeds the {len(self)} {what} examples of {self.name}")
        return Dataset(self.name, self.x[:n], self.y[:n], self.num_classes, self.split)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def input_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's images, without loading it."""
    _check_name(name)
    return _INPUT_SHAPES[name]


def _find_idx(name: str, data_dir: Path, stem: str) -> Path:
    dirs = [data_dir]
    if name in _TORCHVISION_DIRS:
        dirs.append(data_dir / _TORCHVISION_DIRS[name])
    for d in dirs:
        for candidate in (d / stem, d / (stem + ".gz")):
            if candidate.is_file():
                return candidate
    raise DataError(
        f"{stem}.gz (or {stem}) not found in {data_dir}; "
        f"run `minidyn data download {name} --data-dir {data_dir}` or put the official files there"
    )


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load ``split`` ("train" or "test") of dataset ``name`` (one of :data:`DATASETS`)."""
    _check_name(name)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if name == "mnist-sample":
        from minidyn.data.sample import load_sample

        x, y = load_sample(split)
        return Dataset(name, x, y, _NUM_CLASSES, split)

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
    if name in ("mnist", "fashion-mnist"):
        from minidyn.data.idx import load_idx_pair

        prefix = "train" if split == "train" else "t10k"
        images_stem, labels_stem = (s for s in IDX_FILES if s.startswith(prefix))
        images = _find_idx(name, data_dir, images_stem)
        labels = _find_idx(name, data_dir, labels_stem)
        x, y = load_idx_pair(images, labels, num_classes=_NUM_CLASSES, image_shape=(28, 28))
        return Dataset(name, x, y, _NUM_CLASSES, split)

    from minidyn.data.cifar import load_cifar10

    x, y = load_cifar10(data_dir, split)
    return Dataset(name, x, y, _NUM_CLASSES, split)
