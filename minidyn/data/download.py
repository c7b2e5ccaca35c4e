"""Fetch the official dataset files and verify them by SHA-256 (and MD5 where published).

``download(name, data_dir)`` puts the official, still-compressed files in ``data_dir`` itself,
which is where :func:`minidyn.data.load_dataset` looks for them:

* mnist / fashion-mnist: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``;
* cifar10: ``cifar-10-binary.tar.gz`` (read as is; no extraction needed).

Each file goes to a temporary file in ``data_dir`` and is renamed into place only when its
hashes match, so an interrupted or corrupted download never leaves a file under the real name.
A file already present with the right hashes is not fetched again.

Where the hashes come from (none is made up; they were looked up, not computed here):

* SHA-256: TensorFlow Datasets' recorded checksums,
  ``tensorflow_datasets/url_checksums/{mnist,fashion_mnist,cifar10}.txt`` in
  github.com/tensorflow/datasets, which also give the file sizes (MNIST 9912422 / 28881 /
  1648877 / 4542 bytes, Fashion-MNIST 26421880 / 29515 / 4422102 / 5148, CIFAR-10 170052171).
  TFDS records the MNIST hashes for its Google Cloud mirror (storage.googleapis.com/
  cvdf-datasets/mnist/); the same SHA-256 values are used by other projects for the
  ossci-datasets mirror and the original yann.lecun.com files, which torchvision also treats as
  identical (one MD5 per file for both mirrors).
* MD5, checked as well: MNIST from torchvision (``torchvision/datasets/mnist.py``), Fashion-MNIST
  from the table in its README (github.com/zalandoresearch/fashion-mnist), CIFAR-10 from the
  dataset page itself (https://www.cs.toronto.edu/~kriz/cifar.html, binary version).

Fashion-MNIST's S3 website endpoint serves plain http only; the hashes are what make that safe.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from minidyn.errors import ConfigError, DataError

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str
    md5: str | None = None


@dataclass(frozen=True)
class Source:
    mirrors: tuple[str, ...]  # base URLs, tried in order; each ends with "/"
    files: tuple[RemoteFile, ...]


SOURCES: dict[str, Source] = {
    "mnist": Source(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz",
                       "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                       "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz",
                       "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                       "d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz",
                       "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                       "9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz",
                       "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                       "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "fashion-mnist": Source(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz",
                       "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                       "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz",
                       "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                       "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz",
                       "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                       "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz",
                       "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                       "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    ),
    "cifar10": Source(
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files=(
            RemoteFile("cifar-10-binary.tar.gz",
                       "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                       "c32a1d4ab5d03f1284b67883e8d87530"),
        ),
    ),
}

Fetch = Callable[[str, str], None]
"""``fetch(url, dest)``: write the bytes at ``url`` to the file ``dest``; raise on failure."""

_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   TimeoutError, socket.timeout, socket.gaierror)


def default_data_dir(name: str) -> Path:
    """Where a dataset lives when no ``--data-dir`` is given.

    ``$XDG_CACHE_HOME/minidyn/NAME`` (``~/.cache/minidyn/NAME``), except fashion-mnist, which
    uses Debian's ``dataset-fashion-mnist`` package directory when that holds the files.
    """
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST_DIR.is_dir() and any(
        (DEBIAN_FASHION_MNIST_DIR / (IDX_FILES[0] + ext)).is_file() for ext in ("", ".gz")
    ):
        return DEBIAN_FASHION_MNIST_DIR
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "minidyn" / name


def urllib_fetch(url: str, dest: str, timeout: float = 60.0) -> None:
    """The default ``fetch``: stream ``url`` to ``dest`` with urllib."""
    request = urllib.request.Request(url, headers={"User-Agent": "minidyn"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def file_hashes(path: str | os.PathLike) -> tuple[str, str]:
    """(sha256, md5) hex digests of a file."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _mismatch(spec: RemoteFile, sha: str, md5: str) -> str | None:
    if sha != spec.sha256:
        return f"SHA-256 mismatch: expected {spec.sha256}, got {sha}"
    if spec.md5 is not None and md5 != spec.md5:
        return f"MD5 mismatch: expected {spec.md5}, got {md5}"
    return None


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_present(name: str, data_dir: str | os.PathLike) -> bool:
    """True when every official file of ``name`` is in ``data_dir`` with the right hashes."""
    source = SOURCES[name]
    for spec in source.files:
        path = Path(data_dir) / spec.name
        if not path.is_file() or _mismatch(spec, *file_hashes(path)) is not None:
            return False
    return True


def download(
    name: str,
    data_dir: str | os.PathLike | None = None,
    fetch: Fetch | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Fetch the official files of ``name`` into ``data_dir``; return their paths.

    ``mnist-sample`` is embedded in the package: nothing to fetch, returns ``[]``.
    Raises ConfigError for an unknown name, DataError for a hash mismatch (the downloaded
    file is deleted), a network failure (the message says which files to put where), or a
    directory that cannot be written.
    """
    if name == "mnist-sample":
        return []
    if name not in SOURCES:
        choices = ", ".join(("mnist-sample",) + tuple(SOURCES))
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {choices}")
    fetch = fetch or urllib_fetch
    source = SOURCES[name]
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(name)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {data_dir}: {_one_line(e.strerror or e)}") from None

    say = log or (lambda line: None)
    paths = []
    for spec in source.files:
        dest = data_dir / spec.name
        if dest.is_file() and _mismatch(spec, *file_hashes(dest)) is None:
            say(f"{dest}: already present, hashes verified")
        else:
            _fetch_verified(source, spec, dest, fetch, say)
        paths.append(dest)
    return paths


def _fetch_verified(source, spec, dest: Path, fetch: Fetch, say: Callable[[str], None]) -> None:
    """Download `spec` from the first mirror that answers into `dest`, through a temporary file
    that gets its real name only once its hashes match; DataError otherwise."""
    errors = []
    for mirror in source.mirrors:
        url = mirror + spec.name
        try:
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{spec.name}.", suffix=".part")
            os.close(fd)
        except OSError as e:
            raise DataError(f"cannot write to {dest.parent}: {_one_line(e.strerror or e)}") from None
        try:
            say(f"downloading {url}")
            try:
                fetch(url, tmp)
            except _NETWORK_ERRORS as e:
                errors.append(f"{url}: {_one_line(_reason(e))}")
                continue
            except OSError as e:
                raise DataError(f"{spec.name}: cannot write {tmp}: {_one_line(e.strerror or e)}") from None
            problem = _mismatch(spec, *file_hashes(tmp))
            if problem is not None:
                raise DataError(f"{spec.name}: {problem} (downloaded from {url}; deleted)")
            os.replace(tmp, dest)
            say(f"{dest}: hashes verified")
            return
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    names = ", ".join(f.name for f in source.files)
    raise DataError(f"cannot download {spec.name} ({errors[-1] if errors else 'no mirror'}); "
                    f"without network, put {names} (from {source.mirrors[0]}) into {dest.parent}")
