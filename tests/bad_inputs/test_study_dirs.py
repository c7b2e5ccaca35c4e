"""Hostile study directories (issue 25): lock files, result files and a full disk that once hung
`minidyn study run` / `study status`, printed a traceback, or were averaged into the report.

The style of test_run_files.py: a case that is refused gets exactly one `Error: ...` line that
names the file, and a non-zero exit; a case that once hung runs `minidyn` in a process of its
own under a timeout (a hang fails the test instead of stalling the suite) and must finish.
Each case starts from a copy of one finished one-seed study (2 cells, seconds to make).
"""
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from minidyn.cli.main import main

from .helpers import assert_one_error_line

HANG = 90  # seconds: every case below ends in a few; the hangs were of 600 s or forever
TASK = "standard_seed-0.train"


def minidyn(*args, timeout: float = HANG) -> SimpleNamespace:
    """`minidyn ARGS` in a process of its own (a hang raises TimeoutExpired): what
    assert_one_error_line reads of a click result."""
    proc = subprocess.run([sys.executable, "-m", "minidyn.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    return SimpleNamespace(exit_code=proc.returncode, output=proc.stdout, stderr=proc.stderr)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, tiny_text) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("finished-study")
    (base / "tiny.toml").write_text(tiny_text.replace("seed = [0, 1]", "seed = [0]"))  # one cell
    done = minidyn("study", "run", base / "tiny.toml", "--out", base / "study", "--jobs", "2")
    assert done.exit_code == 0, done.stderr
    return base / "tiny.toml", base / "study"


@pytest.fixture
def study(finished_study, tmp_path) -> tuple[Path, Path]:
    """(spec, a copy of the finished study)."""
    spec, done = finished_study
    shutil.copytree(done, tmp_path / "study")
    return spec, tmp_path / "study"


def undo(out: Path, task: str = TASK) -> None:
    """Make `task` not done (its result gone): a runner must claim it again."""
    (out / "cells" / task.rsplit(".", 1)[0] / "study-eval.json").unlink()


def backdate(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


# --- lock files that are no lock ------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "status"])
def test_a_fifo_lock_is_refused_in_one_line_not_read(study, command):
    spec, out = study
    undo(out)  # a task not done: its lock is read
    os.mkfifo(out / "locks" / f"{TASK}.lock")  # open() for reading would wait for a writer
    args = ["study", "run", spec, "--out", out] if command == "run" else ["study", "status", out]
    assert_one_error_line(minidyn(*args), 1, (f"locks/{TASK}.lock", "not a regular file"))


def test_a_100_mib_lock_is_refused_unread(study):
    spec, out = study
    with open(out / "locks" / f"{TASK}.lock", "wb") as f:
        f.truncate(100 << 20)
    r = minidyn("study", "run", spec, "--out", out)
    assert_one_error_line(r, 1, (f"locks/{TASK}.lock", "larger than 4096 bytes"))


# --- locks whose holder is gone, however it looks -------------------------------------------------
def _run_finishes(spec: Path, out: Path, *extra) -> SimpleNamespace:
    r = minidyn("study", "run", spec, "--out", out, *extra)
    assert r.exit_code == 0 and "Traceback" not in r.stderr, r.stderr
    assert (out / "cells" / TASK.rsplit(".", 1)[0] / "study-eval.json").is_file()
    return r


def test_a_lock_whose_pid_now_belongs_to_another_process_is_taken_over(study):
    """pid reuse: the lock's pid is alive on this host, fresh, but is not the process that
    claimed it (another start time): taken over at once, not after --stale-after (600 s)."""
    spec, out = study
    undo(out)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / "locks" / f"{TASK}.lock").write_text(json.dumps(
            {"host": socket.gethostname(), "pid": other.pid, "token": "old", "started": "an-old-boot:1"}))
        _run_finishes(spec, out)
    finally:
        other.kill()
        other.wait()


def test_a_live_lock_of_a_task_the_spec_no_longer_has_does_not_fill_a_jobs_slot(study):
    """A worker of a dead runner holds a task the spec no longer names (an edited grid): it
    filled the one --jobs slot forever (nobody would ever take that task over)."""
    spec, out = study
    undo(out)
    hold = ("import sys, time; from pathlib import Path; from minidyn.studies.lock import claim; "
            "lock = claim(Path(sys.argv[1]), runner=int(sys.argv[2])); lock.keep_alive(0.5); time.sleep(120)")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out / "locks" / "gone_seed-0.train.lock"),
                               str(dead.pid)])
    try:
        while not (out / "locks" / "gone_seed-0.train.lock").exists():
            time.sleep(0.02)
        _run_finishes(spec, out, "--jobs", "1")
    finally:
        holder.kill()
        holder.wait()


