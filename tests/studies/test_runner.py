"""Running studies: finished cells are skipped, killed ones resume exactly, runners share a study."""
import json
import os
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
        found[cell.name, "eval"] = record["results"]
        found[cell.name, "metrics"] = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                                       for line in (cell / "metrics.jsonl").read_text().splitlines()]
        for name in ("checkpoint.npz", "best-val.npz"):
            with np.load(cell / name) as z:
                found[cell.name, name] = {k: z[k].tobytes() for k in z.files if k != "meta"}
    return found


def wait_for_a_checkpoint(out: Path, timeout: float = 120) -> None:
    """Until some cell of the study in `out` has written its first checkpoint (mid-study)."""
    deadline = time.time() + timeout
    while not list((out / "cells").glob("*/checkpoint.npz")) and time.time() < deadline:
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
lock = claim(Path(sys.argv[1]))
time.sleep(float(sys.argv[3]))
Path(sys.argv[2]).write_text(repr(time.time()))
lock.release()
"""


def test_jobs_counts_the_tasks_other_processes_of_this_host_hold(tiny_text, tmp_path, monkeypatch):
    # a runner killed with kill -9 leaves its workers running: the next one must count them
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
    orphan = subprocess.Popen([sys.executable, "-c", HOLD, str(held), str(released), "3"])
    while not holder(held) and orphan.poll() is None:  # until its record (pid) is written
        time.sleep(0.02)
    monkeypatch.setattr(runner, "WAIT_FOR_OTHERS", 0.1)
    starts = []
    assert runner.run_study(spec, out, jobs=1, log=lambda m: starts.append((time.time(), m))) == []
    assert orphan.wait(timeout=30) == 0
    first_start = min(t for t, m in starts if m.startswith("started"))
    assert first_start > float(released.read_text())  # the one slot was the orphan's until then
    assert len([m for _, m in starts if m.startswith("started")]) == 2


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
    assert "1 task(s) failed or could not run: dataset-mnist.train" in result.stderr, result.stderr
    failure = json.loads((out / "failed" / "dataset-mnist.train.json").read_text())
    assert any(line.startswith("Error: ") for line in failure["last_lines"])
    assert (out / "cells" / "dataset-mnist-sample" / "study-eval.json").is_file()
    report = CliRunner().invoke(main, ["study", "report", str(out)], catch_exceptions=False)
    assert report.exit_code == 0
    text = (out / "report" / "report.md").read_text()
    assert "1 of 2 cells done." in text and "failed (left out of every number below): dataset-mnist" in text
