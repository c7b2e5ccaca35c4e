"""A validation split held out of the training examples, for model selection without the test set.

    train, val = split_validation(load_dataset("mnist-sample", "train"), 1000, seed=0)

The split is stratified (each class keeps its share of the training set, to within one
example) and a function of (the training set, n, seed) only: every run of a seed holds out the
same examples, whatever its method, model or backend. It is drawn from the training split, so
it can never overlap the test split. Both parts keep the training set's order.
"""
from __future__ import annotations

import numpy as np

from minidyn.data import Dataset
from minidyn.errors import ConfigError

from minidyn.seeds import VALIDATION as VALIDATION_STREAM  # the registry: minidyn/seeds.py


def split_validation(data: Dataset, n: int, seed: int) -> tuple[Dataset, Dataset]:
    """(training examples left, validation set of `n` examples) of the training split `data`.

    Class c gets floor(n * N_c / N) examples, and the n - sum of them left over go to the
    classes with the largest remainders (ties: the lower class); within each class the examples
    are drawn uniformly without replacement with numpy's generator seeded from (seed, 4).
    """
    if not 1 <= n < len(data):
        raise ConfigError(f"--val-size must be between 1 and {len(data) - 1} (the {len(data)} "
                          f"training examples of {data.name} minus one), got {n}")
    counts = np.bincount(data.y, minlength=data.num_classes)
    quota = n * counts / len(data)
    take = np.floor(quota).astype(int)
    extra = np.argsort(-(quota - take), kind="stable")[: n - take.sum()]
    take[extra] += 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, VALIDATION_STREAM]))
    chosen = [rng.choice(np.flatnonzero(data.y == c), size=k, replace=False)
              for c, k in enumerate(take) if k]
    held = np.zeros(len(data), dtype=bool)
    held[np.concatenate(chosen)] = True
    return _part(data, ~held, data.split), _part(data, held, "validation")


def _part(data: Dataset, mask: np.ndarray, split: str) -> Dataset:
    return Dataset(data.name, data.x[mask], data.y[mask], data.num_classes, split)
