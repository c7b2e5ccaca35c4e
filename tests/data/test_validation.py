"""The validation split: drawn from the training split only, stratified, the same for a seed."""
import hashlib

import numpy as np
import pytest

from minidyn.data import load_dataset
from minidyn.data.validation import split_validation
from minidyn.errors import ConfigError


@pytest.fixture(scope="module")
def sample():
    return load_dataset("mnist-sample", "train"), load_dataset("mnist-sample", "test")


def digests(data):
    return {hashlib.sha256(x.tobytes()).hexdigest() for x in data.x}


def test_the_validation_split_never_overlaps_the_test_split_or_the_training_rest(sample):
    train, test = sample
    rest, val = split_validation(train, 1000, seed=0)
    assert len(val) == 1000 and len(rest) == len(train) - 1000
    assert not digests(val) & digests(test)
    assert not digests(val) & digests(rest)
    together = np.concatenate([rest.x, val.x]).reshape(len(train), -1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, train.x.reshape(len(train), -1)))


def test_each_class_keeps_its_share_to_within_one_example(sample):
    train, _ = sample
    _, val = split_validation(train, 1000, seed=3)
    share = 1000 * np.bincount(train.y, minlength=10) / len(train)
    assert np.all(np.abs(np.bincount(val.y, minlength=10) - share) < 1)


def test_a_seed_always_holds_out_the_same_examples_and_another_seed_others(sample):
    train, _ = sample
    a, b, c = (split_validation(train, 500, seed=s)[1] for s in (7, 7, 8))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize("n", [0, 8000])
def test_a_validation_size_that_leaves_nothing_is_refused(sample, n):
    with pytest.raises(ConfigError, match="--val-size must be between 1 and 7999"):
        split_validation(sample[0], n, seed=0)
