"""IDX reader (MNIST / Fashion-MNIST) on official-format files written in tmp_path."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from minidyn.data import load_dataset
from minidyn.data.idx import load_idx_pair, read_images, read_labels
from minidyn.errors import DataError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def images_bytes(x, magic=2051):
    n, rows, cols = x.shape
    return struct.pack(">IIII", magic, n, rows, cols) + x.astype(np.uint8).tobytes()


def labels_bytes(y, magic=2049):
    return struct.pack(">II", magic, len(y)) + np.asarray(y, np.uint8).tobytes()


def write(path, data, gz=None):
    gz = str(path).endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def make(n=12, seed=0, rows=28, cols=28):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, rows, cols), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def write_set(d, prefix, x, y, gz=True):
    ext = ".gz" if gz else ""
    write(d / f"{prefix}-images-idx3-ubyte{ext}", images_bytes(x))
    write(d / f"{prefix}-labels-idx1-ubyte{ext}", labels_bytes(y))


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, gz):
    x, y = make()
    ext = ".gz" if gz else ""
    ip = write(tmp_path / f"train-images-idx3-ubyte{ext}", images_bytes(x))
    lp = write(tmp_path / f"train-labels-idx1-ubyte{ext}", labels_bytes(y))
    np.testing.assert_array_equal(read_images(ip), x)
    np.testing.assert_array_equal(read_labels(lp), y)
    xx, yy = load_idx_pair(ip, lp)
    assert xx.shape == (12, 1, 28, 28) and xx.dtype == np.uint8 and xx.flags["C_CONTIGUOUS"]
    assert yy.dtype == np.int64
    np.testing.assert_array_equal(xx[:, 0], x)
    np.testing.assert_array_equal(yy, y)


def test_gzip_detected_by_content_not_name(tmp_path):
    x, _ = make(3)
    p = write(tmp_path / "train-images-idx3-ubyte", images_bytes(x), gz=True)
    np.testing.assert_array_equal(read_images(p), x)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_dataset_both_splits(tmp_path, name):
    xtr, ytr = make(20, 1)
    xte, yte = make(7, 2)
    write_set(tmp_path, "train", xtr, ytr, gz=True)
    write_set(tmp_path, "t10k", xte, yte, gz=False)
    tr = load_dataset(name, "train", tmp_path)
    te = load_dataset(name, "test", str(tmp_path))
    assert tr.name == name and tr.num_classes == 10 and len(tr) == 20 and len(te) == 7
    np.testing.assert_array_equal(tr.x[:, 0], xtr)
    np.testing.assert_array_equal(te.y, yte)


def test_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    x, y = make(5)
    write_set(raw, "t10k", x, y, gz=False)
    assert len(load_dataset("fashion-mnist", "test", tmp_path)) == 5


def test_missing_files_message(tmp_path):
    msg = one_line_error(load_dataset, "mnist", "train", tmp_path)
    assert "train-images-idx3-ubyte" in msg
    assert str(tmp_path) in msg
    assert f"minidyn data download mnist --data-dir {tmp_path}" in msg
    x, y = make(3)
    write(tmp_path / "t10k-images-idx3-ubyte.gz", images_bytes(x))
    msg = one_line_error(load_dataset, "fashion-mnist", "test", tmp_path)
    assert "t10k-labels-idx1-ubyte" in msg and "minidyn data download fashion-mnist" in msg


def test_wrong_magic(tmp_path):
    x, y = make(3)
    p = write(tmp_path / "train-images-idx3-ubyte.gz", images_bytes(x, magic=2049))
    msg = one_line_error(read_images, p)
    assert msg.startswith("train-images-idx3-ubyte.gz: wrong magic number")
    assert "expected 2051" in msg and "found 2049" in msg
    p = write(tmp_path / "train-labels-idx1-ubyte", labels_bytes(y, magic=2051))
    msg = one_line_error(read_labels, p)
    assert "expected 2049" in msg and "found 2051" in msg
    # images and labels swapped
    ip = write(tmp_path / "a", labels_bytes(y))
    assert "wrong magic number" in one_line_error(read_images, ip)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_oversized(tmp_path, gz):
    x, y = make(4)
    data = images_bytes(x)  # 16 + 4*784 = 3152 bytes
    p = write(tmp_path / "train-images-idx3-ubyte", data[:1000], gz=gz)
    assert one_line_error(read_images, p) == (
        "train-images-idx3-ubyte: truncated: expected 3152 bytes, found 1000"
    )
    p = write(tmp_path / "train-images-idx3-ubyte", data + b"\0" * 10, gz=gz)
    assert one_line_error(read_images, p) == (
        "train-images-idx3-ubyte: oversized: expected 3152 bytes, found 3162"
    )
    p = write(tmp_path / "train-labels-idx1-ubyte", labels_bytes(y)[:5], gz=gz)
    assert "truncated" in one_line_error(read_labels, p)
    p = write(tmp_path / "train-labels-idx1-ubyte", labels_bytes(y)[:-1], gz=gz)
    assert one_line_error(read_labels, p) == "train-labels-idx1-ubyte: truncated: expected 12 bytes, found 11"


def test_header_claiming_huge_payload_is_truncated_not_memory_error(tmp_path):
    p = write(tmp_path / "x", struct.pack(">IIII", 2051, 0xFFFFFFFF, 0xFFFF, 0xFFFF) + b"\0" * 100)
    assert "truncated" in one_line_error(read_images, p)


def test_corrupted_gzip(tmp_path):
    x, _ = make(50)
    good = gzip.compress(images_bytes(x), mtime=0)
    bad = bytearray(good)
    for i in range(len(bad) // 3, len(bad) // 3 + 64):
        bad[i] ^= 0x5A
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(bytes(bad))
    msg = one_line_error(read_images, p)
    assert msg.startswith("train-images-idx3-ubyte.gz: ")
    assert "corrupted gzip" in msg or "truncated" in msg or "oversized" in msg
    # cut short: the gzip stream ends early
    p.write_bytes(good[: len(good) // 2])
    assert "corrupted gzip" in one_line_error(read_images, p)
    # CRC of the trailer wrong while the payload is intact
    crc_bad = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    p.write_bytes(crc_bad)
    assert "corrupted gzip" in one_line_error(read_images, p)
    # a .gz name holding no gzip at all
    p.write_bytes(images_bytes(x))
    assert one_line_error(read_images, p) == "train-images-idx3-ubyte.gz: corrupted gzip: not a gzip file"


def test_count_mismatch(tmp_path):
    x, y = make(5)
    ip = write(tmp_path / "train-images-idx3-ubyte.gz", images_bytes(x))
    lp = write(tmp_path / "train-labels-idx1-ubyte.gz", labels_bytes(y[:4]))
    assert one_line_error(load_idx_pair, ip, lp) == (
        "train-images-idx3-ubyte.gz has 5 images but train-labels-idx1-ubyte.gz has 4 labels"
    )
    assert "has 5 images but" in one_line_error(load_dataset, "mnist", "train", tmp_path)


def test_label_out_of_range(tmp_path):
    x, y = make(5)
    y[3] = 10
    ip = write(tmp_path / "t10k-images-idx3-ubyte", images_bytes(x))
    lp = write(tmp_path / "t10k-labels-idx1-ubyte", labels_bytes(y))
    assert one_line_error(load_idx_pair, ip, lp) == (
        "t10k-labels-idx1-ubyte: label 10 at index 3 is outside 0..9"
    )


def test_wrong_image_size(tmp_path):
    x, y = make(2, rows=32, cols=32)
    ip = write(tmp_path / "train-images-idx3-ubyte", images_bytes(x))
    lp = write(tmp_path / "train-labels-idx1-ubyte", labels_bytes(y))
    assert "expected 28x28 images, found 32x32" in one_line_error(load_idx_pair, ip, lp)


def test_directory_instead_of_file(tmp_path):
    d = tmp_path / "train-images-idx3-ubyte"
    d.mkdir()
    one_line_error(read_images, d)


@pytest.mark.skipif(not (DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_default_dir():
    from minidyn.data import default_data_dir

    assert default_data_dir("fashion-mnist") == DEBIAN_FASHION
    te = load_dataset("fashion-mnist", "test")
    assert te.x.shape == (10000, 1, 28, 28)
    assert np.bincount(te.y).tolist() == [1000] * 10
