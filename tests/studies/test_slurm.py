"""`minidyn study slurm` against a real Slurm: a single-node cluster on localhost (slurm_cluster.py).

The cluster tests skip, with the reason, where no cluster can be started (not root, Slurm not
installed); with MINIDYN_REQUIRE_SLURM=1 (.ci/run) they fail instead. Every comparison is with
a local `study run` of the same spec at the same thread count (1 per task), bit for bit: every
result, metrics line and weight (test_runner.results).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minidyn.studies.slurm import SlurmOptions, script
from minidyn.studies.spec import load_spec
from minidyn.studies.tasks import StudyDir
from minidyn.studies.worker import CHECKPOINTED

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import LocalSlurm, unavailable  # noqa: E402
from test_runner import results  # noqa: E402

pytestmark = pytest.mark.slow

# One cell that trains for 30-40 s on one thread (8 epochs of 140 SGD steps): longer than
# slurmctld's 30 s between time-limit checks, so that its signal lands mid-training.
LONG = """\
# long: one cell, over a minute of training: longer than slurmctld's 30 s between time-limit
# checks even on a fast machine, so that the signal always comes mid-training
[train]
backend = "numpy"
model = "mlp"
method = "standard"
epochs = 24
limit = 7000
val_size = 100
eval_limit = 20
eval_steps = 2
steps = 20
batch_size = 50
lr = 0.05
eps = 0.1
lr_milestones = [24]

[grid]
seed = [0]

