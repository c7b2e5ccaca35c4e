"""CIFAR-10 binary format: extracted directory and tarball, written in tmp_path."""

import io
import tarfile

import numpy as np
import pytest

from minidyn.data import cifar, load_dataset
from minidyn.errors import DataError

R = 7  # records per batch in these tests (official: 10000)
FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", R)


def batch(seed, n=R):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1)
    return records.tobytes(), x, y


def all_batches():
    return {name: batch(i) for i, name in enumerate(FILES)}


def write_dir(d, batches):
    d.mkdir(parents=True, exist_ok=True)
    for name, (data, _, _) in batches.items():
        (d / name).write_bytes(data)


def add(tar, name, data=b"", **kw):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


def write_tar(path, batches, extra=()):
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "cifar-10-batches-bin/batches.meta.txt", b"airplane\nautomobile\n")
        for name in sorted(batches):
            add(tar, f"cifar-10-batches-bin/{name}", batches[name][0])
        for name, data, kw in extra:
            add(tar, name, data, **kw)
    return path


def expected(batches, split):
    names = FILES[:5] if split == "train" else FILES[5:]
    return (np.concatenate([batches[n][1] for n in names]),
            np.concatenate([batches[n][2] for n in names]).astype(np.int64))


def check(ds, batches, split):
    x, y = expected(batches, split)
    assert ds.x.dtype == np.uint8 and ds.y.dtype == np.int64
    assert ds.x.shape == (len(y), 3, 32, 32) and ds.num_classes == 10 and ds.name == "cifar10"
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)


def one_line_error(fn, *args):
    with pytest.raises(DataError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_record_layout_is_label_then_rgb_planes():
    rec = bytes([3]) + bytes([1]) * 1024 + bytes([2]) * 1024 + bytes([3]) * 1024
    x, y = cifar.parse_batch("b.bin", rec * R)
    assert y.tolist() == [3] * R
    assert (x[:, 0] == 1).all() and (x[:, 1] == 2).all() and (x[:, 2] == 3).all()


@pytest.mark.parametrize("split", ["train", "test"])
def test_extracted_directory(tmp_path, split):
    b = all_batches()
    write_dir(tmp_path / "cifar-10-batches-bin", b)
    check(load_dataset("cifar10", split, tmp_path), b, split)


def test_bin_files_directly_in_data_dir(tmp_path):
    b = all_batches()
    write_dir(tmp_path, b)
    check(load_dataset("cifar10", "train", tmp_path), b, "train")


@pytest.mark.parametrize("split", ["train", "test"])
def test_tarball_read_without_extracting(tmp_path, split):
    b = all_batches()
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    write_tar(data_dir / "cifar-10-binary.tar.gz", b)
    check(load_dataset("cifar10", split, data_dir), b, split)
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-binary.tar.gz"]


@pytest.mark.parametrize("bad_name", [
    "../evil.bin",
    "cifar-10-batches-bin/../../evil.bin",
    "/tmp/minidyn-test-evil.bin",
])
def test_traversal_member_rejected_and_nothing_written(tmp_path, bad_name):
    data_dir = tmp_path / "a" / "b"
    data_dir.mkdir(parents=True)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    write_tar(data_dir / "cifar-10-binary.tar.gz", all_batches(), extra=[(bad_name, b"x" * 10, {})])
    msg = one_line_error(load_dataset, "cifar10", "train", data_dir)
    assert "unsafe member path" in msg and "cifar-10-binary.tar.gz" in msg
    after = sorted(str(p) for p in tmp_path.rglob("*"))
    assert after == sorted(before + [str(data_dir / "cifar-10-binary.tar.gz")])
    assert not (tmp_path / "a" / "evil.bin").exists() and not (tmp_path / "evil.bin").exists()


def test_traversal_member_named_like_a_batch(tmp_path):
    b = all_batches()
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        add(tar, "../cifar-10-batches-bin/data_batch_1.bin", b["data_batch_1.bin"][0])
    assert "unsafe member path" in one_line_error(load_dataset, "cifar10", "train", tmp_path)


def test_symlink_members_rejected(tmp_path):
    b = all_batches()
    b.pop("data_batch_1.bin")
    link = ("cifar-10-batches-bin/data_batch_1.bin", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})
    write_tar(tmp_path / "cifar-10-binary.tar.gz", b, extra=[link])
    assert "links outside the archive" in one_line_error(load_dataset, "cifar10", "train", tmp_path)
    inside = ("cifar-10-batches-bin/data_batch_1.bin", b"", {"type": tarfile.SYMTYPE, "linkname": "data_batch_2.bin"})
    write_tar(tmp_path / "cifar-10-binary.tar.gz", b, extra=[inside])
    assert "not a regular file" in one_line_error(load_dataset, "cifar10", "train", tmp_path)


