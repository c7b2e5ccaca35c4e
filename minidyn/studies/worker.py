"""One task of a study, in its own process: claim it, do it, write its result, release it.

    run_task(StudyDir("studies/x"), "dynamic_seed-0", "train", reporter)

A training task trains the cell (`train_run` with resume: a killed cell continues from its
last checkpoint, exactly) and then evaluates it as [eval] says: every attack at every eps, on
the last checkpoint and on the best one on validation. A black-box task evaluates the cell's
checkpoints under the attacks crafted on its surrogate's (the same kind of checkpoint), at the
cell's training eps. Results go to the cell's study-eval*.json in one atomic write, so a task
killed at any moment has either its whole result or none.

The runner starts each worker as a process of this module (`main`, the library's entry point):

    python -m minidyn.studies.worker STUDY_DIR CELL {train,blackbox} [--stale-after S]
        [--spec-digest SHA256] [--runner-pid PID] [--checkpoint-on-signal]

Exit codes: 0 done; BUSY (75) another process holds the task, or took it over from this one
(thought dead: suspended past --stale-after, e.g. Slurm suspend or a paused VM; this one then
writes nothing more, and its runner does not count the task failed); SPEC_CHANGED (78)
study.toml is not the runner's spec; 143 SIGTERM (the lock released, the last checkpoint kept); 1 another
error, one line `Error: ...` on stderr, as `minidyn` prints it. With --checkpoint-on-signal (a
Slurm job: minidyn/studies/slurm.py) SIGUSR1 and SIGTERM ask the task to stop instead: a training
stops after the SGD step in progress and saves a mid-epoch checkpoint there (train_run's `stop`),
an evaluation stops at once (it is done again); the lock is released and the exit code is
CHECKPOINTED (79): run the task again and it resumes from that step, exactly.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import os
import signal
import sys
import socket
import time
from pathlib import Path

import click

from minidyn.data import load_dataset
from minidyn.errors import ConfigError, MinidynError
from minidyn.evaluation.checkpoints import load_checkpoint
from minidyn.evaluation.evaluate import evaluate_attacks, sanity_flags
from minidyn.runs import train_run
from minidyn.runs.loop import RunStopped
from minidyn.runs.reporter import Reporter
from minidyn.runs.rundir import LOCK_NAME
from minidyn.files.names import BEST_NAMES, CHECKPOINT_NAMES
from minidyn.studies.console import ConsoleReporter
from minidyn.studies.examples import write_examples
from minidyn.studies.lock import STALE_AFTER, claim
from minidyn.studies.spec import Spec
from minidyn.studies.tasks import SpecChanged, StudyDir, Task, digest, settings, write_result

BUSY = 75  # exit code of a worker whose task another process holds (EX_TEMPFAIL)
CHECKPOINTED = 79  # exit code of a worker stopped by a signal with --checkpoint-on-signal


class TaskBusy(MinidynError):
    exit_code = BUSY


class TaskLost(TaskBusy):
    """The task's lock was taken over: this worker was thought dead (suspended past
    --stale-after). It stops at once and writes no result; the new holder does the task."""


class Checkpointed(Exception):
    """The task stopped when a signal asked it to (StopRequest): its training's checkpoint
    saved at the step it had reached, or its evaluation left to be done again."""


class StopRequest:
    """SIGUSR1 or SIGTERM asking a task to stop (--checkpoint-on-signal): while the task trains,
    the training stops after the SGD step in progress with a mid-epoch checkpoint (train_run asks
    this object after every step); anywhere else the task stops at once (Checkpointed)."""

    def __init__(self):
        self.asked: str | None = None  # the name of the signal that asked
        self.training = False

    def __call__(self) -> bool:
        return self.asked is not None

    def handle(self, signum, frame):
        lost = [lock for lock in _HELD if lock.lost]
        if lost:  # the heartbeat's SIGTERM: the task was taken over, nothing may be written
            _on_sigterm(signum, frame)
        self.asked = signal.Signals(signum).name
        if not self.training:
            raise Checkpointed(f"stopped by {self.asked} (not training: the task is done again when run again)")


RUN_DIR_WAIT = 1.0  # seconds between looks at a cell's run directory another process still holds


def run_task(study: StudyDir, cell_name: str, kind: str, reporter: Reporter | None = None,
             stale_after: float = STALE_AFTER, heartbeat: float | None = None, *,
             spec: Spec | None = None, spec_digest: str | None = None,
             runner: int | None = None, stop: StopRequest | None = None) -> None:
    """Claim the task (TaskBusy when another process holds it), do it, release it; the
    reporter is told when the task was claimed and hears the training. `spec`: the study's
    spec as read once for this task (default: read now), which the whole task uses;
    `spec_digest`: the sha256 of the runner's spec text (SpecChanged when `spec` is not it);
    `runner`: the runner's pid, recorded in the lock; `stop`: asked during the training
    (Checkpointed once it stopped it, the checkpoint saved)."""
    spec = spec if spec is not None else study.spec()
    if spec_digest is not None and digest(spec.text) != spec_digest:
        raise SpecChanged(f"{study.spec_file} is not the spec the runner runs (another `study run` "
                          f"rewrote it); task {cell_name}.{kind} not started")
    cells = {c.name: c for c in spec.cells()}
    if cell_name not in cells or kind not in ("train", "blackbox"):
        raise ConfigError(f"{study.path} has no task {cell_name}.{kind}")
    task = Task(cells[cell_name], kind)
    lock = claim(study.lock(task), stale_after, runner=runner)
    if lock is None:
        raise TaskBusy(f"task {task.name} is being run by another process")
    _HELD[:] = [lock]
    if study.done(spec, task):  # finished by another runner since this one looked
        lock.release()
        return
    # the lock's holder must stop if it was taken over (it was thought dead)
    lock.keep_alive(heartbeat or min(30.0, stale_after / 4), lost=lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        study.failure(task).unlink(missing_ok=True)
        started = time.time()
        if reporter is not None:
            reporter.note(f"{time.strftime('%Y-%m-%d %H:%M:%S')} claimed {task.name} "
                          f"(host {socket.gethostname()}, pid {os.getpid()}, {threads()} threads)")
        if kind == "train":
            _wait_for_run_dir(study.cell_dir(task.cell), lock, reporter)
            _train(study, task, reporter, stop)
            results = white_box(study, spec, task)
        else:
            results = black_box(study, spec, task)
        _check_still_ours(lock, task)
        write_result(study.result(task), {"settings": settings(spec, task), "results": results,
                                          "seconds": time.time() - started})
    finally:
        lock.release()


def _train(study: StudyDir, task: Task, reporter: Reporter | None, stop: StopRequest | None) -> None:
    """The cell's training (resumed from its last checkpoint); with `stop`, Checkpointed once a
    signal stopped it (the checkpoint saved at that step, or the training over)."""
    if stop is None:
        train_run(task.cell.config(), study.cell_dir(task.cell), resume=True, reporter=reporter)
        return
    stop.training = True
    try:
        train_run(task.cell.config(), study.cell_dir(task.cell), resume=True, reporter=reporter, stop=stop)
    except RunStopped as stopped:
        raise Checkpointed(f"{stop.asked}: {task.name} {stopped}") from None
    finally:
        stop.training = False
    if stop():
        raise Checkpointed(f"{stop.asked}: {task.name} trained, its evaluation left for the next run")


def threads() -> str:
    """The thread count of this process's thread pools (OMP_NUM_THREADS, which the runner sets
    to cores / jobs), as the task log records it: results are bit-identical across a resume
    only with the same count (docs/studies.md)."""
    return os.environ.get("OMP_NUM_THREADS", "default")


def _check_still_ours(lock, task: Task) -> None:
    """TaskLost where the task's lock was taken over: the new holder writes the result."""
    if lock.lost or lock.taken_over():
        lock.lost = True
        raise TaskLost(f"task {task.name} was taken over by another process (this one was thought "
                       "dead: suspended past --stale-after?); stopped without writing its result")