[eval]
attacks = ["clean", "fgsm"]
limit = 20
batch_size = 20
"""


def minidyn(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minidyn.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env, **kw)


CORES = len(os.sched_getaffinity(0))  # `study run --jobs CORES`: one thread per worker, as a Slurm task's


# --- the script, without a cluster ----------------------------------------------------------

def test_the_script_is_one_array_task_per_pending_cell_with_the_options_given(tiny_spec, tmp_path):
    done = minidyn("study", "slurm", tiny_spec, "--out", tmp_path / "s", "--time", "2:00:00", "--gpus", "1",
                   "--cpus", "4", "--partition", "gpu", "--array-parallel", "2", "--mem=16G", "-A", "lab")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text == (tmp_path / "s" / "logs" / "slurm.sbatch").read_text()
    for line in ["#SBATCH --array=0-3%2", "#SBATCH --cpus-per-task=4", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --time=2:00:00", "#SBATCH --partition=gpu", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@60", "#SBATCH --mem=16G", "#SBATCH -A lab",
                 "first=(standard_seed-0 dynamic_seed-0 standard_seed-1 dynamic_seed-1)",
                 'scontrol requeue "$SLURM_JOB_ID"']:
        assert line in text.splitlines() or line in text, line
    assert (tmp_path / "s" / "study.toml").read_text() == tiny_spec.read_text()
    bash = subprocess.run(["bash", "-n", str(tmp_path / "s" / "logs" / "slurm.sbatch")], capture_output=True)
    assert bash.returncode == 0, bash.stderr


def test_docs_show_the_script_as_study_slurm_writes_it(tmp_path):
    """docs/studies.md's script is the command's output (its paths put back)."""
    out = tmp_path / "cifar10"
    done = minidyn("study", "slurm", "table1-cifar10-gpu", "--out", out, "--gpus", "1", "--cpus", "8",
                   "--time", "24:00:00", "--array-parallel", "8", "--mem=32G")
    assert done.returncode == 0, done.stderr
    written = done.stdout.replace(str(out.resolve()), "/scratch/studies/cifar10").replace(
        sys.executable, "/home/me/venv/bin/python3")
    docs = (Path(__file__).parents[2] / "docs" / "studies.md").read_text()
    assert f"```bash\n{written}```" in docs


def test_fewer_tasks_share_the_cells_each_starting_from_its_own(tiny_text, tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(tiny_text)
    study = StudyDir(tmp_path / "s")
    parsed = load_spec(spec)
    study.prepare(parsed)
    text = script(study, parsed, SlurmOptions(tasks=2))
    assert "#SBATCH --array=0-1\n" in text
    assert "first=(standard_seed-0 standard_seed-1)" in text


def test_status_names_a_tasks_job_and_says_when_squeue_cannot_tell_its_state(tiny_spec, tmp_path):
    out = tmp_path / "s"
    assert minidyn("study", "slurm", tiny_spec, "--out", out).returncode == 0
    (out / "logs" / "dynamic_seed-1.train.slurm.json").write_text(json.dumps({"job": "12_3", "job_id": "15"}))
    status = minidyn("study", "status", out, env={**os.environ, "PATH": str(Path(sys.executable).parent)})
    assert status.returncode == 0, status.stderr
    assert re.search(r"^dynamic_seed-1\.train +waiting \[slurm 12_3, state unknown: no squeue here\]$",
                     status.stdout, re.M), status.stdout
    assert status.stdout.count("[slurm") == 1  # the tasks no array task ran have no job


@pytest.mark.parametrize("args, words", [
    (["--time", "tomorrow"], "--time 'tomorrow' is not a Slurm time"),
    (["--array=0-9"], "--array is set by `study slurm` itself"),
    (["oops"], "sbatch option 'oops' does not start with '-'"),
    (["--gpus", "-1"], "--gpus"),
])
def test_bad_options_are_one_line_errors_and_write_nothing(tiny_spec, tmp_path, args, words):
    done = minidyn("study", "slurm", tiny_spec, "--out", tmp_path / "s", *args)
    assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()


def test_an_array_task_signalled_mid_cell_checkpoints_there_and_resumes_exactly_without_slurm(tmp_path):
    """The array task's own path, on any machine: SIGUSR1 while its worker trains saves a
    mid-epoch checkpoint and exits CHECKPOINTED (79) with the lock released; run again, the
    task resumes at that batch and ends as an uninterrupted run."""
    spec = tmp_path / "medium.toml"
    spec.write_text(LONG.replace("limit = 7000", "limit = 2000").replace("epochs = 24", "epochs = 2")
                    .replace("lr_milestones = [24]", "lr_milestones = [2]"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    for out in (tmp_path / "ref", tmp_path / "stopped"):
        StudyDir(out).prepare(load_spec(spec))
    reference = subprocess.Popen([sys.executable, "-m", "minidyn.studies.slurm", "task", str(tmp_path / "ref")],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    task = [sys.executable, "-m", "minidyn.studies.slurm", "task", str(tmp_path / "stopped")]
    proc = subprocess.Popen(task, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (tmp_path / "stopped" / "cells" / "seed-0" / "checkpoint.npz").exists(), 120, "no checkpoint")
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == CHECKPOINTED, proc.stderr.read()
    log = (tmp_path / "stopped" / "logs" / "seed-0.train.log").read_text()
    assert re.search(r"SIGUSR1: seed-0.train stopped at epoch 2, batch \d+, checkpoint saved", log), log
    assert not list((tmp_path / "stopped" / "locks").iterdir())
    again = subprocess.run(task, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert re.search(r"resuming \S+ at epoch 2, batch \d+", (tmp_path / "stopped" / "logs" / "seed-0.train.log").read_text())
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    assert results(tmp_path / "stopped") == results(tmp_path / "ref")


def test_a_study_path_with_a_space_is_refused_before_anything_is_written(tiny_spec, tmp_path):
    done = minidyn("study", "slurm", tiny_spec, "--out", tmp_path / "my study")
    assert done.returncode == 1 and "choose a path without spaces" in done.stderr, done.stderr
    assert not (tmp_path / "my study").exists()


# --- against a running Slurm ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable()
    if reason:
        if os.environ.get("MINIDYN_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    local = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    local.start()
    daemons = [p.pid for p in local.procs.values()]
    yield local
    local.stop()
    for pid in daemons:  # every daemon it started is gone, and what it wrote
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not local.root.exists()


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def wait_for_jobs(cluster, timeout: float = 240) -> dict:
    """Until every job the cluster knows has ended; {job: final state}. A requeued job is held
    back for two minutes (its begin time, set by slurmctld); the wait lets it start after 5 s
    (sooner, its launch can still meet the revocation of its previous run's credential, and
    slurmctld then kills it: "Job credential revoked")."""
    deadline, held = time.time() + timeout, {}
    while True:
        queue = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T %r"], env=cluster.env,
                               capture_output=True, text=True).stdout.split("\n")
        jobs = {w[0]: w[1:] for w in (line.split() for line in queue) if len(w) >= 2}
        if jobs and all(state[0] in FINAL for state in jobs.values()):
            return {job: state[0] for job, state in jobs.items()}
        assert time.time() < deadline, f"jobs not ended: {jobs}\n{cluster.logs()}"
        for job, state in jobs.items():
            if state[0] == "PENDING" and state[-1] == "BeginTime" \
                    and time.time() - held.setdefault(job, time.time()) > 5:
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"],
                               env=cluster.env, capture_output=True)
                del held[job]
        time.sleep(0.5)


def submit(cluster, spec, out, *options) -> str:
    done = minidyn("study", "slurm", spec, "--out", out, "--cpus", "1", *options, "--submit", env=cluster.env)
    assert done.returncode == 0, done.stderr
    return re.search(r"submitted job (\d+)", done.stdout).group(1)


def slurm_logs(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((out / "logs").glob("slurm-*.out")))


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory, tiny_text):
    base = tmp_path_factory.mktemp("reference")
    (base / "tiny.toml").write_text(tiny_text)
    done = minidyn("study", "run", base / "tiny.toml", "--out", base / "study", "--jobs", str(CORES))
    assert done.returncode == 0, done.stderr
    return base / "tiny.toml", base / "study"


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    """The long cell trained by a local `study run` on one thread; started in the background,
    so that it trains while the cluster's jobs do (the node has a core for each)."""
    base = tmp_path_factory.mktemp("long")
    (base / "long.toml").write_text(LONG)
    proc = subprocess.Popen([sys.executable, "-m", "minidyn.cli.main", "study", "run", str(base / "long.toml"),
                             "--out", str(base / "study"), "--jobs", str(CORES)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finished() -> Path:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()
        return base / "study"
    yield base / "long.toml", finished
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_study_submitted_as_an_array_ends_as_a_local_study_run(cluster, tiny_reference, tmp_path):
    spec, reference = tiny_reference
    out = tmp_path / "study"
    job = submit(cluster, spec, out)
    states = wait_for_jobs(cluster)
    assert {state for j, state in states.items() if j.startswith(f"{job}_")} == {"COMPLETED"}, states
    assert results(out) == results(reference), slurm_logs(out)
    status = minidyn("study", "status", out, env=cluster.env)
    assert status.returncode == 0, status.stderr
    lines = [line for line in status.stdout.splitlines() if ".train" in line]
    assert len(lines) == 4 and all(re.search(rf"done \[slurm {job}_\d not queued\]", line) for line in lines), status.stdout
    assert all("1 threads" in p.read_text() for p in (out / "logs").glob("*.train.log"))


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.1)


def test_a_task_requeued_mid_cell_resumes_and_ends_bit_identical(cluster, long_reference, tmp_path):
    spec, reference = long_reference
    out = tmp_path / "study"
    job = submit(cluster, spec, out)
    cell = out / "cells" / "seed-0"
    _wait_for(lambda: (cell / "checkpoint.npz").exists(), 120, "no checkpoint")
    status = minidyn("study", "status", out, env=cluster.env)
    assert re.search(rf"seed-0.train +running .*\[slurm {job}_0 RUNNING\]", status.stdout), status.stdout
    requeue = subprocess.run(["scontrol", "requeue", f"{job}_0"], env=cluster.env, capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    assert wait_for_jobs(cluster)[f"{job}_0"] == "COMPLETED", slurm_logs(out) + cluster.logs()
    log = (out / "logs" / "seed-0.train.log").read_text()
    # a requeue of a running job is a preemption's path: SIGTERM to every process of the job
    # (SIGKILL KillWait s later), on which the worker saves a mid-epoch checkpoint and stops
    assert re.search(r"SIGTERM: seed-0.train stopped at epoch \d+, batch \d+, checkpoint saved", log), log
    assert re.search(r"resuming \S+ at epoch \d+, batch \d+", log), log  # resumed at that batch
    assert json.loads((out / "logs" / "seed-0.train.slurm.json").read_text())["restart"] >= 1
    assert results(out) == results(reference())


def test_a_time_limit_signals_checkpoints_mid_epoch_and_requeues_to_the_same_end(cluster, long_reference, tmp_path):
    """--time 1 with the signal 60 s before: slurmctld sends SIGUSR1 at its first time-limit
    check (it checks every 30 s), mid-training; the cell saves a mid-epoch checkpoint, the task
    requeues itself and resumes at that batch, as often as it takes, and ends as the local run."""
    spec, reference = long_reference
    out = tmp_path / "study"
    job = submit(cluster, spec, out, "--time", "1", "--signal-before", "60")
    assert wait_for_jobs(cluster, timeout=400)[f"{job}_0"] == "COMPLETED", slurm_logs(out) + cluster.logs()
    log = (out / "logs" / "seed-0.train.log").read_text()
    assert "SIGUSR1: seed-0.train stopped at epoch" in log, log + slurm_logs(out)
    assert re.search(r"resuming \S+ at epoch \d+, batch \d+", log), log
    assert json.loads((out / "logs" / "seed-0.train.slurm.json").read_text())["restart"] >= 1
    assert results(out) == results(reference())


# --- torchrun under srun --------------------------------------------------------------------

DDP_ARGS = ["--device", "cpu", "--model", "mlp", "--method", "dynamic", "--epochs", "2", "--limit", "256",
            "--batch-size", "32", "--steps", "3", "--eval-limit", "16", "--eval-steps", "1"]


def ddp_recipe() -> str:
    """The `srun torchrun` script of docs/studies.md, as written there."""
    docs = (Path(__file__).parents[2] / "docs" / "studies.md").read_text()
    found = re.search(r"```bash\n(#!/bin/bash\n# minidyn-ddp\.sbatch.*?)```", docs, re.S)
    assert found, "docs/studies.md has no minidyn-ddp.sbatch block"
    return found.group(1)


def test_the_documented_srun_torchrun_recipe_trains_like_torchrun_on_one_node(cluster, tmp_path):
    """The recipe on one node with two gloo processes (its GPU line overridden on the command
    line: this node has none) trains bit-identically to a local two-process torchrun."""
    torch = pytest.importorskip("torch")
    recipe = tmp_path / "minidyn-ddp.sbatch"
    recipe.write_text(ddp_recipe())
    out = tmp_path / "slurm-run"
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--gpus-per-node=0", "--cpus-per-task=2",
         "--export=ALL,PROCS_PER_NODE=2", f"--output={tmp_path}/ddp.out", str(recipe), "--out", str(out), *DDP_ARGS],
        env=cluster.env, capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    local = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "minidyn", "train", "--backend", "torch", "--out", str(tmp_path / "local"), *DDP_ARGS],
                           env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-2000:]
    assert wait_for_jobs(cluster)[job] == "COMPLETED", (tmp_path / "ddp.out").read_text()
    log = (tmp_path / "ddp.out").read_text()
    assert log.count("test accuracy: clean") == 1, log  # rank 0 of the two reports
    a = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "local" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (out, tmp_path / "local")]
    assert metrics[0] == metrics[1]
