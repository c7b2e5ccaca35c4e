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

from minidyn.errors import ConfigError
from minidyn.schedules import CurriculumSchedule, DynamicSchedule, FgsmPgdSchedule

FOSC_REFERENCES = ("natural", "start")  # FOSC from x_0 (the paper) or from the random start


@dataclass(frozen=True)
class AttackPlan:
    """The training attack of one epoch: PGD settings and the FOSC stopping target c_t."""

    steps: int
    step_size: float
    random_start: bool
    stop_fosc: float | None = None  # c_t of Algorithm 1; None: run all steps
    fosc_reference: str = "natural"  # FOSC's x_0: the natural example, or "start" (authors' code)


@dataclass(frozen=True)
class Method:
    """A training method and the numbers its attacks are made of (the run layer builds it from
    the run's options, runs.loop.method_of; the fields have the names of TrainConfig's).

    steps, step_size: PGD's K and alpha; eps: the budget (FGSM's step); the three *_epochs:
    the schedules' lengths; c_max: Dynamic's c_0 = c_max, a number (the run's resolved one).
    """

    method: str
    eps: float
    steps: int
    step_size: float
    curriculum_epochs: int
    fgsm_epochs: int
    dynamic_epochs: int
    c_max: float | None = None
    fosc_reference: str = "natural"


def attack_plan(method: Method, t: int) -> AttackPlan | None:
    """The attack that `method.method` trains on at epoch t (None: train on clean examples).
    Every plan carries method.fosc_reference (for FGSM, without a random start, both are x_0).
    """
    plan = _attack_plan(method, t)
    if plan is None or method.fosc_reference == "natural":
        return plan
    return dataclasses.replace(plan, fosc_reference=method.fosc_reference)


def _attack_plan(m: Method, t: int) -> AttackPlan | None:
    pgd_k = AttackPlan(m.steps, m.step_size, random_start=True)
    if m.method == "unsecured":
        return None
    if m.method == "standard":
        return pgd_k
    if m.method == "curriculum":
        steps = CurriculumSchedule(m.steps, m.curriculum_epochs).steps(t)
        return AttackPlan(steps, m.step_size, random_start=True) if steps else None
    if m.method == "fgsm-pgd":
        if FgsmPgdSchedule(m.fgsm_epochs).use_fgsm(t):
            return AttackPlan(1, m.eps, random_start=False)
        return pgd_k
    if m.method == "dynamic":
        schedule = DynamicSchedule(m.c_max, m.dynamic_epochs)
        return AttackPlan(m.steps, m.step_size, random_start=True, stop_fosc=schedule.c_t(t))
    raise ConfigError(f"unknown method {m.method!r}")
