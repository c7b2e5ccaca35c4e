"""The five training methods of the paper, as the attack each one trains on at epoch t.

    unsecured   natural training: no attack
    standard    Madry et al.: PGD-K, step eps/4, random start, every epoch
    curriculum  Cai et al.: PGD whose number of steps grows from 0 (clean) to K (CurriculumSchedule)
    fgsm-pgd    Section 3.2: FGSM (one step of size eps) first, PGD-K afterwards
    dynamic     Algorithm 1: PGD-K where each example stops once FOSC <= c_t (DynamicSchedule)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from minidyn.files.config import TrainConfig
from minidyn.errors import ConfigError
from minidyn.schedules import CurriculumSchedule, DynamicSchedule, FgsmPgdSchedule


@dataclass(frozen=True)
class AttackPlan:
    """The training attack of one epoch: PGD settings and the FOSC stopping target c_t."""

    steps: int
    step_size: float
    random_start: bool
    stop_fosc: float | None = None  # c_t of Algorithm 1; None: run all steps
    fosc_reference: str = "natural"  # FOSC's x_0: the natural example, or "start" (authors' code)


def attack_plan(cfg: TrainConfig, t: int, c_max: float | None = None) -> AttackPlan | None:
    """The attack that `cfg.method` trains on at epoch t (None: train on clean examples).

    cfg must be resolved; c_max overrides cfg.c_max (the CLI's `auto` estimate).
    Every plan carries cfg.fosc_reference (for FGSM, without a random start, both are x_0).
    """
    plan = _attack_plan(cfg, t, c_max)
    if plan is None or cfg.fosc_reference == "natural":
        return plan
    return dataclasses.replace(plan, fosc_reference=cfg.fosc_reference)


def _attack_plan(cfg: TrainConfig, t: int, c_max: float | None) -> AttackPlan | None:
    pgd_k = AttackPlan(cfg.steps, cfg.step_size, random_start=True)
    if cfg.method == "unsecured":
        return None
    if cfg.method == "standard":
        return pgd_k
    if cfg.method == "curriculum":
        steps = CurriculumSchedule(cfg.steps, cfg.curriculum_epochs).steps(t)
        return AttackPlan(steps, cfg.step_size, random_start=True) if steps else None
    if cfg.method == "fgsm-pgd":
        if FgsmPgdSchedule(cfg.fgsm_epochs).use_fgsm(t):
            return AttackPlan(1, cfg.eps, random_start=False)
        return pgd_k
    if cfg.method == "dynamic":
        schedule = DynamicSchedule(c_max if c_max is not None else cfg.c_max, cfg.dynamic_epochs)
        return AttackPlan(cfg.steps, cfg.step_size, random_start=True, stop_fosc=schedule.c_t(t))
    raise ConfigError(f"unknown method {cfg.method!r}")