def _wait_for_run_dir(directory: Path, lock, reporter: Reporter | None) -> None:
    """Wait while another process still holds the cell's run directory (its run lock, which
    `train_run` takes without waiting): the holder this task was taken over from, suspended
    past --stale-after; resumed, it finds the task lost and lets go. TaskLost if this task is
    taken over meanwhile."""
    path, said = directory / LOCK_NAME, False
    while True:
        try:  # read-write: NFS emulates flock with fcntl locks, which want it for LOCK_EX
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return  # no run lock (or none this process may take): train_run sees to it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return
        finally:
            os.close(fd)
        if not said and reporter is not None:
            reporter.note(f"waiting for {directory} (the process this task was taken over from still holds it)")
            said = True
        time.sleep(RUN_DIR_WAIT)
        if lock.lost:
            raise TaskLost(f"{directory}: the task was taken over while it waited for the run directory")


def _checkpoints(study: StudyDir, spec, task: Task) -> dict[str, Path]:
    cfg = task.cell.config()
    names = {"last": CHECKPOINT_NAMES[cfg.backend], "best": BEST_NAMES[cfg.backend]}
    return {k: study.cell_dir(task.cell) / names[k] for k in spec.eval.checkpoints}


def white_box(study: StudyDir, spec, task: Task) -> dict:
    """{checkpoint: {"epoch", "seconds", "eps": {eps: result}, "examples": {"file", "token"}}} of
    every [eval] eps; which test examples each attack left correct goes to the per-example file
    beside the task's result (minidyn.studies.examples), written here, before the result."""
    cfg = task.cell.config()
    data = load_dataset(cfg.dataset, "test", cfg.data_dir)
    out, evaluations = {}, {}
    for which, path in _checkpoints(study, spec, task).items():
        started = time.time()
        backend, model, meta = load_checkpoint(path, cfg.device)
        by_eps = {}
        for eps in spec.eval.eps or (cfg.eps,):
            result = evaluate(backend, model, data, eps, spec.eval)
            by_eps[repr(float(eps))] = {**result.to_dict(), "flags": sanity_flags(result)}
            evaluations[which, repr(float(eps))] = result
        out[which] = {"epoch": meta.get("epoch"), "seconds": time.time() - started, "eps": by_eps}
    return _with_examples(study, task, out, evaluations)


