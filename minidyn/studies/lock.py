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
holds the record that was judged stale (its token, still stale). Only a file that was judged
is moved: one that is missing when judged, or is another file (inode, modification time) by
the time it would be moved, is left alone, so that a fresh claim is not moved aside. A moved
file that turns out not to be the one judged (replaced in the instant between the last check
and the rename) is put back (os.link, which fails rather than overwrite a newer claim; a fresh
claim made while it was aside keeps the name, and the moved file's holder then sees another
token at its next heartbeat and stops). A holder's heartbeat takes only a readable record with
another token for a takeover: a file it cannot read, or finds missing, is read again a few
times and then assumed still its own. A worker started
by a runner records the runner's pid ("runner"), so that a runner can tell its own and its
dead predecessor's workers from another live runner's (runner.py).

Liveness cannot be fooled by a reused pid: a record holds its process's start ("started": the
boot id and the start time in clock ticks, from /proc), and a pid of this host that is alive
but started at another time is not the holder. A record without a start (hand-written, or
where /proc is missing) is alive only if its process's command line names minidyn (where
/proc tells). A pid <= 0 is no process; a heartbeat more than stale_after in the future is
stale; a lock with no record in it (empty, not JSON, not a record minidyn writes: its
claimer died between creating and writing it, or someone else wrote it) is stale once
UNWRITTEN_GRACE seconds old. A lock file that is not a regular file (a FIFO would block a
read), or is larger than MAX_LOCK_BYTES, is no lock minidyn writes: `check_locks` refuses it
in one line and the readers here never open it blocking. A runner records itself the same
way in `locks/runner-TOKEN.runner` (mark_runner, with the sha256 of its spec), so that a
second runner with another spec can be refused (tasks.StudyDir.prepare).
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

from minidyn.errors import ConfigError
from minidyn.files.fileio import atomic_write
from minidyn.files.readers import read_lock

HEARTBEAT = 30.0      # seconds between a holder's touches of its lock
STALE_AFTER = 600.0   # seconds without a heartbeat after which a lock may be taken over
UNWRITTEN_GRACE = 10.0  # seconds a lock may hold no record (its claimer writes it at once)


class Lock:
    """A claimed lock file; `release()` deletes it (only if it is still ours)."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token
        self.lost = False  # set when the heartbeat found the lock taken over
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
                    self.lost = True
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
    """The lock file's record ({"host", "pid", "token", "claimed"[, "runner", "started",
    "runner_started"]}), {} when it holds none or cannot be read."""
    record = _read(path)
    return {} if record is None else record


def _read(path: Path) -> dict | None:
    try:
        return read_lock(path)
    except (OSError, ConfigError):
        return None


def _has_no_record(path: Path) -> bool:
    """Whether the lock file was read and holds no record (an I/O error is no proof)."""
    try:
        return read_lock(path) is None
    except (OSError, ConfigError):
        return False


def check_locks(locks_dir: Path) -> None:
    """ConfigError naming the first lock (or .takeover) file in `locks_dir` that is no lock
    minidyn writes: not a regular file, or larger than MAX_LOCK_BYTES (readers.read_lock)."""
    if not locks_dir.is_dir():
        return
    for path in sorted(locks_dir.iterdir()):
        if path.name.endswith((".lock", ".takeover")):
            try:
                read_lock(path)
            except OSError:
                pass  # gone meanwhile, or a transient error: the readers see to it


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
    """Whether the lock's holder is gone: a dead process of this host (or another process
    under its pid), no heartbeat for `stale_after` seconds, a heartbeat more than `stale_after`
    in the future, or no record in the file UNWRITTEN_GRACE seconds after it was made."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if age < -stale_after:  # clocks agree to much less than stale_after: not a heartbeat
        return True
    if age > min(UNWRITTEN_GRACE, stale_after) and _has_no_record(path):
        return True
    if _alive_here(holder(path)) is False:
        return True
    return age > stale_after


def taking_over(path: Path, stale_after: float = STALE_AFTER) -> bool:
    """Whether another claimer is taking the lock `path` over now (a fresh `.takeover`)."""
    takeover = path.with_name(path.name + ".takeover")
    return takeover.exists() and not is_stale(takeover, stale_after)


