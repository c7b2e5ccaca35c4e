"""The one reader of `.npy` files and `.npz` archives: headers are checked before data is read.

A `.npy` file (and every member of an `.npz`, which is a zip of them) starts with a header that
declares its dtype, shape and memory order. `numpy.load` trusts it: it allocates what the header
declares, and in an `.npz` it inflates a deflated member whatever its size. Here the header is
read and checked first (a plain dtype: no objects, no structured or sub-array dtypes; a shape of
non-negative integers; for `.npz` members a name ending in ".npy"), the caller then checks dtype
and shape against what it can hold, and only then is the data read, into an array of exactly the
declared size (a short or over-long payload is refused). Nothing is ever unpickled.

    header = npy_header(path)                         # Header(dtype, shape, fortran_order)
    fosc = read_npy(path, kinds="f", ndim=1, max_bytes=2**30)
    headers = npz_headers(path)                       # {"model/fc1.weight": Header, ...}
    arrays = read_npz(path, headers, keys=["meta"])   # only these members' data is read

Every problem is raised as `error` (a `minidyn.errors.MinidynError` subclass, `DataError` by
default) with one line, "PATH is not a valid WHAT: PROBLEM", that names the file and the member.
"""
from __future__ import annotations

import math
import os
import stat
import zipfile
import zlib
from typing import IO, Iterable, NamedTuple

import numpy as np
from numpy.lib import format as npy_format

from minidyn.errors import DataError

__all__ = ["Header", "plain_dtype", "npy_header", "read_npy", "npz_headers", "read_npz"]

# dtype kinds a plain array may have: bool, integers, floats, complex, byte and unicode strings
_PLAIN_KINDS = "biufcSU"
# errors the header parser, a damaged zip or a failing inflate raise on hostile bytes
_PARSE_ERRORS = (ValueError, TypeError, SyntaxError, OverflowError, KeyError, IndexError,
                 MemoryError, RecursionError, EOFError, UnicodeError)
_CHUNK = 1 << 20
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError,
               EOFError, RuntimeError, ValueError, OSError)


class Header(NamedTuple):
    """A checked `.npy` header: a plain dtype and a shape of non-negative ints."""

    dtype: np.dtype
    shape: tuple
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        """The payload's size in bytes (exact, as a Python int: no overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize


def plain_dtype(descr, kinds: str = _PLAIN_KINDS) -> np.dtype:
    """`np.dtype(descr)` if it is a plain dtype of one of `kinds`; ValueError otherwise."""
    try:
        dtype = np.dtype(descr)
    except _PARSE_ERRORS as exc:
        raise ValueError(f"{descr!r} is not a dtype ({type(exc).__name__})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in kinds or dtype.itemsize == 0:
        raise ValueError(f"dtype {dtype} is not a plain {_kinds_text(kinds)} dtype")
    return dtype


def _kinds_text(kinds: str) -> str:
    names = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex", "S": "bytes", "U": "str"}
    return "/".join(names[k] for k in kinds)


def _read_header(stream: IO[bytes]) -> Header:
    """The checked header at the stream's position; ValueError if there is none."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, descr = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, descr = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except _PARSE_ERRORS as exc:
        raise ValueError(f"not a .npy array ({_reason(exc)})") from None
    if not (isinstance(shape, tuple) and all(type(s) is int and s >= 0 for s in shape)):
        raise ValueError(f"the .npy header declares the shape {shape!r}")
    return Header(plain_dtype(descr), shape, bool(fortran))


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _read_data(stream: IO[bytes], header: Header) -> np.ndarray:
    """The payload the header declares, read into a fresh array; ValueError if short or long."""
    flat = np.empty(math.prod(header.shape), dtype=header.dtype)
    view = memoryview(flat.view(np.uint8))
    got = 0
    while got < header.nbytes:  # in chunks: a zip member's readinto reads into a temporary
        n = stream.readinto(view[got:got + _CHUNK])
        if not n:
            raise ValueError(f"truncated: {got} of the {header.nbytes} data bytes its header declares")
        got += n
    if stream.read(1):
        raise ValueError(f"more data than the {header.nbytes} bytes its header declares")
    if header.fortran_order:
        return flat.reshape(header.shape[::-1]).transpose()
    return flat.reshape(header.shape)


def _check(header: Header, kinds: str, ndim: int | None, max_bytes: int) -> None:
    if header.dtype.kind not in kinds:
        raise ValueError(f"it holds {header.dtype}, not {_kinds_text(kinds)} numbers")
    if ndim is not None and len(header.shape) != ndim:
        raise ValueError(f"it has shape {header.shape}, not a {ndim}-d array")
    if header.nbytes > max_bytes:
        raise ValueError(f"its header declares {header.shape} {header.dtype} ({header.nbytes} bytes), "
                         f"more than the {max_bytes} allowed")


def _open_regular(path: str | os.PathLike, error: type[Exception]) -> IO[bytes]:
    """The file opened for reading, if it is a regular file (not a FIFO, device or directory)."""
    name = os.fspath(path)
    try:
        if not stat.S_ISREG(os.stat(name).st_mode):
            raise error(f"{name} is not a regular file")
        return open(name, "rb")
    except OSError as exc:
        raise error(f"{name} cannot be read ({exc.strerror or type(exc).__name__})") from None