def test_truncated_oversized_and_bad_labels(tmp_path):
    b = all_batches()
    d = tmp_path / "cifar-10-batches-bin"
    write_dir(d, b)
    good = b["data_batch_3.bin"][0]
    (d / "data_batch_3.bin").write_bytes(good[:-100])
    assert one_line_error(load_dataset, "cifar10", "train", tmp_path) == (
        f"data_batch_3.bin: truncated: expected {R * 3073} bytes, found {R * 3073 - 100}"
    )
    (d / "data_batch_3.bin").write_bytes(good + b"\0" * 3073)
    assert one_line_error(load_dataset, "cifar10", "train", tmp_path) == (
        f"data_batch_3.bin: oversized: expected {R * 3073} bytes, found {R * 3073 + 3073}"
    )
    bad = bytearray(good)
    bad[2 * 3073] = 10
    (d / "data_batch_3.bin").write_bytes(bytes(bad))
    assert one_line_error(load_dataset, "cifar10", "train", tmp_path) == (
        "data_batch_3.bin: label 10 in record 2 is outside 0..9"
    )
    # the same problems inside a tarball
    b["test_batch.bin"] = (b["test_batch.bin"][0][:-1],) + b["test_batch.bin"][1:]
    t = tmp_path / "t"
    t.mkdir()
    write_tar(t / "cifar-10-binary.tar.gz", b)
    assert "test_batch.bin: truncated" in one_line_error(load_dataset, "cifar10", "test", t)


def test_official_batch_size_by_default(monkeypatch):
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", 10000)
    assert one_line_error(cifar.parse_batch, "data_batch_1.bin", bytes(3073)) == (
        "data_batch_1.bin: truncated: expected 30730000 bytes, found 3073"
    )


def test_missing_batches(tmp_path):
    msg = one_line_error(load_dataset, "cifar10", "train", tmp_path)
    assert str(tmp_path) in msg and f"minidyn data download cifar10 --data-dir {tmp_path}" in msg
    b = all_batches()
    b.pop("data_batch_4.bin")
    write_dir(tmp_path / "cifar-10-batches-bin", b)
    assert "data_batch_4.bin: file not found" in one_line_error(load_dataset, "cifar10", "train", tmp_path)
    t = tmp_path / "t"
    t.mkdir()
    write_tar(t / "cifar-10-binary.tar.gz", b)
    assert "no member data_batch_4.bin" in one_line_error(load_dataset, "cifar10", "train", t)


def test_corrupted_tarball(tmp_path):
    p = tmp_path / "cifar-10-binary.tar.gz"
    write_tar(p, all_batches())
    good = p.read_bytes()
    for cut in (len(good) // 2, len(good) - 3):  # mid-stream; only the gzip trailer
        p.write_bytes(good[:cut])
        msg = one_line_error(load_dataset, "cifar10", "train", tmp_path)
        assert msg.startswith("cifar-10-binary.tar.gz: corrupted archive")
    bad = bytearray(good)
    bad[-8] ^= 0xFF  # CRC-32 in the gzip trailer
    p.write_bytes(bytes(bad))
    assert "corrupted archive" in one_line_error(load_dataset, "cifar10", "train", tmp_path)
    p.write_bytes(b"this is not a tarball at all" * 10)
    assert "corrupted archive" in one_line_error(load_dataset, "cifar10", "train", tmp_path)
