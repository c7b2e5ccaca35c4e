"""`minidyn course list|start|check|run`: coursework on the paper (docs/course.md).

Registered on the `minidyn` group at the end of cli/main.py; the course itself is in
minidyn/course/. Exit codes: 0 success (`check`: every property of every task checked holds);
1 a check failed, or an input was refused (one line, `Error: ...`).
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from minidyn.cli.params import Number, check_writable_dir, count
from minidyn.files.config import MAX_SEED
from minidyn.errors import ConfigError


@click.group("course")
def course_command():
    """Coursework: implement FOSC and Dynamic Adversarial Training task by task, check each
    task's properties, then train a robust model with your own code.

    Start with `minidyn course start hw`, then `minidyn course check --dir hw`. See docs/course.md.
    """


@course_command.command("list")
def list_command():
    """The tasks, in order: what each teaches, the paper's section, prerequisites and time."""
    from minidyn.course import TASKS

    for task in TASKS:
        needs = ", ".join(str(n) for n in task.prerequisites) or "-"
        kind = "" if task.graded else "  (written, not autograded)"
        click.echo(f"{task.number}. {task.key:<11} {task.title}{kind}")
        click.echo(f"   teaches:  {task.teaches}")
        click.echo(f"   paper:    {task.paper}")
        click.echo(f"   needs:    {needs}    time: about {task.minutes} min    file: {task.module}.{'py' if task.graded else 'md'}")
    click.echo("Capstone: `minidyn course run DIR` trains a model with your Tasks 1-6 once they pass.")


@course_command.command("start")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--solutions", is_flag=True, help="Instructors only: fill every function with a call into minidyn's reference implementation (to try the grader and the capstone); never hand this out.")
def start_command(folder, solutions):
    """Create a student workspace in FOLDER: one module per task (stubs), the worksheets."""
    from minidyn.course.templates import workspace_files

    check_writable_dir(folder, "FOLDER")
    path = Path(folder)
    files = workspace_files(solutions)
    taken = sorted(name for name in files if (path / name).exists())
    if taken:
        raise ConfigError(f"{folder} already holds {taken[0]}{' and more' if len(taken) > 1 else ''}: "
                          "not overwriting a workspace (choose a new folder)")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    click.echo(f"workspace in {folder}: {len([n for n in files if n.startswith('task') and n.endswith('.py')])} "
               f"task modules, worksheets in {Path(folder) / 'worksheets'}{' (WITH SOLUTIONS)' if solutions else ''}")
    click.echo(f"next: read {Path(folder) / 'worksheets' / 'worksheet1_fosc.md'}, write fosc in "
               f"{Path(folder) / 'task1_fosc.py'}, then run `minidyn course check 1 --dir {folder}`")


@course_command.command("check")
@click.argument("task", required=False)
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(), help="The workspace.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write Gradescope's results.json here.")
@click.option("--seed", "hypothesis_seed", type=count("--seed", MAX_SEED, lo=0), default=0, show_default=True,
              help="Hypothesis' seed (instructors: fix it for grading).")
@click.option("--random", "fresh", is_flag=True, help="A fresh Hypothesis seed instead of --seed.")
@click.option("--max-examples", type=count("--max-examples", 10_000), default=50, show_default=True,
              help="Examples per property.")
def check_command(task, folder, json_path, hypothesis_seed, fresh, max_examples):
    """Check TASK (a number or name; all tasks without it) in the workspace --dir.

    Each property is run by Hypothesis against your functions, with minidyn's implementation,
    brute force or finite differences as the oracle; a failure shows the smallest input found
    and, for a known mistake, a hint. Exit 0 when every property holds.
    """
    from minidyn.course import TASKS, task_named
    from minidyn.course.grader import Settings, check_workspace, grade, report_lines, require_hypothesis, write_json

    tasks = [task_named(task)] if task is not None else [t for t in TASKS if t.graded]
    check_workspace(folder)
    if not tasks[0].graded:
        click.echo(f"Task {tasks[0].number} is written ({tasks[0].module}.md): your instructor reads it; nothing to check.")
        return
    require_hypothesis()
    if json_path is not None:
        check_writable_dir(Path(json_path).parent, "--json")
    started = time.perf_counter()
    seed = None if fresh else hypothesis_seed
    results = grade(folder, tasks, Settings(seed, max_examples))
    for line in report_lines(results):
        click.echo(line)
    click.echo(f"({time.perf_counter() - started:.1f} s, Hypothesis seed {'random' if seed is None else seed}, "
               f"{max_examples} examples per property)")
    if json_path is not None:
        write_json(json_path, results)
        click.echo(f"results: {json_path}")
    if not all(r.passed for r in results):
        raise SystemExit(1)


@course_command.command("run")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Run directory.  [default: FOLDER/run]")
@click.option("--epochs", type=Number.field("epochs"), default=2, show_default=True, help="Training epochs.")
@click.option("--limit", type=count("--limit", 10_000, lo=32), default=4000, show_default=True,
              help="Training examples (of the embedded 10,000-digit sample).")
@click.option("--eval-limit", type=count("--eval-limit", 2000), default=500, show_default=True,
              help="Test examples attacked by PGD-20 at the end (the per-epoch monitor: at most 200).")
def run_command(folder, out, epochs, limit, eval_limit):
    """The capstone: train the NumPy MLP with Dynamic Adversarial Training using YOUR Tasks 1-6
    (FOSC, projection, step, schedule, gradients, epoch) on the embedded MNIST sample, into a run
    directory that `minidyn eval` and `minidyn analyze` read. Refuses until Tasks 1-6 pass."""
    from minidyn.course.capstone import capstone_config, load_pieces, train_capstone
    from minidyn.course.grader import check_workspace, require_hypothesis
    from minidyn.studies.console import ConsoleReporter

    check_workspace(folder)
    out = out if out is not None else str(Path(folder) / "run")
    check_writable_dir(out, "--out")
    if Path(out).is_dir() and any(Path(out).iterdir()):
        raise ConfigError(f"--out {out} is not empty (an earlier capstone run?): choose another --out, or remove it")
    require_hypothesis()
    pieces = load_pieces(folder)
    click.echo(f"Tasks 1-6 pass: training the mlp with your code, {epochs} epoch{'s' * (epochs != 1)} on "
               f"{limit} digits (eps 0.3, PGD-10, c_max 0.5) -> {out}")
    console = ConsoleReporter(capstone_config(epochs, limit, 0, eval_limit))
    try:
        summary = train_capstone(folder, out, epochs=epochs, limit=limit, eval_limit=eval_limit,
                                 reporter=console, pieces=pieces)
    finally:
        console.close()
    click.echo(f"test accuracy (minidyn's evaluation): clean {summary['test_clean_acc']:.2f}% on {summary['test_n']}, "
               f"PGD-20 {summary['test_pgd20_acc']:.2f}% on the first {summary['test_pgd_n']}")
    click.echo(f"run directory: {out}  (next: `minidyn eval {out}`, `minidyn analyze {out}`)")