def black_box(study: StudyDir, spec, task: Task) -> dict:
    """{checkpoint: {"epoch", "source", "eps": {eps: result}, "examples": {"file", "token"}}}:
    the attacks crafted on the surrogate's checkpoint of the same kind, at the cell's training
    eps; per-example correctness as white_box's."""
    cfg, surrogate = task.cell.config(), spec.surrogate_of(task.cell)
    data = load_dataset(cfg.dataset, "test", cfg.data_dir)
    sources = _checkpoints(study, spec, Task(surrogate, "train"))
    out, evaluations = {}, {}
    for which, path in _checkpoints(study, spec, task).items():
        started = time.time()
        backend, model, meta = load_checkpoint(path, cfg.device)
        source = load_checkpoint(sources[which], cfg.device)
        result = evaluate(backend, model, data, cfg.eps, spec.eval, source=source[:2],
                          source_name=surrogate.name)
        evaluations[which, repr(float(cfg.eps))] = result
        out[which] = {"epoch": meta.get("epoch"), "source": surrogate.name,
                      "seconds": time.time() - started,
                      "eps": {repr(float(cfg.eps)): {**result.to_dict(), "flags": sanity_flags(result)}}}
    return _with_examples(study, task, out, evaluations)


def _with_examples(study: StudyDir, task: Task, out: dict, evaluations: dict) -> dict:
    """out with each checkpoint's reference to the per-example file of `evaluations`, written now."""
    reference = write_examples(study.result(task), evaluations)
    return {which: {**entry, "examples": reference} for which, entry in out.items()}


def evaluate(backend, model, data, eps, settings, source=None, source_name=None):
    return evaluate_attacks(backend, model, data, eps=eps, attacks=list(settings.attacks),
                            batch_size=settings.batch_size, seed=settings.seed,
                            restarts=settings.restarts, limit=settings.limit,
                            apgd_steps=settings.apgd_steps, source=source, source_name=source_name)


