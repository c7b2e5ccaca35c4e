"""--compile: torch.compile an attack's loss function, running it eagerly wherever that fails."""
from __future__ import annotations

import sys
from typing import Callable

import torch

from minidyn.backends.torch_checkpoint import first_line


def compiled_or_eager(eager: Callable) -> Callable:
    """`eager` torch.compile'd with dynamic shapes (the active sub-batch shrinks as examples stop).

    If compilation fails (no compiler, an unsupported platform, a failed recompilation for a
    new size), that call says so once on stderr and every call from then on runs `eager`.
    Running out of GPU memory is not a compilation failure and is raised as it is.
    """
    try:  # torch._dynamo / inductor errors vary by version, Python version and platform
        compiled = torch.compile(eager, dynamic=True)
    except Exception as exc:
        _say(exc)
        return eager
    failed = []

    def guarded(*args):
        if failed:
            return eager(*args)
        try:  # any call may compile: a new sub-batch size can recompile
            return compiled(*args)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            failed.append(exc)
            _say(exc)
            return eager(*args)
    return guarded


def _say(exc: Exception) -> None:
    print(f"minidyn: --compile failed ({first_line(exc)}); attacking eagerly", file=sys.stderr)
