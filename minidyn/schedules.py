"""Per-epoch schedules: the Dynamic FOSC criterion, the curriculum, FGSM-then-PGD, FAT's tau,
GAIRAT's burn-in, the lr steps.

Each is a small frozen dataclass with one method of the epoch t (counted from 0, the paper's t in
c_t), so a schedule is a pure function of t: a resumed run recomputes it instead of storing it.
Settings that name an epoch (lr milestones) count from 1, as the paper's text does ("the 60-th
epoch") and as every epoch minidyn prints does: epoch number t + 1 is the epoch of index t.
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
    steps_t = min(K, floor(t * K / ramp_epochs)), i.e. 0 steps (clean examples: the paper's
    Figure 5 says Curriculum "trains without adversarial examples at early epochs") from t = 0
    until t * K >= ramp_epochs, then one more step every ramp_epochs / K epochs, and K steps
    from t = ramp_epochs on.
    """

    max_steps: int
    ramp_epochs: int

    def __post_init__(self):
        if self.ramp_epochs <= 0:
            raise ConfigError(f"curriculum ramp epochs must be > 0, got {self.ramp_epochs}")

    def steps(self, t: int) -> int:
        return min(self.max_steps, (t * self.max_steps) // self.ramp_epochs)


@dataclass(frozen=True)
class FgsmPgdSchedule:
    """Section 3.2: FGSM (one step of size eps) for the first `switch_epoch` epochs, then PGD
    (the paper: the first 20 of 120 CIFAR-10 epochs)."""

    switch_epoch: int = 20

    def use_fgsm(self, t: int) -> bool:
        return t < self.switch_epoch


@dataclass(frozen=True)
class FatTauSchedule:
    """FAT's tau (Zhang et al., ICML 2020): an example's PGD stops tau steps after it is first
    misclassified, with tau 0, then 1, then 2 as training goes on.

    zjfheart/Friendly-Adversarial-Training (commit 80a0640), FAT.py lines 77-86 `adjust_tau`
    (dynamictau, the default of line 28), called with the 1-based epoch (line 175): tau = 0 for
    epochs 1-50, 1 for 51-90 and 2 for 91-120 of their 120. minidyn keeps the fractions of the
    run's own length: tau = 0 while t + 1 <= epochs * 50 // 120, 1 while t + 1 <= epochs * 90
    // 120, then 2 (for 120 epochs the authors' numbers exactly). `fixed` (their --tau with
    dynamictau off) holds tau at one value instead.
    """

    epochs: int
    fixed: int | None = None

    def tau(self, t: int) -> int:
        if self.fixed is not None:
            return self.fixed
        epoch = t + 1
        return 0 if epoch <= self.epochs * 50 // 120 else 1 if epoch <= self.epochs * 90 // 120 else 2


@dataclass(frozen=True)
class GairatSchedule:
    """GAIRAT's burn-in (Zhang et al., ICLR 2021): the plain mean loss until epoch `begin`
    (counted from 1), the geometry-aware weights (runs/weights.py, with LossPlan.lam) from then on.

    zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training (commit 16813b5),
    GAIRAT.py line 141 (`(epoch + 1) >= args.begin_epoch`, begin_epoch 60 of 120 epochs, line 36)
    and `adjust_Lambda` lines 162-194 with its default 'fixed' schedule (Lambda = -1.0, lines
    32-34, from epoch 60 on: where the weights are used, Lambda is always -1.0).
    """

    begin: int

    def weighted(self, t: int) -> bool:
        return t + 1 >= self.begin


@dataclass(frozen=True)
class StepLR:
    """lr_t = lr * gamma ** (number of milestones m <= t + 1): milestones are epoch numbers
    counted from 1, and epoch m is the first to run at the lower rate.

    This is the authors' reading of "divided by 10 at the 60-th and 100-th epoch"
    (`train_models.py` of YisenWang/dynamic_adv_training divides before the epoch whose 0-based
    index ep has ep + 1 == 60): 0-based epochs 0-58 run at 0.01 and 59-98 at 0.001.
    """

    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")

    def at(self, t: int) -> float:
        return self.lr * self.gamma ** sum(t + 1 >= m for m in self.milestones)
