"""A study on Slurm: a job-array script, the array task that runs in it, the jobs of its tasks.

    text = script(StudyDir("studies/x"), spec, SlurmOptions(time="4:00:00", gpus=1))
    python -m minidyn.studies.slurm task STUDY_DIR [--first CELL] [--stale-after S]   # an array task

The script (`minidyn study slurm`) is a plain sbatch job array: array task i runs the study's
tasks in turn starting from the i-th (the i-th training task first, then the next ones, then the
black-box ones), each by a worker (minidyn/studies/worker.py) that claims it with the study's
lock; a task done, held by another array task or not ready (a black-box task whose cells are
not trained) is passed over, and the array task ends when a pass over them started none. With
one array task per pending training task each does its own cell; with fewer they share the
cells through the locks, as `study run` processes do.

Time limits and preemption: the script asks Slurm for SIGUSR1 `signal_before` seconds before
the time limit (`--signal=B:USR1@S`, to the batch shell), which hands it to the array task and
the array task to its worker; the worker's training saves a mid-epoch checkpoint after the SGD
step in progress and stops (worker.CHECKPOINTED), and the shell requeues its own array task
(`scontrol requeue`, `--requeue`), which resumes the cell from that step, bit-identically. A
preempted job gets SIGTERM, which does the same; Slurm requeues it itself (PreemptMode=REQUEUE).
A job killed without a signal (SIGKILL, a node lost) resumes from the cell's last checkpoint.

Each task's Slurm job is recorded in STUDY/logs/TASK.slurm.json when an array task starts it
(`write_job_record`), and `study status` shows its state (`job_states`, from squeue).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from minidyn.errors import ConfigError, MinidynError
from minidyn.files.fileio import atomic_write
from minidyn.studies.lock import STALE_AFTER
from minidyn.studies.runner import claimable, record_failure
from minidyn.studies.tasks import SPEC_CHANGED, StudyDir, Task, digest
from minidyn.studies.worker import BUSY, CHECKPOINTED

SCRIPT_NAME = "slurm.sbatch"  # written in STUDY/logs/
TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^\d+-\d+$")  # sbatch --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class SlurmOptions:
    """What the script asks Slurm for, per array task. `tasks`: array tasks (None: one per
    pending training task); `parallel`: at most this many at once (`--array=0-N%P`); `gpus`:
    GPUs per task; `cpus`: CPUs per task, also each worker's thread count; `time`: sbatch's
    time limit; `signal_before`: seconds before it that SIGUSR1 comes; `extra`: further
    #SBATCH lines, as given (`--mem=16G`, `--account=x`)."""

    tasks: int | None = None
    parallel: int | None = None
    partition: str | None = None
    gpus: int = 0
    cpus: int = 1
    time: str | None = None
    signal_before: int = 60
    stale_after: float = STALE_AFTER
    extra: list[str] = field(default_factory=list)

    def check(self) -> None:
        """ConfigError naming the first option that sbatch would refuse or a script could not hold."""
        if self.time is not None and not TIME.match(self.time):
            raise ConfigError(f"--time {self.time!r} is not a Slurm time (minutes, H:M:S, D-H:M:S)")
        for value in [self.partition or "", self.time or "", *self.extra]:
            if any(ord(c) < 32 or c == "\x7f" for c in value):
                raise ConfigError(f"a Slurm option holds a control character: {value!r}")
        for line in self.extra:
            if not line.startswith("-"):
                raise ConfigError(f"sbatch option {line!r} does not start with '-' (give --name=value)")
            if re.match(r"--(array|requeue|no-requeue|signal|output|error|open-mode|cpus-per-task)\b", line):
                raise ConfigError(f"{line.split('=')[0]} is set by `study slurm` itself (see its options)")


def pending_training(study: StudyDir, spec) -> list[Task]:
    """The training tasks not done, in the study's order (seed by seed)."""
    return [t for t in study.tasks(spec) if t.kind == "train" and not study.done(spec, t)]


