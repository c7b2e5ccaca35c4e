"""The training methods, as parts: one table, and the attack and loss each trains on at epoch t.

A method is a choice of four parts (`Recipe`) and the schedule that sets them per epoch:
    inner    the attack's objective: "ce" (cross-entropy), "kl" (KL to the clean prediction,
             TRADES), None (no attack: natural training)
    stop     when an example's PGD stops: "none" (K steps), "fosc" (FOSC <= c_t, Algorithm 1),
             "tau" (tau steps after it is first misclassified, FAT)
    outer    the loss the SGD step minimises: "ce", "trades" or "mart"
    weights  per-example loss weights: "none", "ce" (the authors' code of Dynamic), "gairat"
and how its PGD steps run over the epochs (`attack`: every epoch K steps, a curriculum, FGSM
first, or FGSM from a random start).

    method      attack        inner  start    stop  outer   weights  paper
    unsecured   -             -      -        -     ce      none     natural training
    standard    pgd           ce     uniform  none  ce      none     Madry et al., ICLR 2018
    curriculum  curriculum    ce     uniform  none  ce      none     Cai et al., IJCAI 2018
    fgsm-pgd    fgsm-then-pgd ce     uniform  none  ce      none     Wang et al., ICML 2019, Sec. 3.2
    dynamic     pgd           ce     uniform  fosc  ce      none     Wang et al., ICML 2019, Alg. 1
    fat         pgd           ce     uniform  tau   ce      none     Zhang et al., ICML 2020 (1)
    trades      pgd           kl     normal   none  trades  none     Zhang et al., ICML 2019
    mart        pgd           ce     normal   none  mart    none     Wang et al., ICLR 2020
    gairat      pgd           ce     uniform  none  ce      gairat   Zhang et al., ICLR 2021
    fgsm-rs     fgsm-rs       ce     uniform  none  ce      none     Wong et al., ICLR 2020 (2)

(1) with FAT's noise: N(0, 0.001^2) added to each PGD step (FAT.py's default omega).
(2) the uniform start not projected before its gradient, as their MNIST code (below).
The run may replace a recipe's stop rule (`--stop`) or weights (`--loss-weights`), so that
combinations none of the papers ran follow from the same parts, e.g. FOSC-stopped TRADES
(`--method trades --stop fosc`: FOSC of the KL's gradient, docs/methods.md).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from minidyn.errors import ConfigError
from minidyn.schedules import (CurriculumSchedule, DynamicSchedule, FatTauSchedule, FgsmPgdSchedule,
                               GairatSchedule)

FOSC_REFERENCES = ("natural", "start")  # FOSC from x_0 (the paper) or from the random start
STOPS = ("none", "fosc", "tau")
WEIGHTS = ("none", "ce", "gairat")
# FGSM-RS (locuslab/fast_adversarial 54f7287): MNIST/train_mnist.py lines 28-29 and 73-82, alpha
# 0.375 = 1.25 eps at eps 0.3, the gradient at x + U(-eps, eps) unprojected, the step clipped into
# the ball, then the box; CIFAR10/train_fgsm.py lines 30-31 and 107-119 (alpha 10/255 = 1.25 eps)
# projects the start into the box first. minidyn follows the MNIST code (our datasets are its).
FGSM_RS_STEP = 1.25
NORMAL_START = 0.001  # TRADES' and MART's start: x + 0.001 N(0, 1)


@dataclass(frozen=True)
class Recipe:
    """One training method as parts (module docstring)."""

    paper: str
    attack: str | None = "pgd"  # None | "pgd" | "curriculum" | "fgsm-then-pgd" | "fgsm-rs"
    inner: str = "ce"
    start: str = "uniform"      # the random start: U(-eps, eps)^d, or 0.001 N(0, 1)
    stop: str = "none"
    outer: str = "ce"
    weights: str = "none"
    omega: float = 0.0          # the std of the noise added at each PGD step (FAT's omega)


METHODS = {
    "unsecured": Recipe("natural training, no attack", attack=None),
    "standard": Recipe("Madry et al., ICLR 2018: PGD-K"),
    "curriculum": Recipe("Cai et al., IJCAI 2018: PGD steps growing 0 -> K", attack="curriculum"),
    "fgsm-pgd": Recipe("Wang et al., ICML 2019, Sec. 3.2: FGSM first, then PGD-K", attack="fgsm-then-pgd"),
    "dynamic": Recipe("Wang et al., ICML 2019, Algorithm 1: PGD stopped at FOSC <= c_t", stop="fosc"),
    "fat": Recipe("Zhang et al., ICML 2020 (FAT): PGD stopped tau steps after misclassification", stop="tau",
                  omega=0.001),
    "trades": Recipe("Zhang et al., ICML 2019 (TRADES): KL attack, CE + beta KL", inner="kl",
                     start="normal", outer="trades"),
    "mart": Recipe("Wang et al., ICLR 2020 (MART): boosted CE + beta KL (1 - p_y)", start="normal", outer="mart"),
    "gairat": Recipe("Zhang et al., ICLR 2021 (GAIRAT): PGD-K, examples weighted by kappa", weights="gairat"),
    "fgsm-rs": Recipe("Wong et al., ICLR 2020 (fast AT): FGSM from a random start, step 1.25 eps",
                      attack="fgsm-rs", start="uniform-unprojected"),
}


@dataclass(frozen=True)
class AttackPlan:
    """The training attack of one epoch: PGD settings, its objective, start and stop rule."""

    steps: int
    step_size: float
    random_start: bool
    stop_fosc: float | None = None  # c_t of Algorithm 1; None: run all steps
    fosc_reference: str = "natural"  # FOSC's x_0: the natural example, or "start" (authors' code)
    loss: str = "ce"                # the inner objective: "ce" or "kl" (TRADES)
    start: str = "uniform"          # "uniform" U(-eps, eps)^d or "normal" 0.001 N(0, 1)
    stop_tau: int | None = None     # FAT: stop tau steps after the first misclassification
    kappa: bool = False             # GAIRAT: count each example's correctly classified iterates
    omega: float = 0.0              # FAT: the std of N(0, omega^2) noise added at each step


@dataclass(frozen=True)
class LossPlan:
    """The outer minimisation of one epoch: the loss and the per-example weights."""

    outer: str = "ce"         # "ce", "trades" or "mart"
    beta: float = 6.0         # TRADES' and MART's weight of the KL term
    weights: str = "none"     # "none", "ce" (the authors' code of Dynamic) or "gairat"
    lam: float = -1.0         # GAIRAT's Lambda


@dataclass(frozen=True)
class Method:
    """A training method and the numbers its parts are made of (the run layer builds it from
    the run's options, runs.loop.method_of; the fields have the names of TrainConfig's).

    steps, step_size: PGD's K and alpha; eps: the budget (FGSM's step); the three *_epochs:
    the schedules' lengths; c_max: Dynamic's c_0 = c_max, a number (the run's resolved one).
    epochs: the run's length (FAT's tau and GAIRAT's burn-in are fractions of it); stop,
    loss_weights: the run's choice where it replaces the recipe's (None / "none": the recipe's);
    tau: FAT's fixed tau (None: its 0-1-2 schedule); beta: TRADES/MART; gairat_begin: the epoch
    (from 1) GAIRAT's weights start (None: half the epochs), gairat_lambda: its Lambda.
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
    epochs: int = 1
    stop: str | None = None
    loss_weights: str = "none"
    tau: int | None = None
    beta: float = 6.0
    gairat_begin: int | None = None
    gairat_lambda: float = -1.0

    def recipe(self) -> Recipe:
        """The method's parts, with the run's stop rule and weights where it chose them."""
        return recipe_of(self.method, self.stop, self.loss_weights)


def recipe_of(method: str, stop: str | None = None, loss_weights: str = "none") -> Recipe:
    """METHODS[method] with the stop rule `stop` and the weights `loss_weights` where they are
    given (None, "none": the recipe's); ConfigError for a combination that means nothing."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    r = METHODS[method]
    if r.attack is None and (stop not in (None, "none") or loss_weights != "none"):
        raise ConfigError(f"--stop and --loss-weights choose parts of an attack; {method} trains without one")
    if loss_weights != "none" and r.weights != "none" and loss_weights != r.weights:
        raise ConfigError(f"--loss-weights {loss_weights} does not go with {method}, which weights "
                          f"its examples by {r.weights}")
    return dataclasses.replace(r, stop=stop or r.stop, weights=r.weights if loss_weights == "none" else loss_weights)


def attack_plan(method: Method, t: int) -> AttackPlan | None:
    """The attack that `method.method` trains on at epoch t (None: train on clean examples).
    Every plan carries method.fosc_reference (for FGSM, without a random start, both are x_0)."""
    recipe = method.recipe()
    plan = _steps_plan(method, recipe.attack, t)
    if plan is None:
        return None
    stop_fosc = DynamicSchedule(method.c_max, method.dynamic_epochs).c_t(t) if recipe.stop == "fosc" else None
    stop_tau = FatTauSchedule(method.epochs, method.tau).tau(t) if recipe.stop == "tau" else None
    parts = dict(stop_fosc=stop_fosc, fosc_reference=method.fosc_reference, loss=recipe.inner,
                 start=recipe.start, stop_tau=stop_tau, kappa=recipe.weights == "gairat", omega=recipe.omega)
    return dataclasses.replace(plan, **parts)


def _steps_plan(m: Method, attack: str | None, t: int) -> AttackPlan | None:
    """How the PGD steps of epoch t run: K steps of alpha from a random start, a curriculum's
    number of steps, FGSM (one step of eps, no start) or FGSM-RS (one step of 1.25 eps)."""
    pgd_k = AttackPlan(m.steps, m.step_size, random_start=True)
    if attack is None:
        return None
    if attack == "pgd":
        return pgd_k
    if attack == "curriculum":
        steps = CurriculumSchedule(m.steps, m.curriculum_epochs).steps(t)
        return AttackPlan(steps, m.step_size, random_start=True) if steps else None
    if attack == "fgsm-then-pgd":
        return AttackPlan(1, m.eps, random_start=False) if FgsmPgdSchedule(m.fgsm_epochs).use_fgsm(t) else pgd_k
    if attack == "fgsm-rs":
        return AttackPlan(1, FGSM_RS_STEP * m.eps, random_start=True)
    raise ConfigError(f"unknown attack schedule {attack!r}")


def loss_plan(method: Method, t: int) -> LossPlan:
    """The loss `method.method` minimises at epoch t and its per-example weights ("ce" from
    the second epoch on, as the authors' code of Dynamic; "gairat" after its burn-in)."""
    recipe = method.recipe()
    weights = recipe.weights if recipe.weights != "ce" else loss_weights_at("ce", t)
    if weights == "gairat":
        begin = method.gairat_begin if method.gairat_begin is not None else max(1, round(method.epochs / 2))
        weights = "gairat" if GairatSchedule(begin).weighted(t) else "none"
    return LossPlan(recipe.outer, method.beta, weights, method.gairat_lambda)


def loss_weights_at(loss_weights: str, t: int) -> str:
    """The authors' loss weighting at epoch t (0-based): `--loss-weights ce` weights from the
    second epoch on, the first is unweighted, as in the authors' code (YisenWang/
    dynamic_adv_training, train_models.py lines 124-127: `ep == 0` trains without sample_weight)."""
    return "none" if t == 0 else loss_weights
