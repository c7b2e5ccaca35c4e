"""One parser of device strings (minidyn.backend.parse_device), and every place that reads one calls it."""
import re
from pathlib import Path

import pytest

from minidyn.backend import parse_device
from minidyn.errors import ConfigError
from minidyn.evaluation.checkpoints import evaluation_backend
from minidyn.files.config import TrainConfig, cuda_index

GOOD = {"auto": ("auto", None), "cpu": ("cpu", None), "cuda": ("cuda", None), "cuda:0": ("cuda", 0),
        "cuda:3": ("cuda", 3), " CPU ": ("cpu", None), "CUDA:1": ("cuda", 1)}
BAD = ["tpu", "", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda:1:2", "cpu:0", "cuda: 1", "cuda:١", "mps"]


@pytest.mark.parametrize("device", list(GOOD))
def test_the_parser_reads_auto_cpu_cuda_and_cuda_n(device):
    assert parse_device(device) == GOOD[device]


@pytest.mark.parametrize("device", BAD)
def test_anything_else_is_one_config_error(device):
    with pytest.raises(ConfigError, match=f"^{re.escape(f'unknown device {device!r}; use auto, cpu, cuda or cuda:N')}$"):
        parse_device(device)


@pytest.mark.parametrize("device", list(GOOD) + BAD)
def test_the_config_reads_a_cuda_index_as_the_parser_does(device):
    kind, index = parse_device(device) if device in GOOD else (None, None)
    assert cuda_index(device) == ((index or 0) if kind == "cuda" else None)


def test_the_config_check_keeps_its_message():
    with pytest.raises(ConfigError, match=re.escape("--device cuda:x is for --backend torch (or cuda[:N] with --backend cupy)")):
        TrainConfig(backend="cupy", device="cuda:x").validate()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda:1:2", ""])
def test_a_numpy_checkpoint_refuses_a_bad_device_in_one_line(device):
    """cuda:x was a ValueError traceback when evaluation parsed devices itself."""
    with pytest.raises(ConfigError, match=f"^{re.escape(f'unknown device {device!r} for a numpy checkpoint; use cpu or cuda[:N]')}$"):
        evaluation_backend(Path("checkpoint.npz"), device)


@pytest.mark.parametrize("device", ["auto", "cpu", " CPU", None])
def test_a_numpy_checkpoint_on_the_cpu_gets_the_numpy_backend(device):
    assert evaluation_backend(Path("checkpoint.npz"), device).name == "numpy"


def test_the_torch_backend_resolves_devices_through_the_parser():
    torch_devices = pytest.importorskip("minidyn.backends.torch_devices")
    torch = pytest.importorskip("torch")
    assert torch_devices.resolve_device(" CPU ") == "cpu"
    assert torch_devices.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for device in BAD:
        with pytest.raises(ConfigError, match=f"^{re.escape(f'unknown device {device!r}; use auto, cpu, cuda or cuda:N')}$"):
            torch_devices.resolve_device(device)
    assert torch_devices.process_device("cuda", world_size=1) == "cuda"
