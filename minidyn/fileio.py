"""Crash-safe file writing, shared by run directories, checkpoints and downloads.

`atomic_write` writes to a temporary file in the target's directory, flushes and fsyncs it,
then renames it over the target: a crash at any moment leaves the old file or the new one,
never a torn mix. The directory is fsynced too, so the rename itself survives a power cut.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[object], None], mode: str = "w") -> None:
    """Call write(f) on a temporary file, then atomically replace `path` with it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
