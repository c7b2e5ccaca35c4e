"""The attacks of `minidyn eval`, in one table: name, label, random start, iterative, how to run.

    from minidyn.evaluation.attack_table import ATTACKS, DEFAULT_ATTACKS
    ATTACKS["pgd20"].label                                  # "PGD-20"
    x_adv, fooled = ATTACKS["pgd20"].craft(backend, model, x, y, eps=0.3, rng=backend.rng(0))

Every attack is L_inf, in the eps-ball intersected with [0, 1]^d, and is the one PGD loop of
`minidyn.attacks` or APGD of `minidyn.apgd`:

    clean     no perturbation
    fgsm      one step of size eps (no random start)
    pgd10     PGD, 10 steps of eps/4, random start          (the paper's evaluation)
    pgd20     PGD, 20 steps of eps/4, random start
    cw        CW_inf: PGD, 30 steps of eps/4 on the margin loss, random start
    apgd-ce   APGD (Croce & Hein 2020) on the cross-entropy, --apgd-steps iterations, random start
    apgd-dlr  APGD on the DLR loss (needs >= 3 classes)
    apgd-t    APGD-T: targeted DLR, 9 targets x --apgd-steps iterations (needs >= 4 classes)
    square    Square (Andriushchenko et al. 2020): 5,000 queries of the logits, no gradient
    fab-t     FAB-T (Croce & Hein 2020): targeted FAB, 9 targets x 100 iterations (minidyn.fab)
    autoattack  AutoAttack's standard suite: apgd-ce, apgd-t, fab-t, square in this order, each on
              the examples still robust (minidyn.evaluation.autoattack)
    pgd20-eps-over-2  PGD, 20 steps of eps/2, random start  (with pgd20's eps/4: Fig. 2a's
    pgd20-eps-over-8  PGD, 20 steps of eps/8, random start   cross-test of training step sizes)

The evaluation (minidyn.evaluation.evaluate), its sanity checks, the CLI's columns and the analyses
(minidyn.evaluation.analysis) all read this table. The order of TABLE is part of the results: it numbers
the attacks in the seeds of their random starts (attack_seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from minidyn.apgd import apgd, apgd_targeted
from minidyn.attacks import cw_inf, fgsm, pgd
from minidyn.backend import Array, Backend, Model
from minidyn.errors import ConfigError
from minidyn.evaluation.autoattack import STANDARD as AUTOATTACK_STAGES, cascade
from minidyn.square import craft as _square


# --- how to run each attack: (x_adv, fooled) ---------------------------------------------------
# fooled is the attack's own (B,) record that x_adv is misclassified where it keeps one (APGD
# against its own model), else None.
def _no_attack(backend, model, x, y, **_) -> tuple[Array, None]:
    return x, None


def _fgsm(backend, model, x, y, *, eps, **_) -> tuple[Array, None]:
    return fgsm(model, x, y, eps=eps, backend=backend).x_adv, None


def _pgd(backend, model, x, y, *, eps, rng, steps, divisor=4, **_) -> tuple[Array, None]:
    """PGD-`steps` with step eps/`divisor` from a random start (Madry et al. 2018)."""
    return pgd(model, x, y, eps=eps, step_size=eps / divisor, steps=steps, random_start=True,
               final_stats=False, rng=rng, backend=backend).x_adv, None


def _cw(backend, model, x, y, *, eps, rng, **_) -> tuple[Array, None]:
    return cw_inf(model, x, y, eps=eps, steps=30, rng=rng, backend=backend).x_adv, None


def _apgd(backend, model, x, y, *, eps, rng, apgd_steps, transfer, loss) -> tuple[Array, Array | None]:
    """APGD on `loss`. transfer (the points are for another model): run every example to the end
    and return the highest-loss point x_best, since the first misclassified iterate, what counts
    against the model itself, barely crosses the surrogate's boundary and transfers poorly."""
    result = apgd(model, x, y, eps=eps, steps=apgd_steps, loss=loss, rng=rng,
                  stop_when_misclassified=not transfer, backend=backend)
    return (result.x_best, None) if transfer else (result.x_adv, result.found)


APGD_T_TARGETS = 9  # AutoAttack's standard version


def _apgd_t(backend, model, x, y, *, eps, rng, apgd_steps, transfer) -> tuple[Array, Array | None]:
    """AutoAttack's APGD-T: APGD_T_TARGETS targets, `apgd_steps` each; transfer as in `_apgd`."""
    result = apgd_targeted(model, x, y, eps=eps, steps=apgd_steps, n_target_classes=APGD_T_TARGETS, rng=rng,
                           stop_when_misclassified=not transfer, backend=backend)
    return (result.x_best, None) if transfer else (result.x_adv, result.found)


def stationary_target(attack: "Attack", backend: Backend, model: Model, x: Array) -> Array | None:
    """The (B,) target classes of the loss `attack` maximised at the points it left correct, for
    natural examples x: APGD-T's survivors return the point of its last run, whose target is the
    (k + 1)-th largest logit at x with k = min(APGD_T_TARGETS, C - 1), equal logits by the lower
    class first (as `apgd_targeted` ranks them); None for the untargeted losses."""
    if attack.stationary != "dlr-targeted":
        return None
    z = backend.to_numpy(backend.logits(model, x))
    k = min(APGD_T_TARGETS, z.shape[1] - 1)
    return backend.asarray(np.argsort(-z, axis=1, kind="stable")[:, k])


FAB_T_TARGETS = 9  # AutoAttack's standard version (autoattack.py line 318)


