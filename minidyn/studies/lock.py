"""Claiming a study's tasks with lock files, so that any number of runners share one study.

A task (a cell's training and evaluation, or its black-box evaluation) is claimed by creating
`locks/TASK.lock` with O_CREAT | O_EXCL, which exactly one process can do, also on a shared
filesystem (NFS v3 and later create exclusively). The file holds who claimed it (host, pid,
a random token); its holder touches it every `heartbeat` seconds. A lock is stale, and may be
taken over, when its holder is a process of this host that no longer exists, or when its last
heartbeat is older than `stale_after` seconds (clocks of the hosts must roughly agree: by much
less than stale_after). A takeover is itself serialised by a `.takeover` file created the same
way, so two runners that find one stale lock cannot both take it.

Nothing another process may hold is ever deleted by name: a stale lock (or `.takeover`) is
broken by renaming it atomically to a unique name and then checking that the renamed file
holds the record that was judged stale (its token, still stale); a file that does not is put
back where it was (os.link, which fails rather than overwrite a newer claim; in the instant a
wrongly judged file is aside a fresh claim can take its place, and its holder then sees another
token at its next heartbeat and stops). A holder's heartbeat takes only a readable record with
another token for a takeover: a file it cannot read, or finds missing, is read again a few
times and then assumed still its own. A worker started
by a runner records the runner's pid ("runner"), so that a runner can tell its own and its
dead predecessor's workers from another live runner's (runner.py).
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Callable

HEARTBEAT = 30.0      # seconds between a holder's touches of its lock
STALE_AFTER = 600.0   # seconds without a heartbeat after which a lock may be taken over


class Lock:
    """A claimed lock file; `release()` deletes it (only if it is still ours)."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def still_ours(self) -> bool:
        """Whether the lock file holds our record (a file that cannot be read is not proof)."""
        record = _read_retrying(self.path)
        return record is not None and record.get("token") == self.token

    def taken_over(self) -> bool:
        """Whether another process took the lock over: only a readable record with another
        token says so; a read that fails (or a file briefly moved aside) is tried again and
        then taken for ours, so that a transient error does not kill a healthy holder."""
        record = _read_retrying(self.path)
        return record is not None and record.get("token") != self.token

    def beat(self) -> None:
        """Touch the lock file (its mtime is the heartbeat)."""
        os.utime(self.path)

    def keep_alive(self, interval: float = HEARTBEAT, lost=None) -> None:
        """Touch the lock every `interval` seconds in a daemon thread; call `lost()` and stop
        if another process took the lock over (this one was thought dead)."""
        def run():
            while not self._stop.wait(interval):
                if self.taken_over():
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
        if self.still_ours():  # a lock taken over is not even moved aside
            _remove_if(self.path, lambda aside: _token(aside) == self.token)


READ_TRIES, READ_PAUSE = 3, 0.05  # reads of a lock file before it is taken for unreadable


def holder(path: Path) -> dict:
    """The lock file's record ({"host", "pid", "token", "claimed"[, "runner"]}), {} when it is
    unreadable."""
    record = _read(path)
    return {} if record is None else record


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read_retrying(path: Path) -> dict | None:
    for attempt in range(READ_TRIES):
        record = _read(path)
        if record is not None:
            return record
        if attempt + 1 < READ_TRIES:
            time.sleep(READ_PAUSE)
    return None


def _token(path: Path) -> str | None:
    return (_read_retrying(path) or {}).get("token")


def _remove_if(path: Path, holds: Callable[[Path], bool]) -> bool:
    """Remove `path` if, once moved atomically to a unique name, it `holds` what was expected
    (checked on the moved file, which nobody else can change by name any more); otherwise put
    it back. False when there was nothing to remove or it was put back."""
    aside = path.with_name(f"{path.name}.{secrets.token_hex(8)}.aside")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if holds(aside):
        aside.unlink(missing_ok=True)
        return True
    try:
        os.link(aside, path)  # fails where a claimer created `path` meanwhile: never overwrite
    except FileExistsError:
        pass  # the record's holder sees another token at its next heartbeat and stops
    except OSError:  # a filesystem without hard links
        if not path.exists():
            os.rename(aside, path)
    aside.unlink(missing_ok=True)
    return False


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
    return pid_alive(record["pid"])


def holders_here(locks_dir: Path) -> list[dict]:
    """The records of the locks in `locks_dir` that live processes of this host hold."""
    records = [holder(path) for path in locks_dir.glob("*.lock")]
    return [r for r in records if _alive_here(r)]


def pid_alive(pid) -> bool:
    """Whether process `pid` of this host exists."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    return True


def claim(path: Path, stale_after: float = STALE_AFTER, runner: int | None = None) -> Lock | None:
    """Claim the lock `path` (taking it over when stale); None when another process holds it.
    `runner`: the pid of the runner that started this process, recorded with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "claimed": time.time()}
    if runner is not None:
        record["runner"] = runner
    if _create(path, record):
        return Lock(path, token)
    if not is_stale(path, stale_after):
        return None
    takeover = path.with_name(path.name + ".takeover")
    _break_if_stale(takeover, stale_after)  # a takeover whose process died midway
    if not _create(takeover, record):
        return None
    try:
        if not is_stale(path, stale_after):  # taken over or released and claimed meanwhile
            return None
        _break_if_stale(path, stale_after)
        return Lock(path, token) if _create(path, record) else None
    finally:
        _remove_if(takeover, lambda aside: _token(aside) == token)


def _break_if_stale(path: Path, stale_after: float) -> None:
    """Remove `path` if it is stale, and only the record judged stale (not one that replaced
    it, nor one whose holder beat meanwhile)."""
    judged = holder(path)
    if is_stale(path, stale_after):  # True also for a missing file: then nothing is moved
        _remove_if(path, lambda aside: holder(aside).get("token") == judged.get("token")
                   and is_stale(aside, stale_after))
