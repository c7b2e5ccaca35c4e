"""Per-epoch schedules: the Dynamic FOSC criterion, the curriculum, FGSM-then-PGD, the lr steps.

Each is a small frozen dataclass with one method of the epoch t (counted from 0), so a schedule
is a pure function of t: a resumed run recomputes it instead of storing it.
"""
from __future__ import annotations

from dataclasses import dataclass

from minidyn.errors import ConfigError


@dataclass(frozen=True)
class DynamicSchedule:
    """The FOSC target of Algorithm 1: c_t = max(c_max - t * c_max / T', 0).

    c_max: FOSC of weak adversarial examples (the paper uses 0.5, or the mean FOSC of FGSM
    examples on a batch). dynamic_epochs: T', the epoch from which c_t = 0 (full-strength PGD).
    """

    c_max: float
    dynamic_epochs: int

    def __post_init__(self):
        if self.c_max < 0:
            raise ConfigError(f"c_max must be >= 0, got {self.c_max}")
        if self.dynamic_epochs <= 0:
            raise ConfigError(f"T' (--dynamic-epochs) must be > 0, got {self.dynamic_epochs}")

    def c_t(self, t: int) -> float:
        # c_max * (1 - t/T') is the paper's c_max - t*c_max/T', written so that it is exactly 0
        # from t = T' on (the paper's form leaves a rounding residue such as 4e-16 there).
        return self.c_max * max(1.0 - t / self.dynamic_epochs, 0.0)


@dataclass(frozen=True)
class CurriculumSchedule:
    """Curriculum adversarial training (Cai et al., 2018): attack strength, the number of PGD
    steps, grows as training goes on.

    Cai et al. move to the next strength when accuracy against the current one stops improving;
    minidyn uses a deterministic linear ramp so that runs are reproducible and resumable:
    steps_t = min(K, 1 + floor(t * (K - 1) / ramp_epochs)), i.e. 1 step at t = 0 and K steps
    from t = ramp_epochs on.
    """

    max_steps: int
    ramp_epochs: int

    def __post_init__(self):
        if self.ramp_epochs <= 0:
            raise ConfigError(f"curriculum ramp epochs must be > 0, got {self.ramp_epochs}")

    def steps(self, t: int) -> int:
        return min(self.max_steps, 1 + (t * (self.max_steps - 1)) // self.ramp_epochs)


@dataclass(frozen=True)
class FgsmPgdSchedule:
    """Section 3.2: FGSM (one step of size eps) for the first `switch_epoch` epochs, then PGD."""

    switch_epoch: int = 20

    def use_fgsm(self, t: int) -> bool:
        return t < self.switch_epoch


@dataclass(frozen=True)
class StepLR:
    """lr_t = lr * gamma ** (number of milestones <= t); the paper: /10 at epochs 20 and 40."""

    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")

    def at(self, t: int) -> float:
        return self.lr * self.gamma ** sum(t >= m for m in self.milestones)