def test_a_heartbeat_in_the_future_is_stale(study):
    spec, out = study
    undo(out)
    lock = out / "locks" / f"{TASK}.lock"
    lock.write_text(json.dumps({"host": "another-host", "pid": 4242, "token": "old"}))
    backdate(lock, -30 * 86400)  # touched "a month from now"
    _run_finishes(spec, out)


def test_an_empty_lock_is_named_by_status_and_taken_over_after_a_short_grace(study):
    spec, out = study
    undo(out)
    lock = out / "locks" / f"{TASK}.lock"
    lock.write_text("")  # its claimer died between creating and writing it
    r = CliRunner().invoke(main, ["study", "status", str(out)], catch_exceptions=False)
    assert r.exit_code == 0 and f"{TASK:<40} running (no lock record in it, heartbeat 0s ago" in r.output, r.output
    backdate(lock, 30)
    r = CliRunner().invoke(main, ["study", "status", str(out)], catch_exceptions=False)
    assert f"{TASK:<40} stale (no lock record in it, heartbeat 30s ago)" in r.output, r.output
    _run_finishes(spec, out)


# --- tampered results -----------------------------------------------------------------------------
def _tamper(out: Path, change) -> Path:
    path = out / "cells" / "standard_seed-0" / "study-eval.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    return path


def _set_accuracy(value):
    def change(record):
        record["results"]["last"]["eps"]["0.1"]["accuracy"]["pgd10"] = value
    return change


def _set_n(record):
    record["results"]["best"]["eps"]["0.1"]["n"] = 39


TAMPERED = {
    "accuracy-250": (_set_accuracy(250.0), "accuracy of 'pgd10' is 250.0, not a percentage in [0, 100]"),
    "accuracy-minus-40": (_set_accuracy(-40.0), "accuracy of 'pgd10' is -40.0, not a percentage in [0, 100]"),
    "accuracy-text": (_set_accuracy("high"), "'high'"),
    "n-inconsistent": (_set_n, "different n (39, 40)"),
    "results-a-list": (lambda r: r.update(results=[1]), "results is [1], not a minidyn study result value"),
    "eps-not-an-object": (lambda r: r["results"]["last"].update(eps=7), "eps is 7, not a minidyn study result value"),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_a_tampered_study_eval_json_leaves_its_cell_out_of_the_report_saying_why(study, name):
    """The report leaves the cell out with a line naming the file and the problem (rather than
    refusing the whole report: the other cells' numbers stand); before, 250 and -40 were
    averaged in and a wrong type was a traceback. `study status` says why the cell's result is
    not used, and `study run` evaluates the cell again."""
    spec, out = study
    change, words = TAMPERED[name]
    path = _tamper(out, change)
    r = CliRunner().invoke(main, ["study", "report", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = (out / "report" / "report.md").read_text()
    assert "1 of 2 cells done." in report
    line = next(x for x in report.splitlines() if x.startswith("- invalid result of standard_seed-0"))
    assert str(path) in line and words in line, line
    numbers = json.loads((out / "report" / "results.json").read_text())
    standard = next(row for row in numbers["tables"]["last/eps=0.1"] if row["setting"] == "standard")
    assert standard["columns"]["pgd10"]["n"] == 0  # not averaged in
    status = CliRunner().invoke(main, ["study", "status", str(out)], catch_exceptions=False)
    assert f"its result is not used: {path}" in status.output, status.output
    _run_finishes(spec, out)
    assert "started standard_seed-0.train" not in r.output
    from minidyn.files.readers import read_study_eval
    read_study_eval(path)  # made again, valid


# --- a full disk ----------------------------------------------------------------------------------
def test_a_full_disk_in_study_report_names_where(study, monkeypatch):
    """matplotlib's own write of a figure fails with ENOSPC and an OSError that names no file:
    the one line names the report folder."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    _, out = study
    r = CliRunner().invoke(main, ["study", "report", str(out)], catch_exceptions=False)
    assert_one_error_line(r, 1, (f"{out / 'report'}", "No space left on device", "figures"))
