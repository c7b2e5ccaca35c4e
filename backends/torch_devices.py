"""Where the torch backend runs: its device, and the torchrun process group.

`resolve_device` turns a device string (parsed by `minidyn.backend.parse_device`, the one
parser) into the torch device a backend uses; `process_device` and `init_distributed` are the
data-parallel set-up under torchrun: one process per GPU, joined to the process group at the
backend's construction and left cleanly at exit.
"""
from __future__ import annotations

import atexit
import os

import torch

from minidyn.backend import parse_device
from minidyn.errors import BackendUnavailable


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when a GPU is available, else "cpu"; checks that a CUDA device exists.
    Returns "cpu", "cuda" or "cuda:N"; ConfigError for a string `parse_device` refuses."""
    kind, index = parse_device(device)
    if kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        spec = "cuda" if index is None else f"cuda:{index}"
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                "--device cuda: no CUDA GPU is available (torch.cuda.is_available() is False)"
            )
        if index is not None and index >= torch.cuda.device_count():
            raise BackendUnavailable(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are available"
            )
        return spec
    return "cpu"


def process_device(device: str, world_size: int) -> str:
    """The device this process asks for: under torchrun (world_size > 1, a GPU present) "auto"
    and "cuda" mean the GPU of this process's LOCAL_RANK, one GPU per process."""
    if world_size > 1 and parse_device(device) in (("auto", None), ("cuda", None)) and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size): joins the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        gpu = parse_device(device)[0] != "cpu" and torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if gpu else "gloo")
        atexit.register(_leave_process_group)
    return dist.get_rank(), dist.get_world_size()


def _leave_process_group() -> None:
    """Free the process group while the interpreter is still whole (registered with atexit).

    After an error the traceback's frames keep the DistributedDataParallel wrapper, and with it
    the gloo group, alive into interpreter teardown, where freeing them can abort the process
    ("terminate called without an active exception", SIGABRT); torchrun then kills the other
    ranks before they have reported. Collecting those frames first and then destroying the
    group makes the exit clean; either step alone still aborted now and then in repeated runs
    of the NaN-on-one-rank test in tests/runs/test_distributed.py.
    """
    import gc
    import torch.distributed as dist
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
