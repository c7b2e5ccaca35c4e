"""`minidyn eval` for any torch `nn.Module` that takes [0, 1] inputs, from Python.

    from minidyn.evaluation.examine import examine
    report = examine(model, x, y, eps=8/255, attacks=("clean", "pgd20", "apgd-ce"))
    report.accuracy     # {"clean": 94.0, "pgd20": ..., "worst-case": ...} in percent
    report.fosc         # {"pgd20": {"n", "median", "above", "threshold"}, ...}: convergence
    report.flags        # [] when no sanity check and no convergence check fails
    print(report)       # the table `minidyn eval` prints, the FOSC summaries and the flags

x: (N, ...) floats in [0, 1] (a numpy array or a torch tensor; a model that expects normalised
inputs normalises inside, as RobustBench's models do), y: (N,) integer labels. The model is
attacked with the torch backend on its own device (or `device`), in eval mode, by the attacks
of minidyn.evaluation.attack_table, with every check of `minidyn eval` (the orderings of the
attacks, zero or non-finite gradients, eps 0, the recount) and, by default, the FOSC convergence
check of each iterative attack (minidyn.evaluation.convergence: one gradient evaluation per
point it left correct). Nothing is trained and the model's weights are not changed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minidyn.errors import ConfigError
from minidyn.evaluation.attack_table import DEFAULT_ATTACKS
from minidyn.evaluation.evaluate import EvalResult, evaluate_attacks, format_table, sanity_flags


@dataclass(frozen=True, eq=False)
class ArrayData:
    """Float examples for evaluate_attacks: x float32 (N, ...) in [0, 1], y int64 (N,)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.y)

    def to_backend(self, backend, idx: np.ndarray):
        """Examples idx as (x, y) on the backend's device."""
        return backend.asarray(self.x[idx], dtype="float"), backend.asarray(self.y[idx])


@dataclass
class Examination:
    """What `examine` found. accuracy: {attack: percent, "worst-case": percent}; fosc: {attack:
    FOSC summary} of the iterative attacks (empty with convergence=False); stages: {cascade:
    {stage: percent}} (AutoAttack); flags: the sanity and convergence flags, one sentence each;
    result: the EvalResult with each example's verdict per attack."""

    accuracy: dict
    fosc: dict
    stages: dict
    flags: list
    result: EvalResult

    def __str__(self) -> str:
        lines = [format_table(self.result)]
        lines += ["flags:", *(f"  ! {flag}" for flag in self.flags)] if self.flags else ["no flags"]
        return "\n".join(lines)


def examine(model, x, y, eps: float, *, attacks=DEFAULT_ATTACKS, batch_size: int = 256, seed: int = 0,
            restarts: int = 1, apgd_steps: int = 100, convergence: bool = True, device=None,
            name: str = "examples") -> Examination:
    """Accuracy of the torch module `model` under `attacks` (names of the attack table, or
    "autoattack") on x (N, ...) in [0, 1] with labels y (N,), L_inf budget eps, with the checks
    of `minidyn eval` and (convergence) the FOSC of each iterative attack's points. ConfigError
    in one line for inputs it cannot take. device: a torch device; None: the model's."""
    from minidyn.backend import get_backend

    _check_module(model)
    x, y = _host(x, "x"), _host(y, "y")
    backend = get_backend("torch", device=str(device if device is not None else _device_of(model)))
    data = ArrayData(name, *_checked(backend, model, x, y))
    result = evaluate_attacks(backend, model, data, eps=eps, attacks=attacks, batch_size=batch_size,
                              seed=seed, restarts=restarts, apgd_steps=apgd_steps, convergence=convergence)
    return Examination(result.accuracy(), result.checks.get("fosc", {}), result.stage_accuracy(),
                       sanity_flags(result), result)


def _check_module(model) -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"examine takes a torch nn.Module, got {type(model).__name__}")


def _device_of(model):
    """The device of the module's first parameter or buffer; cpu for a module without either."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return "cpu"


def _host(a, what: str) -> np.ndarray:
    """A numpy copy of a torch tensor or array-like `a` (named `what` in errors)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a numpy array or a torch tensor, got {type(a).__name__}") from None


def _checked(backend, model, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(x float32, y int64, number of classes) after checking shapes, range and labels."""
    if x.ndim < 2 or len(x) == 0 or x.dtype.kind not in "fiub":
        raise ConfigError(f"x must be a non-empty (N, ...) array of numbers, got {x.dtype} {x.shape}")
    if y.shape != (len(x),) or y.dtype.kind not in "iu":
        raise ConfigError(f"y must hold {len(x)} integer labels, shape ({len(x)},), got {y.dtype} {y.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ConfigError(f"x must lie in [0, 1] (the attacks search the eps-ball inside [0, 1]^d; a model "
                          f"that wants normalised inputs normalises inside), got values in [{x.min():g}, {x.max():g}]")
    z = backend.logits(model, backend.asarray(x[:1], dtype="float"))
    if len(z.shape) != 2:
        raise ConfigError(f"the model must return logits (B, C), got shape {tuple(z.shape)}")
    classes = int(z.shape[1])
    if y.min() < 0 or y.max() >= classes:
        raise ConfigError(f"labels must be in 0..{classes - 1} (the model has {classes} outputs), "
                          f"got {y.min()}..{y.max()}")
    return x, y.astype(np.int64), classes
