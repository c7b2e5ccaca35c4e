"""torchrun: two CPU processes (gloo) train like one process on the same global batch.

Each rank attacks and trains on its half of every global batch; DistributedDataParallel
averages the parameter gradients, which for equal halves is the gradient of the global batch's
mean loss. FGSM (no random start) and an MLP (no BatchNorm) make both runs deterministic, so
the final weights must agree to float rounding, and the per-epoch metrics (summed over ranks)
must agree too.
"""
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")

ARGS = ["train", "--backend", "torch", "--device", "cpu", "--model", "mlp", "--method", "fgsm-pgd",
        "--fgsm-epochs", "2", "--epochs", "2", "--limit", "128", "--batch-size", "32",
        "--eval-limit", "16", "--eval-steps", "1"]


def run(cmd, out):
    proc = subprocess.run([sys.executable, *cmd, *ARGS, "--out", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_two_gloo_processes_match_one_process(tmp_path):
    ddp = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "minidyn"],
              tmp_path / "ddp")
    run(["-m", "minidyn"], tmp_path / "single")
    assert ddp.stdout.count("test accuracy on") == 1  # only rank 0 reports
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
