"""A run directory is one locked unit with a consistent history (docs/reliability.md, section 4).

`train` holds an exclusive lock on its run directory (a second `train` there is refused, the
read-only commands are not, a SIGKILLed holder leaves no lock behind); `--resume` refuses a run
whose checkpoint is gone while its history remains, whose config.json no longer matches the
checkpoint's record, or whose files are FIFOs; clean-up deletes only atomic_write's own
temporary files; a write that fails (a full disk) is one line and keeps the old file.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.errors import MinidynError
from minidyn.files.fileio import atomic_write, temporary_target
from minidyn.runs.rundir import LOCK_NAME, RunDir

EPOCHS = 3


def train_args(data_dir, out, *extra):
    """`train --resume` of a 3-epoch numpy softmax run on the tiny dataset (3 SGD steps an epoch)."""
    return ["train", "--backend", "numpy", "--model", "softmax", "--dataset", "mnist",
            "--data-dir", str(data_dir), "--epochs", str(EPOCHS), "--batch-size", "32", "--steps", "1",
            "--eval-limit", "16", "--eval-steps", "1", *extra, "--out", str(out), "--resume"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def minidyn(*args, timeout=60):
    """`minidyn ARGS` in a real process, run from / (a hang fails the test after `timeout` s)."""
    return subprocess.run([sys.executable, "-m", "minidyn.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd="/")


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_one_error_line(r, *words):
    assert r.exit_code == 1, r.output + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.fixture(scope="module")
def finished(tiny_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    r = cli(*train_args(tiny_mnist, out))
    assert r.exit_code == 0, r.output + r.stderr
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, to be attacked."""
    shutil.copytree(finished, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


# --- the lock ---------------------------------------------------------------------------------
# A `minidyn train` that stops before it logs epoch 2 (holding the lock, epoch 1's checkpoint
# written) and waits there until the file argv[1] exists; argv[2] is made when it waits.
HOLDER = """
import sys, time
from pathlib import Path
from minidyn.runs.rundir import RunDir
release, waiting = Path(sys.argv[1]), Path(sys.argv[2])
real = RunDir.log
def log(self, record):
    if record["epoch"] == 1:
        waiting.touch()
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    real(self, record)
RunDir.log = log
from minidyn.cli.main import main
sys.argv = ["minidyn", *sys.argv[3:]]
main()
"""


def start_holder(tmp_path, args):
    release, waiting = tmp_path / "release", tmp_path / "waiting"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(release), str(waiting), *map(str, args)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not waiting.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    return proc, release


def test_a_second_train_on_a_running_run_is_refused(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    holder, release = start_holder(tmp_path, train_args(tiny_mnist, out))
    try:
        second = minidyn(*train_args(tiny_mnist, out))
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.count("\n") == 1, second.stderr
        assert second.stderr.startswith(f"Error: {out} is in use by another minidyn run (host ")
        assert f"pid {holder.pid})" in second.stderr
        release.touch()
        _, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
    finally:
        holder.kill()
        holder.wait()
    assert epochs_logged(out) == list(range(EPOCHS))  # every epoch recorded once
    assert not (out / LOCK_NAME).exists()  # removed when the run ended


def test_a_sigkilled_holder_leaves_no_lock_behind(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    holder, _ = start_holder(tmp_path, train_args(tiny_mnist, out))
    assert f"pid {holder.pid}\n" in (out / LOCK_NAME).read_text()  # the holder is recorded
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    r = cli(*train_args(tiny_mnist, out))
    assert r.exit_code == 0, r.output + r.stderr
    assert epochs_logged(out) == list(range(EPOCHS))
    assert not (out / LOCK_NAME).exists()


def test_eval_analyze_and_compare_read_a_locked_run(tiny_mnist, run, tmp_path):
    holder = RunDir(run)
    holder.lock()
    try:
        assert_one_error_line(cli(*train_args(tiny_mnist, run)), "is in use by another minidyn run",
                              f"pid {os.getpid()})")
        assert cli("eval", run, "--attacks", "clean,fgsm", "--limit", "16", "--json").exit_code == 0
        r = cli("analyze", run, "--limit", "16", "--trajectories", "2", "--trajectory-steps", "2",
                "--eps-grid", "0.3", "--no-plots", "--out", tmp_path / "analysis")
        assert r.exit_code == 0, r.output + r.stderr
        r = cli("compare", run, "--limit", "16")
        assert r.exit_code == 0, r.output + r.stderr
    finally:
        holder.unlock()
    assert cli(*train_args(tiny_mnist, run)).exit_code == 0  # unlocked: the run is usable again


# --- a consistent history ------------------------------------------------------------------------
def test_resume_without_the_checkpoint_of_a_run_with_history_is_refused(tiny_mnist, run):
    (run / "checkpoint.npz").unlink()
    before = snapshot(run)
    assert_one_error_line(cli(*train_args(tiny_mnist, run)), f"{EPOCHS} epochs of history but no checkpoint",
                          "checkpoint.npz is missing")
    assert snapshot(run) == before


def test_a_run_killed_between_its_first_metrics_line_and_its_first_checkpoint_resumes(tiny_mnist, run):
    """Epoch 1's line without a checkpoint is uncommitted work (logged just before the first
    checkpoint), not lost history: it is dropped and the run continues."""
    finished = epochs_logged(run)
    (run / "checkpoint.npz").unlink()
    (run / "summary.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[0])
    r = cli(*train_args(tiny_mnist, run))
    assert r.exit_code == 0, r.output + r.stderr
    assert epochs_logged(run) == finished


def test_resume_with_a_dangling_checkpoint_link_is_refused(tiny_mnist, run, tmp_path):
    (run / "checkpoint.npz").unlink()
    (run / "checkpoint.npz").symlink_to(tmp_path / "gone.npz")
    before = snapshot(run)
    assert_one_error_line(cli(*train_args(tiny_mnist, run)), "checkpoint.npz is a dangling symbolic link")
    assert snapshot(run) == before and (run / "checkpoint.npz").is_symlink()


def test_resume_with_lost_metrics_lines_is_refused(tiny_mnist, run):
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines(True)[0])
    before = snapshot(run)
    assert_one_error_line(cli(*train_args(tiny_mnist, run)), f"is at epoch {EPOCHS}",
                          "metrics.jsonl has no line for epoch 2")
    assert snapshot(run) == before


def test_an_edited_config_eps_is_refused(tiny_mnist, run):
    config = json.loads((run / "config.json").read_text())
    trained = config["eps"]
    (run / "config.json").write_text(json.dumps({**config, "eps": 0.2}))
    before = snapshot(run)
    assert_one_error_line(cli(*train_args(tiny_mnist, run, "--eps", "0.2", "--step-size", str(config["step_size"]))),
                          f"was trained with eps {trained!r}, but config.json says 0.2")
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["checkpoint.npz", "metrics.jsonl", "config.json", "summary.json"])
def test_a_fifo_in_a_run_is_refused_without_hanging(tiny_mnist, run, name):
    (run / name).unlink()
    os.mkfifo(run / name)
    proc = minidyn(*train_args(tiny_mnist, run), timeout=30)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == f"Error: {run / name} is a FIFO, not a regular file; a minidyn run cannot use it\n"


# --- clean-up of minidyn's own files only --------------------------------------------------------
def test_resume_keeps_a_users_tmp_files(tiny_mnist, run):
    (run / ".draft-notes.tmp").write_text("my notes")
    (run / "fosc" / ".plot.tmp").write_text("mine too")
    (run / ".summary.json.minidyn-ab12cd_3.tmp").write_text("{")  # a write a crash cut short
    r = cli(*train_args(tiny_mnist, run))
    assert r.exit_code == 0, r.output + r.stderr
    assert (run / ".draft-notes.tmp").read_text() == "my notes"
    assert (run / "fosc" / ".plot.tmp").read_text() == "mine too"
    assert not (run / ".summary.json.minidyn-ab12cd_3.tmp").exists()


def test_a_directory_of_foreign_tmp_files_is_not_an_empty_run(tiny_mnist, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / ".thesis.tmp").write_text("chapter 3")
    assert_one_error_line(cli(*train_args(tiny_mnist, out)), "holds no minidyn run to resume")
    assert [p.name for p in out.iterdir()] == [".thesis.tmp"]
    assert (out / ".thesis.tmp").read_text() == "chapter 3"


def test_atomic_write_names_its_temporary_file_recognisably(tmp_path):
    seen = []
    atomic_write(tmp_path / "checkpoint.npz", lambda f: seen.extend(os.listdir(tmp_path)), mode="wb")
    assert [temporary_target(name) for name in seen] == ["checkpoint.npz"]
    assert [temporary_target(n) for n in (".draft-notes.tmp", ".thesis.tmp", ".a.minidyn-x.tmp")] == [None] * 3


# --- a failing write (a full disk) ---------------------------------------------------------------
def no_space(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_in_atomic_write_is_one_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.jsonl"
    target.write_text("old\n")

    def write_then_fill_the_disk(f):
        f.write("new, partial")
        no_space()

    with pytest.raises(MinidynError) as caught:
        atomic_write(target, write_then_fill_the_disk)
    assert str(caught.value) == f"cannot write {target}: No space left on device (the previous version is kept)"
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(MinidynError, match="No space left on device"):
        atomic_write(target, lambda f: f.write("new"))
    assert os.listdir(tmp_path) == ["metrics.jsonl"] and target.read_text() == "old\n"


def test_a_full_disk_during_a_resume_is_one_line(tiny_mnist, run, monkeypatch):
    summary = (run / "summary.json").read_bytes()
    monkeypatch.setattr(os, "fsync", no_space)
    assert_one_error_line(cli(*train_args(tiny_mnist, run)),
                          f"Error: cannot write {run / 'summary.json'}: No space left on device "
                          "(the previous version is kept)")
    assert (run / "summary.json").read_bytes() == summary
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
