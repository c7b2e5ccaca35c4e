"""`minidyn study run|slurm|status|report|fig1a|publish|claims|list`: the paper's experiments as multi-seed studies.

Registered on the `minidyn` group at the end of cli/main.py. The study machinery is in
minidyn/studies/; this module is its command line: options, what is printed, exit codes
(0 every task done; 1 some task failed or an input was refused; 130/143 stopped by Ctrl-C or
SIGTERM, everything kept for the next `study run`).
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from minidyn.cli.params import Number, count
from minidyn.files.config import Bounds
from minidyn.errors import ConfigError, MinidynError


@click.group("study")
def study_command():
    """Multi-seed studies: a TOML spec crossed into cells, trained, evaluated and reported.

    A study directory can be shared by several `study run` processes (on one machine or on
    many with a shared filesystem, e.g. the tasks of a Slurm array): each task is claimed by a
    lock file, so none runs twice. See docs/studies.md.
    """


@study_command.command("list")
def list_command():
    """The specs shipped with minidyn (run one by its name or its path)."""
    from minidyn.studies import shipped, spec_path

    for name, line in shipped().items():
        click.echo(f"{name:<22} {line}")
        click.echo(f"{'':<22} {spec_path(name)}")


@study_command.command("run")
@click.argument("spec")
@click.option("--out", type=click.Path(file_okay=False), help="Study directory.  [default: studies/<spec name>]")
@click.option("--jobs", type=count("--jobs", 256), default=1, show_default=True,
              help="Tasks at once, each a process with cores/jobs threads.")
@click.option("--dry-run", is_flag=True, help="Print each cell's `minidyn train` command (for another scheduler), then the study's work in forward+backward passes and its wall time at a throughput measured here (stderr), and stop.")
@click.option("--no-measure", "measure", is_flag=True, flag_value=False, default=True,
              help="With --dry-run: do not time training steps here (no wall-time estimate).")
@click.option("--stale-after", type=Number(Bounds("--stale-after", float, 1, 7 * 86400)), default=600.0, show_default=True,
              help="Seconds without a heartbeat after which another runner's task is taken over.")
def run_command(spec, out, jobs, dry_run, measure, stale_after):
    """Run every cell of SPEC not done yet (a .toml file or a shipped spec's name).

    Running it again skips finished cells and resumes killed ones exactly; a spec edited so
    that a trained cell would change is refused, and a runner whose study.toml another `study
    run` rewrote stops (exit 1), its workers' checkpoints kept.
    """
    from minidyn.studies import spec_path
    from minidyn.studies.cost import work_lines
    from minidyn.studies.runner import Stopped, run_study
    from minidyn.studies.spec import check_study_name, load_spec

    parsed = load_spec(spec_path(spec))
    if not out:
        check_study_name(parsed.name, "the study's name (the spec's file name; give [study] name or --out)")
    out = Path(out) if out else Path("studies") / parsed.name
    refuse_reordered_grid(parsed, out)
    if dry_run:
        for cell in parsed.cells():
            options = {**cell.options, "step_size": cell.config().step_size}  # "eps/4" resolved
            click.echo(shlex.join(train_command_line(options, out / "cells" / cell.name)))
        click.echo(f"# then `minidyn study run {spec} --out {out}` evaluates the trained cells "
                   "([eval]) and `minidyn study report` aggregates them", err=True)
        for line in work_lines(parsed, measure=measure):
            click.echo(f"# {line}", err=True)
        return
    cells = parsed.cells()
    click.echo(f"study {parsed.name}: {len(cells)} cells, {jobs} at a time -> {out}")
    try:
        left = run_study(parsed, out, jobs, stale_after=stale_after, log=click.echo)
    except Stopped as stop:
        click.echo(f"stopped; `minidyn study run {spec} --out {out}` continues", err=True)
        sys.exit(stop.exit_code)
    if left:
        raise MinidynError(f"{len(left)} task(s) failed or could not run: "
                           + ", ".join(t.name for t in left) + f" (see {out}/logs)")
    click.echo(f"all cells done; `minidyn study report {out}` writes the report")


def refuse_reordered_grid(spec, out: Path) -> None:
    """ConfigError naming OUT/study.toml where the study has trained cells and `spec`'s grid
    orders its keys otherwise: cells are named in grid order (spec.cell_name), so the study
    would train every cell again under new names."""
    from minidyn.studies.spec import reordered_grid

    previous, cells = out / "study.toml", out / "cells"
    if not previous.is_file() or not cells.is_dir():
        return
    try:
        if not any((cell / "config.json").is_file() for cell in cells.iterdir()):
            return
        order = reordered_grid(previous.read_text(encoding="utf-8"), spec)
    except (OSError, UnicodeDecodeError):  # the study's own checks speak for an unreadable study
        return
    if order:
        raise ConfigError(f"{previous}: the study's cells are named in its grid order "
                          f"({', '.join(order[0])}), and the spec's [grid] gives {', '.join(order[1])}: "
                          "put the grid's keys back in their order (or use another --out)")


def train_command_line(options: dict, out: Path) -> list[str]:
    """The `minidyn train` command that trains a cell with `options` in `out` (resumable).
    `train`'s options are read off the command group this one is registered on (cli/main.py
    registers both), so this module does not import main, which imports it."""
    train = click.get_current_context().find_root().command.commands["train"]
    params = {p.name: p for p in train.params}
    line = ["minidyn", "train"]
    for key, value in options.items():
        param = params[key]
        if param.is_flag:
            if value != param.default and value is not None and value == param.flag_value:
                line.append(param.opts[0])
            continue
        if isinstance(value, list):
            value = ",".join(map(str, value))
        line += [param.opts[0], repr(value) if isinstance(value, float) else str(value)]
    if "epochs" not in options:  # without --epochs, train takes the quickstart's budget
        line += ["--epochs", "50"]
    return line + ["--out", str(out), "--resume"]


@study_command.command("slurm", context_settings={"ignore_unknown_options": True})
@click.argument("spec")
@click.argument("sbatch_options", nargs=-1, type=click.UNPROCESSED)
@click.option("--out", type=click.Path(file_okay=False), help="Study directory, on a filesystem the cluster's nodes share.  [default: studies/<spec name>]")
@click.option("--tasks", type=count("--tasks", 100_000), help="Array tasks, sharing the cells through the study's locks.  [default: one per pending cell]")
@click.option("--array-parallel", type=count("--array-parallel", 100_000), help="At most this many array tasks at once (--array=0-N%P).")
@click.option("--partition", help="Slurm partition.")
@click.option("--gpus", type=Number(Bounds("--gpus", int, 0, 64)), default=0, show_default=True, help="GPUs per array task.")
@click.option("--cpus", type=count("--cpus", 1024), default=1, show_default=True, help="CPUs per array task, also each worker's threads.")
@click.option("--time", "time_limit", help="Time limit per array task (sbatch --time: 30, 4:00:00, 1-12:00:00).")
@click.option("--signal-before", type=Number(Bounds("--signal-before", int, 10, 65535)), default=60, show_default=True,
              help="Seconds before the time limit at which the cell checkpoints and the task is requeued.")
@click.option("--stale-after", type=Number(Bounds("--stale-after", float, 1, 7 * 86400)), default=600.0, show_default=True,
              help="Seconds without a heartbeat after which a killed task's lock is taken over from another node.")
@click.option("--submit", is_flag=True, help="Submit the script with sbatch.")
def slurm_command(spec, sbatch_options, out, tasks, array_parallel, partition, gpus, cpus, time_limit,
                  signal_before, stale_after, submit):
    """Write (and with --submit, sbatch) a Slurm job array that runs SPEC's study.

    The script goes to OUT/logs/slurm.sbatch and is printed. Options that are not minidyn's
    (--mem=16G, --account=x, -q high) become #SBATCH lines as given. Array task i trains the
    i-th pending cell first, then any other task still free; before the time limit (and when
    preempted) the cell saves a checkpoint and the task is requeued, resuming exactly.
    """
    from minidyn.files.fileio import atomic_write
    from minidyn.studies import spec_path
    from minidyn.studies.slurm import SCRIPT_NAME, SlurmOptions, check_path, script, submit as sbatch
    from minidyn.studies.spec import check_study_name, load_spec
    from minidyn.studies.tasks import StudyDir

    parsed = load_spec(spec_path(spec))
    if not out:
        check_study_name(parsed.name, "the study's name (the spec's file name; give [study] name or --out)")
    out = Path(out) if out else Path("studies") / parsed.name
    refuse_reordered_grid(parsed, out)
    options = SlurmOptions(tasks=tasks, parallel=array_parallel, partition=partition, gpus=gpus, cpus=cpus,
                           time=time_limit, signal_before=signal_before, stale_after=stale_after,
                           extra=_sbatch_lines(sbatch_options))
    options.check()
    check_path(out)
    study = StudyDir(out)
    study.prepare(parsed)  # study.toml written: the array tasks read it, not SPEC
    text = script(study, parsed, options)
    path = study.logs_dir / SCRIPT_NAME
    atomic_write(path, lambda f: f.write(text))
    path.chmod(0o755)
    click.echo(text, nl=False)
    click.echo(f"# written to {path}", err=True)
    if submit:
        click.echo(f"submitted job {sbatch(path)}; `minidyn study status {out}` shows its tasks")


def _sbatch_lines(tokens: tuple[str, ...]) -> list[str]:
    """The #SBATCH lines of pass-through options: each token starting with '-' begins one, the
    tokens after it (a value given apart: `-A x`, `--mem 8G`) join it."""
    lines: list[str] = []
    for token in tokens:
        if token.startswith("-") or not lines:
            lines.append(token)
        else:
            lines[-1] += " " + token
    return lines


@study_command.command("status")
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
def status_command(study_dir):
    """Show each task of STUDY_DIR: done, running, failed or waiting.

    A running task shows its host and pid, its last heartbeat and the epochs trained; a task
    an array of `study slurm` ran shows its Slurm job and the job's state (squeue).
    """
    from minidyn.studies.lock import check_locks
    from minidyn.studies.tasks import StudyDir

    study = StudyDir(study_dir)
    spec = study.spec()
    check_locks(study.locks_dir)  # a FIFO in locks/ would block a reader: refused in one line
    counts: dict[str, int] = {}
    jobs = slurm_jobs(study, spec)
    for task in study.tasks(spec):
        state = task_state(study, spec, task)
        counts[state.split()[0]] = counts.get(state.split()[0], 0) + 1
        click.echo(f"{task.name:<40} {state}{jobs.get(task.name, '')}")
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))


def slurm_jobs(study, spec) -> dict[str, str]:
    """{task name: " [slurm JOB STATE]"} for the tasks an array task of `study slurm` ran: the
    job and its state as squeue gives it ("not queued": ended and forgotten by Slurm)."""
    from minidyn.studies.slurm import job_states, read_job_record

    records = {t.name: r for t in study.tasks(spec) if (r := read_job_record(study, t)) is not None}
    states = job_states([r["job"] for r in records.values()])
    if states is None:
        return {name: f" [slurm {r['job']}, state unknown: no squeue here]" for name, r in records.items()}
    return {name: f" [slurm {r['job']} {states.get(r['job'], 'not queued')}]" for name, r in records.items()}


def task_state(study, spec, task) -> str:
    """One task's state in words: done, running/stale (who holds its lock, its heartbeat's
    age), failed, or waiting (and why its result does not count, where it is invalid)."""
    from minidyn.errors import ConfigError
    from minidyn.studies.lock import holder, is_stale
    from minidyn.studies.tasks import load_result

    if study.done(spec, task):
        return "done"
    lock = study.lock(task)
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        age = None
    if age is not None:
        who = holder(lock)
        where = f"{who['host']}:{who['pid']}" if who else "no lock record in it"
        beat = f"heartbeat {age:.0f}s ago" if age >= 0 else f"heartbeat {-age:.0f}s in the future"
        state = "stale" if is_stale(lock) else "running"
        return f"{state} ({where}, {beat}{'' if state == 'stale' else _progress(study, task)})"
    if study.failure(task).is_file():
        return f"failed (see {study.log(task)})"
    try:
        load_result(study.result(task))
        why = ""
    except ConfigError as error:
        why = f" (its result is not used: {error})"
    return "waiting" + _progress(study, task) + why


def _progress(study, task) -> str:
    metrics = study.cell_dir(task.cell) / "metrics.jsonl"
    if task.kind != "train" or not metrics.is_file():
        return ""
    done = sum(1 for line in metrics.read_text(errors="replace").splitlines() if line.strip())
    return f", {done}/{task.cell.config().epochs} epochs"


@study_command.command("report")
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
def report_command(study_dir):
    """Write the report of STUDY_DIR: tables, every number, figures.

    STUDY_DIR/report/ gets report.md (Table 1's layout: mean ± sample std over seeds with a
    95% two-way bootstrap interval over seeds and test examples; paired differences to the
    baseline with the 95% t interval over seeds and the bootstrap interval; the exact McNemar
    test for one seed per side; the [report] primary comparisons with Holm-adjusted p-values;
    the epoch each seed's best checkpoint chose; the black-box table; the figures),
    results.csv and results.json (every number) and the PNGs. Cells that are not done, and
    failed black-box tasks, are listed and left out. Studies without per-example results
    (evaluated before them) report with the bootstrap not available.
    """
    from minidyn.studies.report import write_report

    for path in write_report(study_dir):
        click.echo(str(path))


@study_command.command("fig1a")
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--setting", "words", multiple=True, metavar="KEY=VALUE",
              help="Measure the cells with this grid value (repeat for more keys).  [default: the [report] baseline's]")
@click.option("--checkpoint", type=click.Choice(["best", "last"]),
              help="Checkpoint to attack.  [default: the spec's first [eval] checkpoint]")
def fig1a_command(study_dir, words, checkpoint):
    """Measure Fig. 1a on the trained cells of one setting of STUDY_DIR.

    Each cell's checkpoint is attacked with PGD-10 (step eps/4, the paper's Fig. 1a) on the
    [eval] test examples; its per-example FOSC, loss and correctness go to
    cells/CELL/study-fig1a-CHECKPOINT.npz. Cells measured since their checkpoint was written are
    skipped. `minidyn study report STUDY_DIR` then tables, per setting, the accuracy of the
    test examples above the median FOSC minus below it, with intervals (docs/studies.md).
    """
    from minidyn.studies.fig1a import matching, measure, parse_setting, pending
    from minidyn.studies.spec import cell_name
    from minidyn.studies.tasks import StudyDir

    study = StudyDir(study_dir)
    spec = study.spec()
    setting = parse_setting(spec, words)
    checkpoint = checkpoint or spec.eval.checkpoints[0]
    if checkpoint not in spec.eval.checkpoints:
        raise ConfigError(f"--checkpoint {checkpoint}: {spec.name} evaluates only the {' and '.join(spec.eval.checkpoints)} "
                          "checkpoint, which the report reads")
    chosen = matching(spec, setting)
    if not chosen:
        raise ConfigError(f"no cell of {spec.name} has {cell_name(setting)} (its [[exclude]] removes them)")
    cells = pending(study, spec, chosen, checkpoint)
    click.echo(f"{cell_name(setting)}: {len(chosen)} cells, {len(cells)} trained and not yet measured "
               f"at the {checkpoint} checkpoint")
    for cell in cells:
        started = time.time()
        path = measure(study, spec, cell, checkpoint)
        click.echo(f"{path} ({time.time() - started:.0f} s)")
    click.echo(f"then: minidyn study report {study_dir}")


@study_command.command("publish")
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("dest", type=click.Path())
def publish_command(study_dir, dest):
    """Copy the finished study at STUDY_DIR, without its checkpoints, to DEST (e.g. docs/results/NAME).

    DEST gets study.toml, report/ and, per cell, its config, summary, per-epoch metrics, result
    files, per-example records and the FOSC arrays of [report] fosc_epochs: a study directory that `minidyn study report DEST` and
    `minidyn study claims ... --studies` read, with the same numbers. An earlier copy of the
    same study at DEST is replaced; a study with a task not done, or without a report newer than
    its results, is refused.
    """
    from minidyn.studies.publish import publish

    files = publish(study_dir, dest)
    size = sum(p.stat().st_size for p in files)
    click.echo(f"{dest}: {len(files)} files, {size / 1e6:.2f} MB")


@study_command.command("claims")
@click.argument("claims_file", type=click.Path(dir_okay=False))
@click.option("--studies", "studies_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The folder holding the studies' directories, one per spec: STUDIES/<spec name>/.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the table to this Markdown file (else print it).")
def claims_command(claims_file, studies_dir, out):
    """The claims table of CLAIMS_FILE: each claim with our number and a verdict from its intervals.

    Each [[claim]] of the TOML file names the paper's statement and numbers, a study (its
    directory is STUDIES/<study>/), the setting, baseline, attack and checkpoint compared, the
    direction the paper claims and how far our setting is from the paper's. Our number is the
    paired difference in the study's report (report/results.json of `minidyn study report`)
    with its two-way bootstrap interval over seeds and test examples and its t interval over
    seeds; the verdict (shown / contradicted here / not shown / pending / not testable here)
    follows the rule the output states. A study without a report is pending, with the command
    that continues it. See docs/studies.md, "The claims table".
    """
    from minidyn.files.fileio import atomic_write
    from minidyn.studies.claims import judge, load_claims, markdown

    claims = load_claims(claims_file, studies_dir)
    rows = [judge(claim, Path(studies_dir)) for claim in claims]
    command = f"minidyn study claims {shlex.quote(claims_file)} --studies {shlex.quote(studies_dir)}"
    text = markdown(rows, command)
    if out is None:
        click.echo(text, nl=False)
        return
    atomic_write(Path(out), lambda f: f.write(text))  # a failed write: one line naming the file
    click.echo(str(out))


@study_command.command("worker", hidden=True)
@click.argument("study_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("cell")
@click.argument("kind", type=click.Choice(["train", "blackbox"]))
@click.option("--stale-after", type=Number(Bounds("--stale-after", float, 1, 7 * 86400)), default=600.0)
@click.option("--spec-digest", help="sha256 of the runner's spec: refuse (exit 78) a study.toml that is not it.")
@click.option("--runner-pid", type=count("--runner-pid", 2 ** 31 - 1), help="The runner's pid, recorded in the task's lock.")
def worker_command(study_dir, cell, kind, stale_after, spec_digest, runner_pid):
    """One task of a study, as `python -m minidyn.studies.worker` does it (which `study run` starts)."""
    from minidyn.studies.worker import work

    work(study_dir, cell, kind, stale_after=stale_after, spec_digest=spec_digest, runner_pid=runner_pid)