def script(study: StudyDir, spec, options: SlurmOptions, python: str = sys.executable) -> str:
    """The sbatch script that runs the study in `study` (prepared: its study.toml is `spec`)
    as a job array (module docstring). ConfigError when nothing is left to run, or where the
    study's path cannot stand in an #SBATCH line (whitespace, control characters)."""
    options.check()
    where = check_path(study.path)
    left = [t for t in study.tasks(spec) if not study.done(spec, t)]
    if not left:
        raise ConfigError(f"every task of {study.path} is done; `minidyn study report {study.path}` writes the report")
    pending = pending_training(study, spec) or left
    count = options.tasks or len(pending)
    firsts = [pending[i * len(pending) // count].cell.name for i in range(count)]
    command = [python, "-m", "minidyn.studies.slurm", "task", str(where), "--stale-after", repr(options.stale_after)]
    return "\n".join(_header(spec.name, options, where, len(left), count) + _body(firsts, command)) + "\n"


def check_path(path: Path) -> Path:
    """The study's absolute path; ConfigError where it cannot stand in an #SBATCH line."""
    where = path.resolve()
    if re.search(r"[\s\x00-\x1f\x7f]", str(where)):
        raise ConfigError(f"--out {str(where)!r}: the study's path goes into #SBATCH lines, which "
                          "split on whitespace; choose a path without spaces")
    return where


def _header(name: str, options: SlurmOptions, where: Path, left: int, count: int) -> list[str]:
    """The script's comment and #SBATCH lines."""
    job_name = re.sub(r"[^A-Za-z0-9._-]", "-", f"minidyn-{name}")[:80]
    lines = [
        "#!/bin/bash",
        f"# minidyn study slurm: study {job_name[8:]} ({left} tasks left) in {where}",
        "# Array task i runs the study's tasks in turn from the i-th, each claimed by a lock (done",
        "# or held by another array task: passed over); a cell resumes from its last checkpoint.",
        f"# SIGUSR1 {options.signal_before} s before the time limit: the cell saves a mid-epoch checkpoint,",
        f"# the array task requeues itself and resumes there. Progress: minidyn study status {where}",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{count - 1}" + (f"%{options.parallel}" if options.parallel else ""),
        f"#SBATCH --cpus-per-task={options.cpus}",
    ]
    lines += [f"#SBATCH --partition={options.partition}"] if options.partition else []
    lines += [f"#SBATCH --gpus-per-task={options.gpus}"] if options.gpus else []
    lines += [f"#SBATCH --time={options.time}"] if options.time else []
    lines += ["#SBATCH --requeue", f"#SBATCH --signal=B:USR1@{options.signal_before}",
              "#SBATCH --open-mode=append", f"#SBATCH --output={where}/logs/slurm-%A_%a.out"]
    return lines + [f"#SBATCH {line}" for line in options.extra]


def _body(firsts: list[str], command: list[str]) -> list[str]:
    """The script's shell part: the array task in the background, the signals handed to it,
    the requeue after a SIGUSR1 stop."""
    return [
        "",
        "# the cell each array task starts with (then the next ones, then the black-box tasks)",
        *_bash_array("first", [shlex.quote(name) for name in firsts]),
        "threads=${SLURM_CPUS_PER_TASK:-1}  # each worker's threads: bit-identical resumes need the same count",
        "export " + " ".join(f"{name}=$threads" for name in THREAD_VARIABLES),
        "requeue=0",
        "trap 'requeue=1; kill -USR1 \"$task\" 2>/dev/null' USR1  # time limit near: checkpoint, requeue",
        "trap 'kill -TERM \"$task\" 2>/dev/null' TERM              # preempted or cancelled: checkpoint",
        shlex.join(command) + ' --first "${first[$SLURM_ARRAY_TASK_ID]}" &',
        "task=$!",
        "wait \"$task\"",
        "while kill -0 \"$task\" 2>/dev/null; do wait \"$task\"; done  # a trapped signal ends `wait` early",
        "wait \"$task\"; code=$?  # the task's exit status",
        f"# {CHECKPOINTED}: stopped with its checkpoint; 138: SIGUSR1 came before it could take it (nothing lost)",
        f"if [ \"$requeue\" -eq 1 ] && {{ [ \"$code\" -eq {CHECKPOINTED} ] || [ \"$code\" -eq 138 ]; }}; then",
        "    scontrol requeue \"$SLURM_JOB_ID\"  # pending again; it resumes from the checkpoint",
        "fi",
        "exit \"$code\"",
    ]


def _bash_array(name: str, words: list[str], width: int = 96) -> list[str]:
    """`name=(words...)` as lines of at most about `width` characters."""
    lines, line = [], f"{name}=("
    for word in words:
        if len(line) + len(word) + 1 > width and not line.endswith("("):
            lines.append(line)
            line = "    "
        line += ("" if line.endswith(("(", "    ")) else " ") + word
    return lines + [line + ")"]


def submit(path: Path) -> str:
    """`sbatch PATH`; the job id it printed. MinidynError with sbatch's message when it refuses."""
    try:
        done = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise MinidynError("sbatch is not on PATH: submit the script on a machine of the cluster") from None
    if done.returncode != 0:
        raise MinidynError(f"sbatch refused {path}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout.strip().split(";")[0]


# --- the array task -------------------------------------------------------------------------

class _Forward:
    """SIGUSR1 and SIGTERM handed on to the running worker (which stops with a checkpoint)."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.asked: int | None = None

    def __call__(self, signum, frame):
        self.asked = signum
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)


def array_task(study_dir: str | os.PathLike, first: str | None = None, *, stale_after: float = STALE_AFTER,
               log: Callable[[str], None] = print) -> int:
    """One array task (module docstring), starting with cell `first`'s training task; its exit
    code: 0 nothing left that it could do, 1 a
    task failed (recorded in failed/, as `study run` does), CHECKPOINTED stopped by a signal,
    SPEC_CHANGED study.toml was rewritten by another spec's runner."""
    study = StudyDir(study_dir)
    spec = study.spec()
    mark = study.prepare(spec, mark=True, stale_after=stale_after)  # refuses another spec's live runner
    mark.keep_alive(min(30.0, stale_after / 4))
    forward = _Forward()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        return _pass_over(study, spec, _order(study, spec, first), forward, stale_after, log)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        mark.release()


def _order(study: StudyDir, spec, first: str | None) -> list[Task]:
    """The study's tasks as an array task takes them: the training tasks from cell `first`'s
    round to the others (in the study's order), then the black-box tasks."""
    training = [t for t in study.tasks(spec) if t.kind == "train"]
    names = [t.cell.name for t in training]
    start = names.index(first) if first in names else 0
    rest = [t for t in study.tasks(spec) if t.kind != "train"]
    return training[start:] + training[:start] + rest


def _pass_over(study: StudyDir, spec, order: list[Task], forward: _Forward, stale_after: float,
               log: Callable[[str], None]) -> int:
    failed: list[Task] = []
    started = True
    while started:
        started = False
        for task in order:
            if forward.asked is not None:
                return CHECKPOINTED
            if task in failed or study.done(spec, task) or not study.ready(spec, task) \
                    or not claimable(study, task, stale_after):
                continue
            code = _run(study, spec, task, forward, stale_after, log)
            if code == CHECKPOINTED or forward.asked is not None:
                return CHECKPOINTED
            if code == SPEC_CHANGED:
                log(f"{study.spec_file} was rewritten by another spec's `study run`; stopped")
                return SPEC_CHANGED
            if code == 0 and study.done(spec, task):
                log(f"finished {task.name}")
                started = True
            elif code != BUSY:
                failed.append(task)
                record_failure(study, task, code)
                log(f"FAILED {task.name} (exit {code}; log: {study.log(task)})")
    return 1 if failed else 0


def _run(study: StudyDir, spec, task: Task, forward: _Forward, stale_after: float,
         log: Callable[[str], None]) -> int:
    """The worker of `task`, its output appended to the task's log; its exit code."""
    write_job_record(study, task)
    command = [sys.executable, "-m", "minidyn.studies.worker", str(study.path), task.cell.name, task.kind,
               "--stale-after", repr(stale_after), "--spec-digest", digest(spec.text),
               "--runner-pid", str(os.getpid()), "--checkpoint-on-signal"]
    log(f"started {task.name} (log: {study.log(task)})")
    with open(study.log(task), "ab") as out:
        forward.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if forward.asked is not None:  # a signal that came while the worker was being started
        forward.proc.send_signal(forward.asked)
    while True:
        try:
            return forward.proc.wait()
        except InterruptedError:  # pragma: no cover (PEP 475 retries)
            continue


# --- the jobs of a study's tasks ------------------------------------------------------------

def job_record_path(study: StudyDir, task: Task) -> Path:
    return study.logs_dir / f"{task.name}.slurm.json"


def slurm_job() -> str | None:
    """This process's Slurm job as squeue names it (ARRAYJOB_TASK for an array task), or None."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID") or None


def write_job_record(study: StudyDir, task: Task) -> None:
    """Record which Slurm job runs `task` (none outside Slurm)."""
    job = slurm_job()
    if job is None:
        return
    record = {"job": job, "job_id": os.environ.get("SLURM_JOB_ID"), "host": socket.gethostname(),
              "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0), "time": time.time()}
    atomic_write(job_record_path(study, task), lambda f: json.dump(record, f))


def read_job_record(study: StudyDir, task: Task) -> dict | None:
    try:
        record = json.loads(job_record_path(study, task).read_text(encoding="utf-8")[:4096])
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("job"), str) else None


def job_states(jobs: list[str]) -> dict[str, str] | None:
    """{job: state} from squeue for the jobs it still lists (PENDING, RUNNING, REQUEUED, ...);
    None where squeue is missing or fails (not on a machine of the cluster)."""
    jobs = sorted({j for j in jobs if re.fullmatch(r"\d+(_\d+)?", j)})
    if not jobs:
        return {}
    try:  # this user's jobs, one line per array task (-r): a job id Slurm forgot is no error
        done = subprocess.run(["squeue", "-h", "-r", "--me", "-o", "%i %T"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    states = {}
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in jobs:
            states[words[0]] = words[1]
    return states


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minidyn.studies.slurm",
                                     description="One task of a `minidyn study slurm` job array.")
    parser.add_argument("what", choices=["task"])
    parser.add_argument("study_dir")
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER)
    parser.add_argument("--first", help="The cell whose training this array task starts with.")
    args = parser.parse_args(argv)
    if not 1 <= args.stale_after <= 7 * 86400:
        parser.error("--stale-after must be in [1, 604800] seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    """The array task's process: its exit code (array_task); errors as one `Error:` line."""
    args = _arguments(argv)
    try:
        return array_task(args.study_dir, args.first, stale_after=args.stale_after,
                          log=lambda line: print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True))
    except MinidynError as error:
        print(f"Error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
