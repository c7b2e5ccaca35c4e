"""Running a study: up to N tasks at once, each a worker process with cores / N threads.

    run_study(load_spec("table1.toml"), "studies/table1", jobs=2, log=print)

Tasks already done are skipped; a task held by another runner (here or on another machine
sharing the filesystem, see lock.py) is left to it, and this runner waits for it when nothing
else is left. `jobs` bounds this runner's tasks on this host, counting with its own workers
those a dead runner left running (a runner started again after `kill -9`: they go on with
their cells, and the cores are not oversubscribed); the workers of another live runner are
that runner's (each worker's lock records its runner's pid, lock.py). A worker that fails is
recorded (STUDY/failed/CELL.KIND.json, its log kept) and the study goes on; the next `study
run` tries it again. Ctrl-C or SIGTERM stops the workers (each keeps its last checkpoint) and `study run`
again continues where they stopped.

A runner registers itself in the study (lock.mark_runner) before it writes study.toml, so
that a second runner with another spec is refused in one line (StudyDir.prepare). It starts
no worker for a task another claimer is taking over (a fresh .takeover), and leaves a task
whose worker found it busy (or lost it: taken over after a suspension) for WAIT_FOR_OTHERS
seconds; `jobs` counts only fresh locks of the spec's own tasks whose holders are alive
(a reused pid is not: lock.py).

The runner reads the spec once and hands each worker the sha256 of its text; a worker refuses
a study.toml that is not that spec (SPEC_CHANGED), and the runner, which looks at study.toml
between its tasks, stops (its workers keep their checkpoints) with one line when another
`study run` rewrote it: results are computed and stamped under one spec, never two.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from minidyn.errors import MinidynError
from minidyn.files.fileio import atomic_write
from minidyn.studies.lock import HEARTBEAT, STALE_AFTER, holders_here, is_stale, process_alive, taking_over
from minidyn.studies.spec import Spec
from minidyn.studies.tasks import SPEC_CHANGED, StudyDir, Task, digest
from minidyn.studies.worker import BUSY

POLL = 1.0             # seconds between looks at the workers
WAIT_FOR_OTHERS = 10.0  # seconds between looks at tasks other runners hold


class Stopped(Exception):
    """Ctrl-C or SIGTERM: the workers were stopped. exit_code: 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, exit_code: int = 130):
        super().__init__(exit_code)
        self.exit_code = exit_code


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_env(jobs: int) -> dict:
    """The environment of a worker: cores / jobs threads for every thread pool."""
    threads = str(max(1, cores() // jobs))
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = threads
    return env


def run_study(spec: Spec, out: str | Path, jobs: int = 1, *, stale_after: float = STALE_AFTER,
              log: Callable[[str], None] = print) -> list[Task]:
    """Run every task of `spec` in `out` that is not done; returns the tasks that failed or
    could not run (a dependency failed). Raises Stopped on Ctrl-C / SIGTERM, MinidynError when
    another `study run` rewrote the study's study.toml meanwhile."""
    study = StudyDir(out)
    mark = study.prepare(spec, mark=True, stale_after=stale_after)
    mark.keep_alive(min(HEARTBEAT, stale_after / 4))
    orphans = study.orphans(spec)
    if orphans:
        log(f"warning: {study.cells_dir} holds runs that no cell of this spec is named after "
            f"(kept, not used): {', '.join(orphans)}; an edited grid, or names from before every "
            "grid key named a cell: rename a directory to its cell's name to keep its training")
    running: dict[Task, subprocess.Popen] = {}
    failed: list[Task] = []
    resting: dict[Task, float] = {}  # a task another process held when its worker tried: until when to leave it
    signals = _Signals()
    previous = signal.signal(signal.SIGTERM, signals.handler)
    try:
        while True:
            _check_spec(study, spec, running)
            pending = [t for t in study.tasks(spec) if not study.done(spec, t) and t not in failed]
            blocked = [t for t in pending if t.kind == "blackbox" and _depends_on_failed(spec, t, failed)]
            startable = [t for t in pending if t not in running and t not in blocked
                         and resting.get(t, 0) <= time.time()
                         and study.ready(spec, t) and claimable(study, t, stale_after)]
            for task in startable[: max(0, jobs - len(running) - _others_here(study, spec, running, stale_after))]:
                with signals.starting():
                    running[task] = _start(study, spec, task, jobs, stale_after)
                log(f"started {task.name} (log: {study.log(task)})")
            if not running:
                if not [t for t in pending if t not in blocked]:
                    return failed + blocked
                time.sleep(WAIT_FOR_OTHERS)  # what is left is held by other runners
                continue
            time.sleep(POLL)
            for task, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[task]
                if proc.returncode == BUSY:
                    resting[task] = time.time() + WAIT_FOR_OTHERS
                _finished(study, spec, task, proc.returncode, running, failed, log)
    except (KeyboardInterrupt, Stopped) as stop:
        _stop(running)
        raise Stopped(getattr(stop, "exit_code", 130)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        mark.release()


def _finished(study: StudyDir, spec: Spec, task: Task, code: int, running: dict, failed: list,
              log: Callable[[str], None]) -> None:
    """Take note of a worker that exited with `code`."""
    if code == SPEC_CHANGED:
        _check_spec(study, spec, running)
    if code == 0 and study.done(spec, task):
        log(f"finished {task.name}")
    elif code == BUSY:
        log(f"{task.name} is being run by another process")
    else:  # 0 without the result this runner expects is a failure, not a task to start again
        failed.append(task)
        record_failure(study, task, code)
        why = "exit 0 but no result made with this spec" if code == 0 else f"exit {code}"
        log(f"FAILED {task.name} ({why}; log: {study.log(task)})")


def _check_spec(study: StudyDir, spec: Spec, running: dict[Task, subprocess.Popen]) -> None:
    """Stop the workers and raise MinidynError where study.toml is no longer `spec` (one that
    cannot be read for a moment is no proof: looked at again next time)."""
    now = study.spec_digest()
    if now is not None and now != digest(spec.text):
        _stop(running)
        running.clear()
        raise MinidynError(f"{study.spec_file} changed while this runner ran it (another `study run` "
                           "with an edited spec?); stopped, checkpoints kept: run the study again "
                           "with the spec you mean")


class _Signals:
    """SIGTERM raises Stopped, except while a worker is started and recorded in `running`: raised
    between its Popen and the record, it would leave that worker running on after the runner
    stopped, holding its task. There the signal is held, and raised once the worker is recorded
    (and so stopped with the others)."""

    def __init__(self):
        self.in_start, self.held = False, None

    def handler(self, signum, frame):
        if self.in_start:
            self.held = signum
        else:
            raise Stopped(128 + signum)

    @contextmanager
    def starting(self):
        self.in_start = True
        try:
            yield
        finally:
            self.in_start = False
        if self.held is not None:
            raise Stopped(128 + self.held)


def _others_here(study: StudyDir, spec: Spec, running: dict[Task, subprocess.Popen],
                 stale_after: float) -> int:
    """How many of the study's tasks live processes of this host hold that count against this
    runner's jobs and are not its running workers: those of a runner that is dead (left running
    by a killed predecessor) and those that record no runner; another live runner's workers
    are that runner's to count. Only fresh locks of the spec's tasks count (lock.holders_here:
    a reused pid, a silent holder, a task the spec no longer has do not)."""
    ours, me = {proc.pid for proc in running.values()}, os.getpid()
    names = {study.lock(t).name for t in study.tasks(spec)}
    return sum(1 for record in holders_here(study.locks_dir, stale_after, names) if record["pid"] not in ours
               and (record.get("runner") == me
                    or not process_alive(record.get("runner"), record.get("runner_started"))))


def claimable(study: StudyDir, task: Task, stale_after: float) -> bool:
    """Whether a worker may claim the task: no lock, or a stale one that no other claimer is
    taking over now (its worker would only find it busy)."""
    lock = study.lock(task)
    return (not lock.exists() or is_stale(lock, stale_after)) and not taking_over(lock, stale_after)


def _depends_on_failed(spec: Spec, task: Task, failed: list[Task]) -> bool:
    needed = {task.cell.name, spec.surrogate_of(task.cell).name}
    return any(f.kind == "train" and f.cell.name in needed for f in failed)


def _start(study: StudyDir, spec: Spec, task: Task, jobs: int, stale_after: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "minidyn.studies.worker", str(study.path),
               task.cell.name, task.kind, "--stale-after", repr(stale_after),
               "--spec-digest", digest(spec.text), "--runner-pid", str(os.getpid())]
    with open(study.log(task), "ab") as log_file:
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=worker_env(jobs))


def record_failure(study: StudyDir, task: Task, code: int) -> None:
    try:
        tail = study.log(task).read_text(errors="replace").splitlines()[-5:]
    except OSError:
        tail = []
    record = {"task": task.name, "exit_code": code, "log": str(study.log(task)), "last_lines": tail,
              "time": time.time()}
    atomic_write(study.failure(task), lambda f: json.dump(record, f, indent=2))


def _stop(running: dict[Task, subprocess.Popen]) -> None:
    """SIGTERM every worker (each stops with its last checkpoint kept) and wait for them."""
    for proc in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in running.values():
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
