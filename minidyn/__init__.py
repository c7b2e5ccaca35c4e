"""minidyn: FOSC and Dynamic Adversarial Training (Wang et al., ICML 2019), written once.

The algorithm reads like the paper:

    minidyn.fosc(x_k, x_0, grad, eps)     per-example FOSC, Eq. 4            (fosc.py)
    minidyn.project(x, x_0, eps)          onto the eps-ball and [0, 1]^d     (projection.py)
    minidyn.pgd(model, x, y, eps=..., step_size=..., steps=..., stop_fosc=c_t)
                                          PGD with Algorithm 1's stopping    (attacks.py)
    minidyn.DynamicSchedule(c_max, T').c_t(t)                                (schedules.py)
    minidyn.train.train_epoch(...)        Algorithm 1, one epoch             (train.py)

Arrays may be numpy, cupy or torch; backends (minidyn.backends) supply the model side.
"""
__version__ = "0.1.0"

from minidyn.attacks import AttackResult, cw_inf, fgsm, pgd
from minidyn.backend import Backend, backend_for, get_backend
from minidyn.fosc import fosc
from minidyn.projection import project
from minidyn.schedules import CurriculumSchedule, DynamicSchedule, FgsmPgdSchedule, StepLR

__all__ = [
    "AttackResult", "Backend", "CurriculumSchedule", "DynamicSchedule", "FgsmPgdSchedule",
    "StepLR", "backend_for", "cw_inf", "fgsm", "fosc", "get_backend", "load_model", "pgd",
    "project",
]


def load_model(path: str, device: str = "cpu"):
    """A checkpoint.pt of `minidyn train --backend torch` as a plain torch.nn.Module in eval
    mode, taking NCHW inputs in [0, 1] (so torchattacks, AutoAttack or RobustBench can use it)."""
    from minidyn.backends.torch_backend import load_model as _load

    return _load(path, device=device)
