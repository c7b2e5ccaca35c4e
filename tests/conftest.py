"""Shared fixtures: every algorithm test runs on each backend that is installed.

`backend` is parametrised over numpy (always), torch (when installed) and cupy (when a CUDA
GPU is present); tests build inputs with numpy and move them with `backend.asarray`.
"""
import importlib.util

import pytest

from minidyn.backend import get_backend


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
