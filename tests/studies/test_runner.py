"""Running studies: finished cells are skipped, killed ones resume exactly, runners share a study."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main

pytestmark = pytest.mark.slow


def study(spec, out, *extra, **kw):
    return subprocess.run([sys.executable, "-m", "minidyn.cli.main", "study", "run", str(spec),
                           "--out", str(out), *extra], capture_output=True, text=True, **kw)


def results(out: Path) -> dict:
    """What a study computed, without its timings: every result, metrics line and weight."""
    found = {}
    for cell in sorted((out / "cells").iterdir()):
        record = json.loads((cell / "study-eval.json").read_text())
        for which in record["results"].values():
            which.pop("seconds")
            which.pop("examples", None)  # names the per-example file by a random token
        found[cell.name, "eval"] = record["results"]
        if (cell / "study-eval.examples.npz").is_file():
            with np.load(cell / "study-eval.examples.npz") as z:
                found[cell.name, "examples"] = {k: z[k].tobytes() for k in z.files if k != "token"}
        found[cell.name, "metrics"] = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                                       for line in (cell / "metrics.jsonl").read_text().splitlines()]
        for name in ("checkpoint.npz", "best-val.npz"):
            with np.load(cell / name) as z:
                found[cell.name, name] = {k: z[k].tobytes() for k in z.files if k != "meta"}
    return found


def wait_for_a_checkpoint(out: Path, timeout: float = 120) -> None:
    """Until some cell of the study in `out` has written its first checkpoint (mid-study)."""
    deadline = time.time() + timeout
    while not list((out / "cells").glob("*/checkpoint.npz")):
        if time.time() > deadline:
            pytest.fail(f"no cell of {out} wrote a checkpoint within {timeout:.0f} s")
        time.sleep(0.05)


def resume_and_compare(spec, out: Path, uninterrupted: Path) -> None:
    """The stopped study in `out` was unfinished; run again, it ends as the uninterrupted one."""
    assert len(list((out / "cells").glob("*/study-eval.json"))) < 4
    resumed = study(spec, out, "--jobs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert results(out) == results(uninterrupted)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_text):
    base = tmp_path_factory.mktemp("reference")
    spec = base / "tiny.toml"
    spec.write_text(tiny_text)
    done = study(spec, base / "study", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    return spec, base / "study"


def test_a_study_runs_every_cell_once_and_a_second_run_skips_them(reference):
    spec, out = reference
    names = sorted(p.name for p in (out / "cells").iterdir())
    assert names == ["dynamic_seed-0", "dynamic_seed-1", "standard_seed-0", "standard_seed-1"]
    for cell in names:
        assert (out / "logs" / f"{cell}.train.log").read_text().count("claimed") == 1
        config = json.loads((out / "cells" / cell / "config.json").read_text())
        assert config["val_size"] == 60 and config["final_eval"] is False
        summary = json.loads((out / "cells" / cell / "summary.json").read_text())
        assert "test_clean_acc" not in summary and summary["best_val"]["val_n"] == 30  # evaluated once, by the study
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*") if p.is_file()}
    again = study(spec, out)
    assert again.returncode == 0 and "started" not in again.stdout, again.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*") if p.is_file()}


def test_a_study_killed_with_sigkill_mid_cell_ends_as_an_uninterrupted_one(reference, tmp_path):
    spec, uninterrupted = reference
    out = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "minidyn.cli.main", "study", "run", str(spec),
                             "--out", str(out), "--jobs", "2"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_a_checkpoint(out)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-study
    proc.wait()
    resume_and_compare(spec, out, uninterrupted)


def test_sigterm_stops_the_workers_with_their_checkpoints_and_the_study_continues(reference, tmp_path):
    spec, uninterrupted = reference
    out = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "minidyn.cli.main", "study", "run", str(spec),
                             "--out", str(out), "--jobs", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_a_checkpoint(out)
    proc.send_signal(signal.SIGTERM)  # the runner only: it stops its workers
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "continues" in err, err
    assert not list((out / "locks").iterdir())  # every worker released its task
    resume_and_compare(spec, out, uninterrupted)


def test_two_runners_on_one_study_never_run_a_task_twice(reference, tmp_path):
    spec, uninterrupted = reference
    out = tmp_path / "shared"
    runners = [subprocess.Popen([sys.executable, "-m", "minidyn.cli.main", "study", "run", str(spec),
                                 "--out", str(out), "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [r.communicate(timeout=300) for r in runners]
    assert all(r.returncode == 0 for r in runners), [o[1] for o in outputs]
    for log in (out / "logs").glob("*.log"):
        assert log.read_text().count("claimed") == 1, log
    assert results(out) == results(uninterrupted)


HOLD = """
import sys, time
from pathlib import Path
from minidyn.studies.lock import claim
lock = claim(Path(sys.argv[1]), runner=int(sys.argv[4]))  # a worker's lock, its runner's pid in it
lock.keep_alive(0.5)
time.sleep(float(sys.argv[3]))
Path(sys.argv[2]).write_text(repr(time.time()))
lock.release()
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def run_beside_a_held_task(tiny_text, tmp_path, monkeypatch, runner_pid: int) -> tuple[float, list]:
    """Run the one-seed tiny study (2 tasks) with --jobs 1 while a process that says it was
    started by `runner_pid` holds its first task for 3 s: (when that process let go, the
    runner's log with times)."""
    from minidyn.studies import runner
    from minidyn.studies.lock import holder
    from minidyn.studies.spec import load_spec
    from minidyn.studies.tasks import StudyDir
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_text.replace("seed = [0, 1]", "seed = [0]"))
    spec = load_spec(path)
    out = tmp_path / "study"
    StudyDir(out).prepare(spec)
    held, released = StudyDir(out).lock(StudyDir(out).tasks(spec)[0]), tmp_path / "released"
    worker = subprocess.Popen([sys.executable, "-c", HOLD, str(held), str(released), "3", str(runner_pid)])
    while not holder(held) and worker.poll() is None:  # until its record (pid) is written
        time.sleep(0.02)
    monkeypatch.setattr(runner, "WAIT_FOR_OTHERS", 0.1)
    log = []
    assert runner.run_study(spec, out, jobs=1, log=lambda m: log.append((time.time(), m))) == []
    assert worker.wait(timeout=30) == 0
    return float(released.read_text()), log


