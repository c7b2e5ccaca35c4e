"""torchrun: TRADES' and MART's two-forward train_step under DistributedDataParallel.

Two CPU processes (gloo) each step on half of a batch with the global batch size; DDP averages
their parameter gradients, which must give the weights one process gets on the whole batch
(an MLP: no BatchNorm, so the halves do not change the forward passes).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")]

from minidyn.backends.torch_backend import torch_backend  # noqa: E402

SCRIPT = '''
import sys
import numpy as np
import torch
from minidyn.backends.torch_backend import torch_backend
sys.path.insert(0, sys.argv[2])
from test_family_ddp import steps
B = torch_backend(device="cpu", dtype="float64")
for outer in ("trades", "mart"):
    model = steps(B, outer, slice(B.rank * 4, B.rank * 4 + 4))
    if B.rank == 0:
        torch.save(model.state_dict(), f"{sys.argv[1]}/{outer}.pt")
'''


def steps(backend, outer, rows):
    """Two steps of `outer` on rows `rows` of an 8-example batch (global batch size 8)."""
    rng = np.random.default_rng(0)
    x_nat = rng.random((8, 1, 6, 6))
    x_adv = np.clip(x_nat + rng.uniform(-0.3, 0.3, x_nat.shape), 0, 1)
    y = rng.integers(0, 10, 8)
    model = backend.make_model("mlp", (1, 6, 6), 10, seed=0)
    opt = backend.make_optimizer(model, 0.1, 0.9, 5e-4)
    for _ in range(2):
        backend.train_step(model, opt, backend.asarray(x_adv[rows]), backend.asarray(y[rows]), 8,
                           outer=outer, x_natural=backend.asarray(x_nat[rows]), beta=6.0)
    return model


def test_two_gloo_processes_take_one_processs_trades_and_mart_steps(tmp_path):
    script = tmp_path / "ddp_outer.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    single = torch_backend(device="cpu", dtype="float64")
    for outer in ("trades", "mart"):
        expected = steps(single, outer, slice(0, 8)).state_dict()
        got = torch.load(tmp_path / f"{outer}.pt", weights_only=True)
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=1e-10, atol=1e-12, msg=k)