def npy_header(path: str | os.PathLike, error: type[Exception] = DataError, what: str = ".npy array") -> Header:
    """The checked header of a `.npy` file (no data is read)."""
    with _open_regular(path, error) as f:
        try:
            return _read_header(f)
        except ValueError as exc:
            raise _invalid(error, path, what, exc) from None


def read_npy(path: str | os.PathLike, kinds: str = "biuf", ndim: int | None = None,
             max_bytes: int = 2**30, error: type[Exception] = DataError, what: str = ".npy array") -> np.ndarray:
    """A `.npy` file's array. Checked before its data is read: a plain dtype of `kinds`,
    `ndim` dimensions (any if None), at most `max_bytes` of data, and exactly that much data in
    the file after the header."""
    with _open_regular(path, error) as f:
        try:
            header = _read_header(f)
            _check(header, kinds, ndim, max_bytes)
            left = os.fstat(f.fileno()).st_size - f.tell()
            if left != header.nbytes:
                raise ValueError(f"its header declares {header.nbytes} data bytes, the file holds {left}")
            return _read_data(f, header)
        except ValueError as exc:
            raise _invalid(error, path, what, exc) from None


def _invalid(error: type[Exception], path, what: str, problem) -> Exception:
    """The one-line error: "PATH is not a valid WHAT: PROBLEM"."""
    return error(f"{os.fspath(path)} is not a valid {what}: {problem}")


def _open_zip(path: str | os.PathLike, error: type[Exception], what: str) -> zipfile.ZipFile:
    f = _open_regular(path, error)
    try:
        return zipfile.ZipFile(f)
    except _ZIP_ERRORS as exc:
        f.close()
        raise _invalid(error, path, what, f"not a complete zip archive ({_reason(exc)})") from None


def _member_key(info: zipfile.ZipInfo) -> str:
    if not info.filename.endswith(".npy") or info.is_dir():
        raise ValueError(f"member {info.filename!r} is not a .npy array")
    return info.filename[:-4]


def npz_headers(path: str | os.PathLike, error: type[Exception] = DataError,
                what: str = ".npz archive") -> dict[str, Header]:
    """{key: checked header} of every member of an `.npz` (key: the member name without
    ".npy"); no data is read. Every member must be a `.npy` array with a plain dtype, named
    once, whose header declares as much data as the zip says the member holds."""
    with _open_zip(path, error, what) as archive:
        headers: dict[str, Header] = {}
        for info in archive.infolist():
            try:
                key = _member_key(info)
                if key in headers:
                    raise ValueError(f"member {info.filename!r} appears twice")
                with archive.open(info) as member:
                    header = _read_header(member)
                    left = info.file_size - member.tell()
                    if header.nbytes != left:
                        raise ValueError(f"its header declares {header.nbytes} data bytes, "
                                         f"the member holds {left}")
            except ValueError as exc:
                where = "" if str(exc).startswith("member") else f"member {info.filename!r}: "
                raise _invalid(error, path, what, f"{where}{exc}") from None
            except _ZIP_ERRORS as exc:
                raise _invalid(error, path, what, f"member {info.filename!r} cannot be read "
                               f"({_reason(exc)})") from None
            headers[key] = header
        return headers


def read_npz(path: str | os.PathLike, headers: dict[str, Header], keys: Iterable[str] | None = None,
             error: type[Exception] = DataError, what: str = ".npz archive") -> dict[str, np.ndarray]:
    """{key: array} of the `keys` members (default: all of `headers`) of an `.npz` whose
    `npz_headers` the caller has checked. Each member's header is read again and must equal the
    checked one (the file may have changed in between); then exactly its declared data is read."""
    keys = list(headers if keys is None else keys)
    out = {}
    with _open_zip(path, error, what) as archive:
        for key in keys:
            try:
                with archive.open(f"{key}.npy") as member:
                    header = _read_header(member)
                    if header != headers[key]:
                        raise ValueError("its header changed while it was being read")
                    out[key] = _read_data(member, header)
            except KeyError:
                raise _invalid(error, path, what, f"no member {key + '.npy'!r}") from None
            except ValueError as exc:
                raise _invalid(error, path, what, f"member {key + '.npy'!r}: {exc}") from None
            except _ZIP_ERRORS as exc:
                raise _invalid(error, path, what, f"member {key + '.npy'!r} cannot be read "
                               f"({_reason(exc)})") from None
    return out


# --- fosc/epoch_NNN.npy: one FOSC value per training example (runs.rundir writes them) --------
_FOSC_MAX_BYTES = 1 << 30
_FOSC = "FOSC file (a 1-d float array)"


def fosc_header(path: str | os.PathLike) -> Header:
    """The header of a fosc/epoch_NNN.npy, checked to be a 1-d float array; DataError if not."""
    header = npy_header(path, what=_FOSC)
    try:
        _check(header, "f", 1, _FOSC_MAX_BYTES)
    except ValueError as exc:
        raise _invalid(DataError, path, _FOSC, exc) from None
    return header


def read_fosc(path: str | os.PathLike) -> np.ndarray:
    """A fosc/epoch_NNN.npy: a 1-d float array, NaN where an example's FOSC was not recorded,
    finite elsewhere; DataError if it is not one."""
    values = read_npy(path, kinds="f", ndim=1, max_bytes=_FOSC_MAX_BYTES, what=_FOSC)
    if np.isinf(values).any():
        raise _invalid(DataError, path, _FOSC, "it holds infinite values")
    return values