def test_jobs_counts_the_tasks_a_dead_runner_left_running_on_this_host(tiny_text, tmp_path, monkeypatch):
    # a runner killed with kill -9 leaves its workers running: the next one must count them
    released, log = run_beside_a_held_task(tiny_text, tmp_path, monkeypatch, runner_pid=_dead_pid())
    starts = [t for t, m in log if m.startswith("started")]
    assert min(starts) > released  # the one slot was the orphan's until then
    assert len(starts) == 2


def test_jobs_does_not_count_another_live_runners_workers(tiny_text, tmp_path, monkeypatch):
    # array tasks of one node, each `--jobs 1`: each runs its own task at once
    other_runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        released, log = run_beside_a_held_task(tiny_text, tmp_path, monkeypatch, runner_pid=other_runner.pid)
    finally:
        other_runner.kill()
        other_runner.wait()
    starts = [t for t, m in log if m.startswith("started")]
    assert min(starts) < released  # started beside the other runner's worker


def test_a_runner_whose_study_toml_is_rewritten_stops_with_one_line(tiny_text, tmp_path):
    """study.toml rewritten mid-study (by hand: a second `study run` with another spec is now
    refused, see below): the first runner once relaunched its tasks without end (its workers
    ran the new spec and found them done); now it stops its workers, keeping their
    checkpoints, and says why in one line."""
    from minidyn.files.fileio import atomic_write
    from minidyn.studies.tasks import StudyDir
    spec, out = tmp_path / "tiny.toml", tmp_path / "study"
    spec.write_text(tiny_text.replace("seed = [0, 1]", "seed = [0]"))
    first = subprocess.Popen([sys.executable, "-m", "minidyn.cli.main", "study", "run", str(spec),
                              "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    edited = tmp_path / "edited.toml"
    edited.write_text(spec.read_text().replace("limit = 40", "limit = 30"))
    try:
        wait_for_a_checkpoint(out)
        # by hand: a second `study run` with the edited spec is refused while this one runs
        atomic_write(StudyDir(out).spec_file, lambda f: f.write(edited.read_text()))
        stdout, stderr = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 1, (stdout, stderr)
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1 and "study.toml changed" in stderr, stderr
    assert stdout.count("started") == 1, stdout  # nothing relaunched
    assert not list((out / "locks").glob("*.lock"))  # its worker stopped and let go


def test_a_worker_refuses_a_study_toml_that_is_not_its_runners(tiny_text, tmp_path):
    from minidyn.studies.spec import load_spec
    from minidyn.studies.tasks import StudyDir
    spec = tmp_path / "tiny.toml"
    spec.write_text(tiny_text)
    out = tmp_path / "study"
    StudyDir(out).prepare(load_spec(spec))
    result = CliRunner().invoke(main, ["study", "worker", str(out), "standard_seed-0", "train",
                                       "--spec-digest", "0" * 64])
    assert result.exit_code == 78 and result.stderr.count("\n") == 1, result.output
    assert "not the spec the runner runs" in result.stderr
    assert not (out / "cells" / "standard_seed-0").exists()


def test_the_library_entry_point_is_the_worker_the_runner_starts(tiny_text, tmp_path):
    """`python -m minidyn.studies.worker` (what run_study starts): the CLI's exit codes and its
    one `Error:` line, with no command line module involved."""
    from minidyn.studies.spec import load_spec
    from minidyn.studies.tasks import SPEC_CHANGED, StudyDir
    spec = tmp_path / "tiny.toml"
    spec.write_text(tiny_text)
    out = tmp_path / "study"
    StudyDir(out).prepare(load_spec(spec))
    proc = subprocess.run([sys.executable, "-m", "minidyn.studies.worker", str(out), "standard_seed-0", "train",
                           "--spec-digest", "0" * 64], capture_output=True, text=True, timeout=120)
    assert proc.returncode == SPEC_CHANGED == 78, proc.stderr
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "not the spec the runner runs" in proc.stderr and proc.stdout == ""
    assert not (out / "cells" / "standard_seed-0").exists()


def test_runs_the_spec_no_longer_names_are_named_in_a_warning_and_kept(reference, tmp_path):
    spec, done = reference
    out = tmp_path / "study"
    shutil.copytree(done, out)
    (out / "cells" / "seed-0").mkdir()  # a run named before every grid key named a cell
    (out / "cells" / "seed-0" / "config.json").write_text("{}")
    result = CliRunner().invoke(main, ["study", "run", str(spec), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "(kept, not used): seed-0;" in warnings[0], result.output
    assert (out / "cells" / "seed-0" / "config.json").is_file()


def test_a_spec_that_would_change_a_trained_cell_is_refused_naming_it(reference, tmp_path):
    spec, out = reference
    edited = tmp_path / "edited.toml"
    edited.write_text(spec.read_text().replace("lr = 0.05", "lr = 0.02"))
    result = CliRunner().invoke(main, ["study", "run", str(edited), "--out", str(out)])
    assert result.exit_code == 1
    assert "cell standard_seed-0" in result.stderr and "lr = 0.05" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_status_says_what_each_task_is_doing(reference):
    _, out = reference
    result = CliRunner().invoke(main, ["study", "status", str(out)], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.output.splitlines()[-1] == "4 done"


def test_a_failing_cell_is_recorded_and_listed_and_the_others_go_on(tiny_text, tmp_path):
    spec = tmp_path / "failing.toml"
    # mnist's IDX files are not in /nonexistent: that cell fails when it loads its data
    spec.write_text(tiny_text.replace('method = ["standard", "dynamic"]', 'method = ["standard"]')
                    .replace("seed = [0, 1]", 'seed = [0]\ndataset = ["mnist", "mnist-sample"]')
                    .replace("[grid]", 'data_dir = "/nonexistent"\n\n[grid]'))
    out = tmp_path / "study"
    result = study(spec, out)
    assert result.returncode == 1
    failed = "standard_seed-0_dataset-mnist"
    assert f"1 task(s) failed or could not run: {failed}.train" in result.stderr, result.stderr
    failure = json.loads((out / "failed" / f"{failed}.train.json").read_text())
    assert any(line.startswith("Error: ") for line in failure["last_lines"])
    assert (out / "cells" / "standard_seed-0_dataset-mnist-sample" / "study-eval.json").is_file()
    report = CliRunner().invoke(main, ["study", "report", str(out)], catch_exceptions=False)
    assert report.exit_code == 0
    text = (out / "report" / "report.md").read_text()
    assert "1 of 2 cells done." in text and f"failed (left out of every number below): {failed}" in text


# --- issue 25: concurrent runners, takeovers, suspended workers ---------------------------------
def one_seed(tiny_text, tmp_path, name="tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(tiny_text.replace("seed = [0, 1]", "seed = [0]"))
    return path


def test_a_second_runner_with_another_train_is_refused_while_the_first_starts_up(tiny_text, tmp_path):
    """Runner B with another [train] on A's --out during A's first worker's start-up (no cell
    trained yet, no task claimed): both exited 0 and every cell was trained with B's settings.
    Now B is refused in one line naming the difference, and A trains with its own."""
    spec, out = one_seed(tiny_text, tmp_path), tmp_path / "study"
    edited = tmp_path / "edited.toml"
    edited.write_text(spec.read_text().replace("lr = 0.05", "lr = 0.02"))
    first = subprocess.Popen([sys.executable, "-m", "minidyn.cli.main", "study", "run", str(spec),
                              "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list(out.glob("locks/runner-*.runner")) and time.time() < deadline:
            time.sleep(0.01)
        second = CliRunner().invoke(main, ["study", "run", str(edited), "--out", str(out)])
        stdout, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert second.exit_code == 1 and second.stderr.count("\n") == 1, second.output
    assert "another `study run`" in second.stderr and "[train] lr = 0.05 there, 0.02 here" in second.stderr
    assert first.returncode == 0, stderr
    for config in (out / "cells").glob("*/config.json"):
        assert json.loads(config.read_text())["lr"] == 0.05
    assert not list((out / "locks").iterdir())  # the runner's mark is gone with it


def test_a_runner_never_starts_a_worker_for_a_task_another_claim_is_taking_over(tiny_text, tmp_path, monkeypatch):
    """The first task's lock is stale (its holder died) and another claimer's fresh .takeover
    is beside it: the runner started a worker for it at every look (each found it busy; 40
    in 40 s). Now it leaves the task until the takeover is over, and starts it once."""
    from minidyn.studies import runner
    from minidyn.studies.spec import load_spec
    from minidyn.studies.tasks import StudyDir
    spec = load_spec(one_seed(tiny_text, tmp_path))
    study = StudyDir(tmp_path / "study")
    study.prepare(spec)
    lock = study.lock(study.tasks(spec)[0])
    lock.write_text(json.dumps({"host": "gone", "pid": 1, "token": "dead"}))
    old = time.time() - 7200
    os.utime(lock, (old, old))
    released = tmp_path / "released"
    claimer = subprocess.Popen([sys.executable, "-c", HOLD, str(lock) + ".takeover", str(released), "3",
                                str(os.getpid())])
    while not (lock.parent / (lock.name + ".takeover")).exists() and claimer.poll() is None:
        time.sleep(0.02)
    monkeypatch.setattr(runner, "WAIT_FOR_OTHERS", 0.1)
    log = []
    assert runner.run_study(spec, study.path, jobs=2, log=lambda m: log.append((time.time(), m))) == []
    assert claimer.wait(timeout=30) == 0
    starts = [t for t, m in log if m.startswith(f"started {lock.stem}")]
    assert len(starts) == 1 and starts[0] > float(released.read_text()), log


def suspend_a_worker_mid_task(out: Path, timeout: float = 120) -> tuple[Path, int]:
    """SIGSTOP a worker of the study in `out` whose training task has a checkpoint and no result
    yet; return its lock and pid. A tiny cell can finish between a look at the locks and the
    signal (CI once found no training lock left), so the state is checked again once stopped."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for lock in (out / "locks").glob("*.train.lock"):
            cell = out / "cells" / lock.name.removesuffix(".train.lock")
            pid = _holder_pid(lock)
            if pid is None or not (cell / "checkpoint.npz").is_file():
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            if _holder_pid(lock) == pid and not (cell / "study-eval.json").exists():
                return lock, pid
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail(f"no worker of {out} was seen mid-task within {timeout:.0f} s")


def _holder_pid(lock: Path) -> int | None:
    try:
        return json.loads(lock.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_worker_suspended_past_stale_after_loses_its_task_cleanly(reference, tmp_path):
    """A worker stopped (Slurm suspend, a paused VM) past --stale-after is taken over by a
    second runner; resumed, it finds the task lost and stops without writing (exit BUSY), its
    runner does not count it failed, and the new holder, which waited for the run directory,
    finishes the cell: both runners exit 0, every cell done once, bit-identical."""
    spec, uninterrupted = reference
    out = tmp_path / "study"
    command = [sys.executable, "-m", "minidyn.cli.main", "study", "run", str(spec), "--out", str(out),
               "--jobs", "2", "--stale-after", "2"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        lock, victim = suspend_a_worker_mid_task(out)
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while _holder_pid(lock) in (victim, None) and time.time() < deadline:
            time.sleep(0.05)  # until the second runner's worker took the task over
        os.kill(victim, signal.SIGCONT)
        outputs = [r.communicate(timeout=180) for r in (first, second)]
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert "FAILED" not in outputs[0][0] + outputs[1][0] and not list((out / "failed").iterdir())
    log = (out / "logs" / lock.name.replace(".lock", ".log")).read_text()
    assert log.count("claimed") == 2 and "was taken over by another process" in log, log
    assert results(out) == results(uninterrupted)


def test_the_task_log_records_the_thread_count(reference):
    """Resumes are bit-identical only with the same threads per worker (cores / --jobs): the
    log says which each claim ran with."""
    from minidyn.studies.runner import cores
    _, out = reference
    threads = max(1, cores() // 2)  # the reference ran with --jobs 2
    assert f", {threads} threads)" in (out / "logs" / "standard_seed-0.train.log").read_text()


def test_sigterm_while_a_worker_starts_stops_that_worker_too(tiny_text, tmp_path, monkeypatch):
    """SIGTERM between a worker's Popen and the runner's record of it once raised there and
    left that worker running on, holding its task, after the runner stopped (an orphan; and,
    now and then, a lock left behind in the SIGTERM test above). The signal is now held until the
    worker is recorded, and the worker is stopped with the others."""
    from minidyn.studies import runner
    from minidyn.studies.spec import load_spec
    started = []

    def start_then_sigterm(*args, **kwargs):
        proc = start(*args, **kwargs)
        started.append(proc)
        os.kill(os.getpid(), signal.SIGTERM)  # the runner's handler runs here, before the record
        time.sleep(0.01)
        return proc

    start = runner._start
    monkeypatch.setattr(runner, "_start", start_then_sigterm)
    spec, out = load_spec(one_seed(tiny_text, tmp_path)), tmp_path / "study"
    try:
        with pytest.raises(runner.Stopped) as stopped:
            runner.run_study(spec, out, jobs=1, log=lambda m: None)
        assert stopped.value.exit_code == 143
        assert len(started) == 1 and started[0].poll() is not None  # stopped, not left running
        assert not list((out / "locks").glob("*.lock"))
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
