"""CIFAR-10 from its official *binary* distribution (never the pickled Python version).

``cifar-10-binary.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html) holds
``cifar-10-batches-bin/data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``: 10,000
records each, every record one label byte (0..9) then 3072 pixel bytes (1024 red, 1024 green,
1024 blue, each plane 32x32 row-major) -- which is already the (C, H, W) order.

:func:`load_cifar10` reads, from ``data_dir``, the first of:

1. the extracted directory ``data_dir/cifar-10-batches-bin/``;
2. ``data_dir`` itself, when it holds the ``.bin`` files;
3. the tarball ``data_dir/cifar-10-binary.tar.gz``, read member by member without extracting
   anything. Every member name is checked first: an absolute name or one with a ``..``
   component is a :class:`~minidyn.errors.DataError`, and so is a batch that is a link or not a
   regular file; nothing is ever written to disk.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from minidyn.errors import DataError

TARBALL = "cifar-10-binary.tar.gz"
BATCH_DIR = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
RECORD_BYTES = 1 + 3 * 32 * 32
RECORDS_PER_BATCH = 10000  # every official batch holds exactly this many records
NUM_CLASSES = 10


def split_files(split: str) -> tuple[str, ...]:
    if split == "train":
        return TRAIN_FILES
    if split == "test":
        return TEST_FILES
    raise ValueError(f"split must be 'train' or 'test', not {split!r}")


def parse_batch(name: str, data: bytes | bytearray) -> tuple[np.ndarray, np.ndarray]:
    """Parse one batch file's bytes; return x uint8 (N, 3, 32, 32) and y int64 (N,)."""
    expected = RECORDS_PER_BATCH * RECORD_BYTES
    if len(data) < expected:
        raise DataError(f"{name}: truncated: expected {expected} bytes, found {len(data)}")
    if len(data) > expected:
        raise DataError(f"{name}: oversized: expected {expected} bytes, found {len(data)}")
    records = np.frombuffer(data, dtype=np.uint8).reshape(RECORDS_PER_BATCH, RECORD_BYTES)
    y = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(y >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{name}: label {int(y[bad[0]])} in record {int(bad[0])} is outside 0..{NUM_CLASSES - 1}"
        )
    x = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)
    return x, y


def _concat(name_order: tuple[str, ...], parts: dict[str, tuple[np.ndarray, np.ndarray]]):
    x = np.concatenate([parts[n][0] for n in name_order])
    y = np.concatenate([parts[n][1] for n in name_order])
    return x, y


def _read_file(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def load_from_directory(
    directory: str | os.PathLike, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    directory = Path(directory)
    data_dir = directory if data_dir is None else data_dir
    names = split_files(split)
    limit = RECORDS_PER_BATCH * RECORD_BYTES + 1  # one more byte tells an oversized file
    parts = {}
    for name in names:
        path = directory / name
        if not path.is_file():
            raise DataError(
                f"{name}: file not found in {directory} (the {BATCH_DIR}/ directory of {TARBALL} "
                f"holds data_batch_1..5.bin and test_batch.bin); "
                f"run `minidyn data download cifar10 --data-dir {data_dir}`"
            )
        try:
            data = _read_file(path, limit)
        except OSError as e:
            raise DataError(f"{name}: cannot read: {e.strerror or e}") from None
        if len(data) == limit:
            size = path.stat().st_size
            raise DataError(
                f"{name}: oversized: expected {RECORDS_PER_BATCH * RECORD_BYTES} bytes, found {size}"
            )
        parts[name] = parse_batch(name, data)
    return _concat(names, parts)


def _unsafe(member_name: str) -> bool:
    if member_name.startswith(("/", "\\")) or (len(member_name) > 1 and member_name[1] == ":"):
        return True
    parts = PurePosixPath(member_name.replace("\\", "/")).parts
    return ".." in parts


def _scan_tar(fileobj, tar_name: str, wanted: set[str], limit: int, parts: dict) -> None:
    """One pass over the archive: check every member's name, parse the wanted batches."""
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            if _unsafe(member.name):
                raise DataError(f"{tar_name}: unsafe member path {member.name!r}: refusing to read this archive")
            if (member.issym() or member.islnk()) and (
                _unsafe(member.linkname)
                or _unsafe(posixpath.join(posixpath.dirname(member.name), member.linkname))
            ):
                raise DataError(
                    f"{tar_name}: member {member.name!r} links outside the archive "
                    f"({member.linkname!r}): refusing to read this archive"
                )
            base = PurePosixPath(member.name).name
            if base not in wanted:
                continue
            if not member.isfile():
                raise DataError(f"{tar_name}: member {member.name!r} is not a regular file")
            if base in parts:
                raise DataError(f"{tar_name}: {base} appears twice in the archive")
            f = tar.extractfile(member)
            data = f.read(limit)
            if len(data) == limit:
                raise DataError(
                    f"{base}: oversized: expected {RECORDS_PER_BATCH * RECORD_BYTES} bytes, "
                    f"found {member.size} (in {tar_name})"
                )
            parts[base] = parse_batch(base, data)


def load_from_tarball(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the wanted batches from the tarball in one streaming pass, writing nothing."""
    path = Path(path)
    tar_name = path.name
    names = split_files(split)
    wanted = set(names)
    limit = RECORDS_PER_BATCH * RECORD_BYTES + 1
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            # gzip.GzipFile (unlike tarfile's own stream reader) checks the CRC and length in the
            # gzip trailer once it reaches the end, which draining the stream below makes sure of.
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
            with stream:
                _scan_tar(stream, tar_name, wanted, limit, parts)
                while stream.read(1 << 20):
                    pass
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{tar_name}: file not found in {path.parent}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{tar_name}: corrupted archive: {e}") from None
    missing = [n for n in names if n not in parts]
    if missing:
        raise DataError(f"{tar_name}: no member {missing[0]} (expected {BATCH_DIR}/{missing[0]})")
    return _concat(names, parts)


def find_source(data_dir: str | os.PathLike, split: str) -> Path | None:
    """Where :func:`load_cifar10` will read from, or None when nothing is there."""
    data_dir = Path(data_dir)
    names = split_files(split)
    for directory in (data_dir / BATCH_DIR, data_dir):
        if any((directory / n).exists() for n in names):
            return directory
    if (data_dir / TARBALL).exists():
        return data_dir / TARBALL
    return None


def load_cifar10(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (N, 3, 32, 32), y int64 (N,) of the given split; see the module docstring."""
    source = find_source(data_dir, split)
    if source is None:
        raise DataError(
            f"CIFAR-10 not found: neither {BATCH_DIR}/ nor {TARBALL} in {data_dir}; "
            f"run `minidyn data download cifar10 --data-dir {data_dir}`"
        )
    if source.is_dir():
        return load_from_directory(source, split, data_dir)
    return load_from_tarball(source, split)
