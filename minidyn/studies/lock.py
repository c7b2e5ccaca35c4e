"""Claiming a study's tasks with lock files, so that any number of runners share one study.

A task (a cell's training and evaluation, or its black-box evaluation) is claimed by creating
`locks/TASK.lock` with O_CREAT | O_EXCL, which exactly one process can do, also on a shared
filesystem (NFS v3 and later create exclusively). The file holds who claimed it (host, pid,
a random token); its holder touches it every `heartbeat` seconds. A lock is stale, and may be
taken over, when its holder is a process of this host that no longer exists, or when its last
heartbeat is older than `stale_after` seconds (clocks of the hosts must roughly agree: by much
less than stale_after). A takeover is itself serialised by a `.takeover` file created the same
way, so two runners that find one stale lock cannot both take it.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

HEARTBEAT = 30.0      # seconds between a holder's touches of its lock
STALE_AFTER = 600.0   # seconds without a heartbeat after which a lock may be taken over


class Lock:
    """A claimed lock file; `release()` deletes it (only if it is still ours)."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def still_ours(self) -> bool:
        return holder(self.path).get("token") == self.token

    def beat(self) -> None:
        """Touch the lock file (its mtime is the heartbeat)."""
        os.utime(self.path)

    def keep_alive(self, interval: float = HEARTBEAT, lost=None) -> None:
        """Touch the lock every `interval` seconds in a daemon thread; call `lost()` and stop
        if another process took the lock over (this one was thought dead)."""
        def run():
            while not self._stop.wait(interval):
                if not self.still_ours():
                    if lost is not None:
                        lost()
                    return
                try:
                    self.beat()
                except OSError:
                    pass
        self._thread = threading.Thread(target=run, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self.still_ours():
            self.path.unlink(missing_ok=True)


def holder(path: Path) -> dict:
    """The lock file's record ({"host", "pid", "token", "claimed"}), {} when it is unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _create(path: Path, record: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def is_stale(path: Path, stale_after: float = STALE_AFTER, now: float | None = None) -> bool:
    """Whether the lock's holder is gone: a dead process of this host, or no heartbeat for
    `stale_after` seconds. A lock being written (no record yet) is stale only by age."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if _alive_here(holder(path)) is False:
        return True
    return age > stale_after


def _alive_here(record: dict) -> bool | None:
    """Whether the lock record's holder, a process of this host, is alive; None when the
    holder is of another host (or the record has no pid): only its heartbeat can tell."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    return True


def holders_here(locks_dir: Path) -> set[int]:
    """The pids of the live processes of this host that hold a lock in `locks_dir`."""
    records = [holder(path) for path in locks_dir.glob("*.lock")]
    return {r["pid"] for r in records if _alive_here(r)}


def claim(path: Path, stale_after: float = STALE_AFTER) -> Lock | None:
    """Claim the lock `path` (taking it over when stale); None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "claimed": time.time()}
    if _create(path, record):
        return Lock(path, token)
    if not is_stale(path, stale_after):
        return None
    takeover = path.with_name(path.name + ".takeover")
    if is_stale(takeover, stale_after) and takeover.exists():
        takeover.unlink(missing_ok=True)  # a takeover whose process died midway
    if not _create(takeover, record):
        return None
    try:
        if not is_stale(path, stale_after):  # taken over or released and claimed meanwhile
            return None
        path.unlink(missing_ok=True)
        return Lock(path, token) if _create(path, record) else None
    finally:
        takeover.unlink(missing_ok=True)
