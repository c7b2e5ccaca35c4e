"""Reader for the IDX files of MNIST and Fashion-MNIST, plain or gzip-compressed.

Format (http://yann.lecun.com/exdb/mnist/): a big-endian header, then the raw bytes.

* images: magic 2051 (0x00000803: unsigned bytes, 3 dimensions), count, rows, cols, then
  count * rows * cols pixels;
* labels: magic 2049 (0x00000801: unsigned bytes, 1 dimension), count, then count labels.

Whether a file is gzip-compressed is decided by its first two bytes (0x1f 0x8b), so both
``train-images-idx3-ubyte`` and ``train-images-idx3-ubyte.gz`` work whatever they hold; a
``.gz`` name that does not hold gzip is reported as a corrupted gzip. Every problem is a
:class:`~minidyn.errors.DataError` with a one-line message that starts with the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from minidyn.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_OVERSIZE_COUNT_CAP = 1 << 28  # stop counting the excess of an oversized file after 256 MiB
# The largest payload read: 256 MiB is 340,000 28x28 images, over five times MNIST's 47 MB
# training set; a header that declares more is refused before anything is decompressed.
MAX_PAYLOAD_BYTES = 1 << 28
MAX_GZIP_RATIO = 1100  # deflate expands at most ~1032:1; the gzip header and trailer add 18 bytes


def _read_upto(f, n: int, keep: bool = True):
    """Read at most n bytes in chunks; return them (keep=True) or just how many there were."""
    buf = bytearray() if keep else None
    got = 0
    while got < n:
        chunk = f.read(min(_CHUNK, n - got))
        if not chunk:
            break
        got += len(chunk)
        if keep:
            buf += chunk
    return buf if keep else got


def _read_header(f, name: str, magic: int, ndim: int) -> tuple[int, ...]:
    """The dims of the IDX header at the start of stream f; DataError unless the magic is
    `magic` and the header is whole."""
    header_len = 4 + 4 * ndim
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{name}: truncated: expected a {header_len}-byte IDX header, found {len(head)} bytes")
    (found_magic,) = struct.unpack(">I", head)
    if found_magic != magic:
        raise DataError(f"{name}: wrong magic number: expected {magic} (IDX {_kind(magic)}), found {found_magic}")
    rest = f.read(header_len - 4)
    if len(rest) < header_len - 4:
        raise DataError(
            f"{name}: truncated: expected a {header_len}-byte IDX header, found {4 + len(rest)} bytes"
        )
    return struct.unpack(f">{ndim}I", rest)


def _kind(magic: int) -> str:
    return "images" if magic == IMAGES_MAGIC else "labels"


def _check_declared(name: str, magic: int, dims: tuple[int, ...], file_size: int, is_gzip: bool) -> int:
    """The payload size the header declares; DataError, before anything is read, when it
    declares no example, more than MAX_PAYLOAD_BYTES, or more than the file can hold (a plain
    file: its size exactly; a gzip file: at most MAX_GZIP_RATIO times its size)."""
    header_len = 4 + 4 * len(dims)
    payload_len = math.prod(dims)
    expected_total = header_len + payload_len
    if dims[0] == 0:
        raise DataError(f"{name}: holds 0 {_kind(magic)} (an empty split); expected at least one")
    if not is_gzip and file_size != expected_total:
        what = "truncated" if file_size < expected_total else "oversized"
        raise DataError(f"{name}: {what}: expected {expected_total} bytes, found {file_size}")
    if is_gzip and expected_total > MAX_GZIP_RATIO * file_size:
        raise DataError(f"{name}: truncated: the header declares {expected_total} bytes, more than "
                        f"a {file_size}-byte gzip file can hold")
    if payload_len > MAX_PAYLOAD_BYTES:
        raise DataError(f"{name}: the header declares {payload_len} bytes of {_kind(magic)} "
                        f"(dims {' x '.join(map(str, dims))}), more than the {MAX_PAYLOAD_BYTES >> 20} MiB "
                        "an MNIST-format file can hold here")
    return payload_len


def _read_stream(f, name: str, magic: int, ndim: int, file_size: int,
                 is_gzip: bool) -> tuple[tuple[int, ...], bytearray]:
    """Read header and payload from an open binary stream; validate magic and sizes (the
    declared ones before the payload is read)."""
    dims = _read_header(f, name, magic, ndim)
    payload_len = _check_declared(name, magic, dims, file_size, is_gzip)
    header_len = 4 + 4 * ndim
    expected_total = header_len + payload_len
    # Read one byte more than announced: a longer payload is an oversized file (a gzip bomb
    # stops here), and asking past the end makes gzip reach its trailer and check the CRC.
    # Chunked reads keep memory bounded by the declared size, which is capped above.
    payload = _read_upto(f, payload_len + 1)
    found_total = header_len + len(payload)
    if found_total < expected_total:
        raise DataError(f"{name}: truncated: expected {expected_total} bytes, found {found_total}")
    if found_total > expected_total:
        rest = _read_upto(f, _OVERSIZE_COUNT_CAP, keep=False)
        more = "more than " if rest >= _OVERSIZE_COUNT_CAP else ""
        raise DataError(f"{name}: oversized: expected {expected_total} bytes, found {more}{found_total + rest}")
    return tuple(dims), payload


def _read(path: str | os.PathLike, magic: int, ndim: int) -> tuple[tuple[int, ...], bytearray]:
    path = Path(path)
    name = path.name
    if path.exists() and not path.is_dir() and not path.is_file():  # a FIFO would block open()
        raise DataError(f"{path}: not a regular file, expected an IDX file")
    try:
        with open(path, "rb") as raw:
            file_size = os.fstat(raw.fileno()).st_size
            is_gzip = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not is_gzip:
                if name.endswith(".gz"):
                    raise DataError(f"{name}: corrupted gzip: not a gzip file")
                return _read_stream(raw, name, magic, ndim, file_size, is_gzip=False)
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _read_stream(f, name, magic, ndim, file_size, is_gzip=True)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise DataError(f"{name}: corrupted gzip: {e}") from None
    except FileNotFoundError:
        raise DataError(f"{name}: file not found in {path.parent}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read: {e.strerror or e}") from None


def read_images(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX image file (magic 2051); return uint8 (N, rows, cols)."""
    (n, rows, cols), payload = _read(path, IMAGES_MAGIC, 3)
    return np.frombuffer(payload, dtype=np.uint8).reshape(n, rows, cols)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX label file (magic 2049); return uint8 (N,)."""
    (n,), payload = _read(path, LABELS_MAGIC, 1)
    return np.frombuffer(payload, dtype=np.uint8)


def load_idx_pair(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    num_classes: int = 10,
    image_shape: tuple[int, int] | None = (28, 28),
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file; return x uint8 (N, 1, H, W) and y int64 (N,).

    Checks: the image size (when ``image_shape`` is given), equal counts, labels in
    0..num_classes-1.
    """
    images_name, labels_name = Path(images_path).name, Path(labels_path).name
    x = read_images(images_path)
    if image_shape is not None and x.shape[1:] != tuple(image_shape):
        raise DataError(
            f"{images_name}: expected {image_shape[0]}x{image_shape[1]} images, "
            f"found {x.shape[1]}x{x.shape[2]}"
        )
    y = read_labels(labels_path)
    if len(x) != len(y):
        raise DataError(
            f"{images_name} has {len(x)} images but {labels_name} has {len(y)} labels"
        )
    bad = np.flatnonzero(y >= num_classes)
    if bad.size:
        raise DataError(
            f"{labels_name}: label {int(y[bad[0]])} at index {int(bad[0])} is outside 0..{num_classes - 1}"
        )
    return x[:, None, :, :], y.astype(np.int64)
