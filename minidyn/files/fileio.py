"""Crash-safe file writing, shared by run directories, checkpoints and downloads.

`atomic_write` writes to a temporary file in the target's directory, flushes and fsyncs it,
then renames it over the target: a crash at any moment leaves the old file or the new one,
never a torn mix. The directory is fsynced too, so the rename itself survives a power cut.

The temporary file of target NAME is named `.NAME.minidyn-XXXXXXXX.tmp` (`temporary_target`
recognises exactly these names), so that a clean-up after a crash removes only minidyn's own
temporary files, never a user's `.notes.tmp`.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

from minidyn.errors import MinidynError

_UMASK = os.umask(0)
os.umask(_UMASK)

TEMP_MARK = "minidyn-"
# mkstemp's random part: 8 characters of tempfile._RandomNameSequence's alphabet
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\." + TEMP_MARK + r"[a-z0-9_]{8}\.tmp")


def temporary_target(name: str) -> str | None:
    """The target name whose `atomic_write` temporary file is called `name`; None if `name` is
    not such a temporary file."""
    match = _TEMP_NAME.fullmatch(name)
    return match["target"] if match else None


def atomic_write(path: str | os.PathLike, write: Callable[[object], None], mode: str = "w") -> None:
    """Call write(f) on a temporary file, then atomically replace `path` with it.

    An OSError while creating, writing, syncing or renaming the temporary file (a full disk, a
    read-only filesystem, a name too long) is a MinidynError naming `path` and the OS reason;
    the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TEMP_MARK}", suffix=".tmp")
        with os.fdopen(fd, mode) as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise MinidynError(_cannot_write(path, exc)) from None
    except BaseException:
        _remove(tmp)
        raise
    sync_directory(path.parent)


def _cannot_write(path: Path, exc: OSError) -> str:
    kept = "the previous version is kept" if os.path.isfile(path) else "nothing was written"
    return f"cannot write {path}: {exc.strerror or exc} ({kept})"


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def sync_directory(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
