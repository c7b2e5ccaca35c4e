"""minidyn.runs.check_batch_shares: the smallest per-process share of any batch, as
np.array_split deals it, must be at least what the model trains on."""
import copy

import numpy as np
import pytest

from minidyn.backend import get_backend
from minidyn.config import TrainConfig
from minidyn.errors import ConfigError
from minidyn.runs import check_batch_shares
from minidyn.data.batches import batch_indices


def backend(world: int, need: int):
    B = copy.copy(get_backend("numpy"))  # a copy: get_backend's instance is shared
    B.world_size = world
    B.min_train_batch = lambda model: need
    return B


def smallest_share(n: int, batch: int, world: int) -> int:
    return min(len(part) for idx in batch_indices(np.arange(n), batch) for part in np.array_split(idx, world))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("need", [1, 2])
def test_refused_exactly_when_some_process_would_get_too_few(world, need):
    for n in range(1, 40):
        for batch in range(1, 20):
            cfg = TrainConfig(batch_size=batch, model="mlp")
            if smallest_share(n, batch, world) >= need:
                check_batch_shares(backend(world, need), None, cfg, n)
            else:
                with pytest.raises(ConfigError):
                    check_batch_shares(backend(world, need), None, cfg, n)


@pytest.mark.parametrize("world, need, words", [
    (1, 2, "a batch of 1 example, and cnn8's BatchNorm needs at least 2 to train; change --batch-size"),
    (2, 2, "a batch of 1 example split over 2 processes gives one of them 0, and cnn8's BatchNorm needs"),
    (2, 1, "a batch of 1 example split over 2 processes gives one of them 0, and every process needs at least 1"),
])
def test_the_message_names_the_batch_and_the_reason(world, need, words):
    with pytest.raises(ConfigError, match=words):
        check_batch_shares(backend(world, need), None, TrainConfig(batch_size=32, model="cnn8"), 33)