def work(study_dir: str | os.PathLike, cell: str, kind: str, *, stale_after: float = STALE_AFTER,
         spec_digest: str | None = None, runner_pid: int | None = None,
         checkpoint_on_signal: bool = False) -> None:
    """One task as a worker process does it: run_task with the console reporter (what `minidyn
    train` prints), SIGTERM ending it like Ctrl-C (exit 143), and a last line saying it is done.
    `checkpoint_on_signal`: SIGUSR1 and SIGTERM stop it with a checkpoint (StopRequest)."""
    # SIGTERM ends the task like Ctrl-C: the lock is released, the last checkpoint kept; sent
    # by the heartbeat when the lock was taken over, it ends the task as lost (exit BUSY)
    signal.signal(signal.SIGTERM, _on_sigterm)
    stop = StopRequest() if checkpoint_on_signal else None
    if stop is not None:
        signal.signal(signal.SIGTERM, stop.handle)
        signal.signal(signal.SIGUSR1, stop.handle)
    study = StudyDir(study_dir)
    spec = study.spec()  # read once: the task runs and stamps its results under this spec
    cells = {c.name: c for c in spec.cells()}
    reporter = ConsoleReporter(cells[cell].config()) if cell in cells else None
    try:
        run_task(study, cell, kind, reporter, stale_after=stale_after, spec=spec,
                 spec_digest=spec_digest, runner=runner_pid, stop=stop)
    finally:
        if reporter is not None:
            reporter.close()
    click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {cell}.{kind} done")


def _on_sigterm(signum, frame):
    held = [lock for lock in _HELD if lock.lost]
    if held:
        raise TaskLost(f"{held[0].path.name}: the task was taken over by another process (this one was "
                       "thought dead: suspended past --stale-after?); stopped, its result left to the new holder")
    sys.exit(143)


_HELD: list = []  # the lock this worker process holds (what _on_sigterm asks)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minidyn.studies.worker",
                                     description="One task of a study (started by `minidyn study run`).")
    parser.add_argument("study_dir")
    parser.add_argument("cell")
    parser.add_argument("kind", choices=["train", "blackbox"])
    parser.add_argument("--stale-after", type=float, default=600.0)
    parser.add_argument("--spec-digest", help="sha256 of the runner's spec: refuse (exit 78) a study.toml that is not it.")
    parser.add_argument("--runner-pid", type=int, help="The runner's pid, recorded in the task's lock.")
    parser.add_argument("--checkpoint-on-signal", action="store_true",
                        help="SIGUSR1/SIGTERM: stop after the SGD step in progress with a checkpoint (exit 79).")
    args = parser.parse_args(argv)
    if not Path(args.study_dir).is_dir():
        parser.error(f"{args.study_dir} is not a study directory")
    if not 1 <= args.stale_after <= 7 * 86400 or args.runner_pid is not None and not 1 <= args.runner_pid < 2 ** 31:
        parser.error("--stale-after must be in [1, 604800] seconds and --runner-pid a pid")
    return args


def main(argv: list[str] | None = None) -> int:
    """The worker process: its exit code (see the module's docstring). Errors end as `minidyn`'s
    do: one `Error:` line on stderr for a MinidynError or an OSError, `Aborted!` on Ctrl-C."""
    from minidyn.runs.malloc import tune_glibc_malloc  # the allocator settings every minidyn process gets

    args = _arguments(argv)
    tune_glibc_malloc()
    try:
        work(args.study_dir, args.cell, args.kind, stale_after=args.stale_after,
             spec_digest=args.spec_digest, runner_pid=args.runner_pid,
             checkpoint_on_signal=args.checkpoint_on_signal)
    except Checkpointed as stopped:
        click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {stopped}", err=True)
        return CHECKPOINTED
    except MinidynError as error:
        click.echo(f"Error: {error}", err=True)
        return error.exit_code
    except (EOFError, KeyboardInterrupt):
        click.echo(err=True)
        click.echo("Aborted!", err=True)
        return 1
    except OSError as error:
        if error.errno == errno.EPIPE:
            return 1
        where = f"{error.filename}: " if error.filename is not None else ""
        click.echo(f"Error: {where}{error.strerror or error}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
