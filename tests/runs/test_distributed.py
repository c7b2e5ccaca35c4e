"""torchrun: two CPU processes (gloo) train like one process on the same global batch.

Each rank attacks and trains on its half of every global batch; DistributedDataParallel
averages the parameter gradients, which for equal halves is the gradient of the global batch's
mean loss. FGSM (no random start) and an MLP (no BatchNorm) make both runs deterministic, so
the final weights must agree to float rounding, and the per-epoch metrics (summed over ranks)
must agree too. A two-process run killed (every process, SIGKILL) after an epoch and resumed
ends bit-identical to the uninterrupted one, from an epoch or a mid-epoch checkpoint, and a NaN
on one rank stops every rank cleanly.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")

ARGS = ["train", "--backend", "torch", "--device", "cpu", "--model", "mlp", "--method", "fgsm-pgd",
        "--fgsm-epochs", "2", "--epochs", "2", "--limit", "128", "--batch-size", "32",
        "--eval-limit", "16", "--eval-steps", "1"]
# Dynamic (c_t from the saved c_max, per-rank random starts) for 3 epochs: long enough to kill
RESUME_ARGS = ["train", "--backend", "torch", "--device", "cpu", "--model", "mlp", "--method", "dynamic",
               "--epochs", "3", "--limit", "512", "--batch-size", "32", "--steps", "5",
               "--eval-limit", "64", "--eval-steps", "2"]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# one thread per process: two processes share the test machine's two cores, and runs that are
# compared bit for bit must use the same thread count
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(cmd, out, args=ARGS, *extra, expect=0):
    proc = subprocess.run([sys.executable, *cmd, *args, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=240, env=ENV)
    assert proc.returncode == expect, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    run([*TORCHRUN, "-m", "minidyn"], out, RESUME_ARGS)
    return out


@pytest.mark.parametrize("batch_size", [32, 33], ids=["even-split", "uneven-split"])
def test_two_gloo_processes_match_one_process(tmp_path, batch_size):
    """With batch size 33 every batch splits 17/16 (the last one, of 29, 15/14): each rank's
    loss must be its part of the global-batch mean, not its own mean, for DDP's average of
    the ranks' gradients to be the gradient of the global batch."""
    size = ["--batch-size", str(batch_size)]
    ddp = run([*TORCHRUN, "-m", "minidyn"], tmp_path / "ddp", ARGS, *size)
    run(["-m", "minidyn"], tmp_path / "single", ARGS, *size)
    assert ddp.stdout.count("test accuracy: clean") == 1  # only rank 0 reports
    a = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)["model"]
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    lines = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
             for d in ("ddp", "single")]
    for r_ddp, r_one in zip(*lines):
        assert r_ddp["grad_evals"] == r_one["grad_evals"] and r_ddp["train_acc"] == r_one["train_acc"]
        for key in ("train_loss", "fosc_mean", "pgd_steps_mean", "test_clean_acc"):
            assert r_ddp[key] == pytest.approx(r_one[key], rel=1e-6)
    assert not any(p.name.startswith(".") for p in (tmp_path / "ddp").iterdir())  # no stray temp files


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in sessions of their own, so a
    process-group signal would miss them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in /proc")
@pytest.mark.parametrize("every", [None, 3], ids=["epoch-checkpoint", "mid-epoch-checkpoint"])
def test_a_killed_torchrun_job_resumes_bit_identical(tmp_path, ddp_reference, every):
    """SIGKILL torchrun and both workers once the first checkpoint is on disk (they are SIGSTOPped
    while it is read), resume with torchrun, and compare with the uninterrupted job. With
    --checkpoint-every 3 that checkpoint is taken after batch 3 of epoch 1 and holds both ranks'
    generators and partial statistics, so only two processes may resume it."""
    out = tmp_path / "run"
    extra = ["--checkpoint-every", str(every)] if every else []
    proc = subprocess.Popen([sys.executable, *TORCHRUN, "-m", "minidyn", *RESUME_ARGS, *extra, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    checkpoint, meta = out / "checkpoint.pt", None
    while proc.poll() is None:
        time.sleep(0.005)
        if checkpoint.exists():
            pids = [proc.pid, *descendants(proc.pid)]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            meta = torch.load(checkpoint, weights_only=True)["meta"]
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            proc.wait()
            break
    assert meta is not None and meta["epoch"] < 3, "the job ended before it could be killed"
    where = f"epoch {meta['epoch'] + 1}"
    if every:
        assert len(meta["progress"]["ranks"]) == 2
        where += f", batch {meta['progress']['ranks'][0]['batches'] + 1}"
        alone = run(["-m", "minidyn"], out, RESUME_ARGS, *extra, "--resume", expect=1)
        assert "by 2 processes; resume it with torchrun --nproc_per_node=2, not with 1 process" in alone.stderr
    resumed = run([*TORCHRUN, "-m", "minidyn"], out, RESUME_ARGS, *extra, "--resume")
    assert f"resuming {out} at {where}\n" in resumed.stdout
    a, b = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (ddp_reference, out))
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["meta"] == b["meta"]

    def metrics(path):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert metrics(out) == metrics(ddp_reference)
    assert (out / "summary.json").read_text() == (ddp_reference / "summary.json").read_text()


NAN_ON_RANK_1 = """
import os, sys
from minidyn.backends.torch_backend import TorchBackend

real, calls = TorchBackend.train_step, [0]

def train_step(self, *args, **kwargs):
    loss, correct = real(self, *args, **kwargs)
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == 6:  # epoch 2, batch 2: on this rank only
        loss = float("nan")
    return loss, correct

TorchBackend.train_step = train_step
from minidyn.cli.main import main
sys.exit(main())
"""


def test_a_nan_on_one_rank_stops_every_rank_with_the_one_line_error(tmp_path):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    out = tmp_path / "run"
    proc = run([*TORCHRUN, str(script)], out, ARGS, expect=1)  # torchrun: a worker failed
    assert "Error: training loss became nan at epoch 2, batch 2" in proc.stderr
    assert "rank 1" not in proc.stderr  # rank 1 exits quietly; rank 0 speaks for both
    assert "exitcode  : 3" in proc.stderr  # the workers' own exit code, in torchrun's report
    assert "SIGABRT" not in proc.stderr  # no rank aborts while it exits (see _leave_process_group)
    meta = torch.load(out / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["epoch"] == 1  # the checkpoint of the last good epoch stays
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
