"""Shared fixtures: every algorithm test runs on each backend that is installed.

`backend` is parametrised over numpy (always), torch (when installed) and cupy (when a CUDA
GPU is present); tests build inputs with numpy and move them with `backend.asarray`.
"""
import importlib.util
import os
import textwrap

# The tests run tiny arrays: one BLAS/OpenMP thread avoids oversubscribing CI's 2 cores (set
# before torch or numpy's BLAS start their thread pools; subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

from minidyn.backend import get_backend  # noqa: E402


def _cuda_cupy() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("torch", id="torch", marks=pytest.mark.skipif(
        importlib.util.find_spec("torch") is None, reason="torch is not installed")),
    pytest.param("cupy", id="cupy", marks=pytest.mark.skipif(
        not _cuda_cupy(), reason="cupy with a CUDA GPU is not available")),
]


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request):
    """A float32 backend on its default device."""
    return get_backend(request.param, **({"device": "cpu"} if request.param == "torch" else {}))


@pytest.fixture(params=BACKENDS, scope="session")
def backend64(request):
    """A float64 backend, for exact comparisons with brute force."""
    name = request.param
    if name == "torch":
        import torch  # the torch backend computes in float32; compare in float64 via dtype arg
        return get_backend("torch", device="cpu", dtype="float64")
    return get_backend(name, dtype="float64")


def _write_idx_pair(directory, prefix, x, y):
    import struct

    import numpy as np
    n = len(x)
    (directory / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, 28, 28) + np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + np.asarray(y, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory):
    """A data dir for `--dataset mnist`: the first 96 training and 64 test digits of the
    embedded sample as the four official IDX files, so that whole runs (and their final
    evaluation on the full test set) take well under a second."""
    from minidyn.data import load_dataset

    directory = tmp_path_factory.mktemp("tiny-mnist")
    for split, prefix, n in (("train", "train", 96), ("test", "t10k", 64)):
        data = load_dataset("mnist-sample", split)
        _write_idx_pair(directory, prefix, data.x[:n, 0], data.y[:n])
    return directory


@pytest.fixture
def run_documented_code(tmp_path):
    """run(text, section, shown_after) -> runs the first ```python block after the heading
    `section` of a document as a script and asserts that it prints the indented block that
    follows the line starting with `shown_after` (whitespace-insensitive)."""
    import re
    import subprocess
    import sys

    def run(text: str, section: str, shown_after: str) -> None:
        part = text.split(section, 1)[1]
        code = re.search(r"```python\n(.*?)```", part, re.S).group(1)
        shown = re.search(re.escape(shown_after) + r"[^\n]*\n(?:[^\n]+\n)*?\n((?:    [^\n]*\n)+)", part).group(1)
        script = tmp_path / "documented.py"
        script.write_text(code)
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == shown.split()

    return run


# --- a tiny study: numpy softmax on 150 of the embedded digits, 2 epochs, seconds per cell ---
TINY = textwrap.dedent("""\
    # tiny: a test study
    [train]
    backend = "numpy"
    model = "softmax"
    epochs = 2
    limit = 150
    val_size = 60
    eval_limit = 30
    eval_steps = 2
    steps = 2
    batch_size = 50
    lr = 0.05
    eps = 0.1
    lr_milestones = [2]
    c_max = "auto"

    [grid]
    method = ["standard", "dynamic"]
    seed = [0, 1]

    [eval]
    attacks = ["clean", "fgsm", "pgd10"]
    limit = 40
    batch_size = 40
    """)


@pytest.fixture(scope="session")
def tiny_text():
    return TINY


@pytest.fixture
def tiny_spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
