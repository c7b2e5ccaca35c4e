"""Mini-batches of a uint8 dataset, as backend arrays in [0, 1]."""
from __future__ import annotations

from typing import Iterator

import numpy as np


def batch_indices(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of `order` of `batch_size` indices (the last one may be shorter)."""
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


def to_backend(backend, data, idx: np.ndarray):
    """Examples idx of a uint8 dataset -> (x float in [0, 1], y int) on the backend's device."""
    return backend.asarray(data.x[idx], dtype="float") / 255.0, backend.asarray(data.y[idx])