def _fab_t(backend, model, x, y, *, eps, rng, transfer, **_) -> tuple[Array, Array | None]:
    """AutoAttack's FAB-T: FAB_T_TARGETS targets, 100 iterations, one run (no random start)."""
    from minidyn.fab import fab_targeted  # FAB's module is imported only when FAB-T runs

    result = fab_targeted(model, x, y, eps=eps, n_target_classes=FAB_T_TARGETS, rng=rng, backend=backend)
    return result.x_adv, None if transfer else result.fooled


def _autoattack(backend, model, x, y, *, eps, rng, apgd_steps, transfer) -> tuple[Array, Array | None]:
    """AutoAttack's standard cascade, one run of each stage (the evaluation passes --restarts
    and keeps the stage of each example: minidyn.evaluation.evaluate)."""
    result = cascade(backend, model, x, y, stages=[ATTACKS[s] for s in AUTOATTACK_STAGES], eps=eps,
                     rng=rng, apgd_steps=apgd_steps)
    return result.x_adv, None if transfer else result.fooled


@dataclass(frozen=True)
class Attack:
    """One row of the table.

    name:         the key in --attacks, eval.json and the CSV columns ("pgd20")
    label:        how tables and sanity flags print it ("PGD-20")
    random_start: starts at a random point of the eps-ball (so --restarts repeat it)
    iterative:    takes several gradient steps (held to be at least as strong as FGSM)
    run:          run(backend, model, x, y, *, eps, rng, apgd_steps, transfer) -> (x_adv, fooled)
    default:      among the attacks `minidyn eval` and `minidyn compare` run by default
    stationary:   the loss whose maximiser in the eps-ball the attack seeks, for the FOSC
                  convergence check (minidyn.evaluation.convergence); None: not such an attack
    stages:       the rows a cascade runs in turn on the examples still robust (AutoAttack)
    """

    name: str
    label: str
    random_start: bool
    iterative: bool
    run: Callable[..., tuple[Array, Array | None]]
    default: bool = True
    stationary: str | None = None
    stages: tuple[str, ...] = ()

    def craft(self, backend: Backend, model: Model, x: Array, y: Array, *, eps: float, rng=None,
              apgd_steps: int = 100, transfer: bool = False) -> tuple[Array, Array | None]:
        """(x_adv (B, ...), fooled (B,) bool or None) of this attack against `model`."""
        return self.run(backend, model, x, y, eps=eps, rng=rng, apgd_steps=apgd_steps,
                        transfer=transfer)


TABLE = (
    Attack("clean", "clean", random_start=False, iterative=False, run=_no_attack),
    Attack("fgsm", "FGSM", random_start=False, iterative=False, run=_fgsm),
    Attack("pgd10", "PGD-10", random_start=True, iterative=True, run=partial(_pgd, steps=10),
           stationary="ce"),
    Attack("pgd20", "PGD-20", random_start=True, iterative=True, run=partial(_pgd, steps=20),
           stationary="ce"),
    Attack("cw", "CW-inf", random_start=True, iterative=True, run=_cw, stationary="cw"),
    Attack("apgd-ce", "APGD-CE", random_start=True, iterative=True, run=partial(_apgd, loss="ce"),
           stationary="ce"),
    Attack("apgd-dlr", "APGD-DLR", random_start=True, iterative=True, run=partial(_apgd, loss="dlr"),
           default=False, stationary="dlr"),
    Attack("apgd-t", "APGD-T", random_start=True, iterative=True, run=_apgd_t, default=False,
           stationary="dlr-targeted"),
    Attack("square", "Square", random_start=True, iterative=False, run=_square, default=False),
    # appended: a row's position numbers its seeds (attack_seed), so new rows go last
    Attack("fab-t", "FAB-T", random_start=False, iterative=True, run=_fab_t, default=False),
    Attack("autoattack", "AutoAttack", random_start=True, iterative=True, run=_autoattack,
           default=False, stages=AUTOATTACK_STAGES),
    # Fig. 2a cross-tests every training step size: PGD-20 at eps/2 and eps/8 beside pgd20's eps/4
    Attack("pgd20-eps-over-2", "PGD-20 eps/2", random_start=True, iterative=True,
           run=partial(_pgd, steps=20, divisor=2), default=False, stationary="ce"),
    Attack("pgd20-eps-over-8", "PGD-20 eps/8", random_start=True, iterative=True,
           run=partial(_pgd, steps=20, divisor=8), default=False, stationary="ce"),
)
ATTACKS = {attack.name: attack for attack in TABLE}
DEFAULT_ATTACKS = tuple(attack.name for attack in TABLE if attack.default)
WORST, WORST_LABEL = "worst-case", "worst case"  # correct under every attack evaluated
from minidyn.seeds import EVAL_TABLE as _EVAL_STREAM  # noqa: E402  (the registry: minidyn/seeds.py)


def parse_attacks(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'clean,pgd10' or a list -> attack names in the given order, duplicates dropped."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [s for s in names if s]
    unknown = [s for s in names if s not in ATTACKS]
    if unknown:
        raise ConfigError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
    if not names:
        raise ConfigError("no attack given; choose from " + ", ".join(ATTACKS))
    return list(dict.fromkeys(names))


def attack_seed(seed: int, name: str, restart: int, batch: int) -> int:
    """An independent 32-bit seed for the random start of (attack, restart, batch); the attack
    enters as its position in TABLE."""
    position = list(ATTACKS).index(name)
    sequence = np.random.SeedSequence([seed, _EVAL_STREAM, position, restart, batch])
    return int(sequence.generate_state(1)[0])