def _alive_here(record: dict) -> bool | None:
    """Whether the lock record's holder, a process of this host, is alive; None when the
    holder is of another host (or the record has no pid): only its heartbeat can tell."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return None
    return process_alive(record["pid"], record.get("started"))


def holders_here(locks_dir: Path, stale_after: float = STALE_AFTER, names=None) -> list[dict]:
    """The records of the fresh locks in `locks_dir` that live processes of this host hold;
    `names`: only the locks of these file names (a spec's tasks)."""
    records = [holder(path) for path in locks_dir.glob("*.lock")
               if (names is None or path.name in names) and not is_stale(path, stale_after)]
    return [r for r in records if _alive_here(r)]


def pid_alive(pid) -> bool:
    """Whether process `pid` of this host exists (a pid <= 0 is no process: kill(0, 0) would
    signal this process group)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    except OverflowError:
        return False
    return True


def process_alive(pid, started: str | None) -> bool:
    """Whether the process of this host that recorded itself as (`pid`, `started`) lives: pid
    alive and, where /proc tells, started at `started` (a reused pid is another process) or,
    without a recorded start, a process whose command line names minidyn."""
    if not pid_alive(pid):
        return False
    if started is not None:
        now = process_start(pid)
        return now is None or now == started
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"minidyn" in f.read(1 << 16)
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc here: the pid is all there is
    except OSError:
        return True


def process_start(pid: int) -> str | None:
    """"BOOT_ID:TICKS": this boot's id and when process `pid` started (clock ticks since boot,
    /proc/PID/stat field 22); None where /proc does not tell (not Linux, no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


def claim(path: Path, stale_after: float = STALE_AFTER, runner: int | None = None) -> Lock | None:
    """Claim the lock `path` (taking it over when stale); None when another process holds it.
    `runner`: the pid of the runner that started this process, recorded with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "claimed": time.time()}
    started = process_start(os.getpid())
    if started is not None:
        record["started"] = started
    if runner is not None:
        record["runner"] = runner
        runner_started = process_start(runner)
        if runner_started is not None:
            record["runner_started"] = runner_started
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
    """Remove `path` if it is stale, and only the file judged stale: not one that replaced it,
    nor one whose holder beat meanwhile. A missing file is judged nothing, and a file that
    changed while it was judged is not moved: moving a file that turns out fresh frees its name
    until it is put back, and a claimer that creates it then holds the lock beside its owner
    (two claimers of one stale lock both won on a 16-core machine before this check)."""
    judged_file = _identity(path)
    if judged_file is None:
        return
    judged = holder(path)
    if is_stale(path, stale_after) and _identity(path) == judged_file:
        _remove_if(path, lambda aside: _identity(aside) == judged_file
                   and holder(aside).get("token") == judged.get("token") and is_stale(aside, stale_after))


def _identity(path: Path) -> tuple | None:
    """(device, inode, modification time in ns) of the file at `path`, None when there is none:
    a file created in its place, or touched by its holder's heartbeat, has another. (Not the
    change time: the rename that moves a file aside changes it.)"""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns


# --- runners ------------------------------------------------------------------------------------
def mark_runner(locks_dir: Path, spec_digest: str) -> Lock:
    """Record in `locks_dir` that a runner of the spec with sha256 `spec_digest` is alive here
    (locks/runner-TOKEN.runner, a lock record with "spec"); its `keep_alive` is its heartbeat
    and `release` ends it."""
    token = secrets.token_hex(8)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "claimed": time.time(),
              "spec": spec_digest}
    started = process_start(os.getpid())
    if started is not None:
        record["started"] = started
    path = locks_dir / f"runner-{token}.runner"
    # whole or not at all (a temporary file renamed into place): a runner that looks while this
    # one registers must see its record, not an empty file it would take for no runner
    atomic_write(path, lambda f: json.dump(record, f))
    return Lock(path, token)


def live_runners(locks_dir: Path, stale_after: float = STALE_AFTER) -> list[dict]:
    """The records of the runners of `locks_dir`'s study that are alive (mark_runner); the
    marks of dead ones are removed."""
    found = []
    for path in sorted(locks_dir.glob("runner-*.runner")) if locks_dir.is_dir() else []:
        if is_stale(path, stale_after):
            _break_if_stale(path, stale_after)
        else:
            found.append(holder(path))
    return [r for r in found if r]

