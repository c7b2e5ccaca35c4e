"""One task of a study, in its own process: claim it, do it, write its result, release it.

    run_task(StudyDir("studies/x"), "dynamic_seed-0", "train", reporter)

A training task trains the cell (`train_run` with resume: a killed cell continues from its
last checkpoint, exactly) and then evaluates it as [eval] says: every attack at every eps, on
the last checkpoint and on the best one on validation. A black-box task evaluates the cell's
checkpoints under the attacks crafted on its surrogate's (the same kind of checkpoint), at the
cell's training eps. Results go to the cell's study-eval*.json in one atomic write, so a task
killed at any moment has either its whole result or none.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from minidyn.data import load_dataset
from minidyn.errors import ConfigError, MinidynError
from minidyn.evaluation.checkpoints import load_checkpoint
from minidyn.evaluation.evaluate import evaluate_attacks, sanity_flags
from minidyn.runs import train_run
from minidyn.runs.reporter import Reporter
from minidyn.runs.rundir import BEST_NAMES, CHECKPOINT_NAMES
from minidyn.studies.examples import write_examples
from minidyn.studies.lock import STALE_AFTER, claim
from minidyn.studies.spec import Spec
from minidyn.studies.tasks import SpecChanged, StudyDir, Task, digest, settings, write_result

BUSY = 75  # exit code of a worker whose task another process holds (EX_TEMPFAIL)


class TaskBusy(MinidynError):
    exit_code = BUSY


def run_task(study: StudyDir, cell_name: str, kind: str, reporter: Reporter | None = None,
             stale_after: float = STALE_AFTER, heartbeat: float | None = None, *,
             spec: Spec | None = None, spec_digest: str | None = None,
             runner: int | None = None) -> None:
    """Claim the task (TaskBusy when another process holds it), do it, release it; the
    reporter is told when the task was claimed and hears the training. `spec`: the study's
    spec as read once for this task (default: read now), which the whole task uses;
    `spec_digest`: the sha256 of the runner's spec text (SpecChanged when `spec` is not it);
    `runner`: the runner's pid, recorded in the lock."""
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
                          f"(host {socket.gethostname()}, pid {os.getpid()})")
        if kind == "train":
            train_run(task.cell.config(), study.cell_dir(task.cell), resume=True, reporter=reporter)
            results = white_box(study, spec, task)
        else:
            results = black_box(study, spec, task)
        write_result(study.result(task), {"settings": settings(spec, task), "results": results,
                                          "seconds": time.time() - started})
    finally:
        lock.release()


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
