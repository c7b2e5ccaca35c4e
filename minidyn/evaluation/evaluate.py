"""Robustness evaluation a sceptic accepts: several attacks, per-example worst case, restarts,
black-box transfer, and checks for the usual signs of gradient masking.

    from minidyn.evaluation.checkpoints import load_checkpoint
    from minidyn.evaluation.evaluate import evaluate_attacks, sanity_flags
    backend, model, meta = load_checkpoint("runs/x/checkpoint.pt")
    result = evaluate_attacks(backend, model, test_set, eps=0.3, limit=1000)
    result.accuracy()        # {"clean": 98.1, "fgsm": ..., "worst-case": ...} in percent
    sanity_flags(result)     # [] when nothing looks like gradient masking

The attacks (clean, fgsm, pgd10, pgd20, cw, apgd-ce, apgd-dlr, apgd-t, square, fab-t, the
cascade autoattack, AutoAttack's standard suite, and pgd20-eps-over-2/-8, PGD-20 at other step
sizes; all L_inf, in the eps-ball intersected with [0, 1]^d) are the rows of
`minidyn.evaluation.attack_table`.

An example is correct under an attack when the model classifies its adversarial example
correctly (the paper's accuracy); the worst case is correct under *every* attack evaluated.
With `restarts=R`, a random-start attack is run up to R times with different random starts and
an example counts as correct only if it survives all of them (restart r > 0 attacks only the
examples that survived so far, which gives the same accuracy at less cost). The test set is
streamed in batches: memory holds one batch and one boolean per example and attack.

Black-box: `source=(source_backend, source_model)` crafts the adversarial examples on a
surrogate with the same seeds, and the target classifies them. The points transferred are the
attacks' final points, and for APGD its highest-loss point after all iterations (`craft`'s
transfer), so with source == target every attack but APGD gives the white-box result exactly,
and APGD an accuracy at least as high (white-box APGD counts any misclassified iterate).

Sanity flags (`sanity_flags`) state in accuracy terms what should hold and does not, beyond
noise: the orderings of attacks (white-box only, except "no attack above clean"), black-box not
below white-box, and three checks counted during the evaluation (zero or non-finite input
gradients, attacks with eps 0 changing predictions, verdicts that a second forward pass
contradicts), AutoAttack's check that Square lowered its accuracy after the gradient stages, and
with convergence=True the FOSC of the iterative attacks' points (minidyn.evaluation.convergence).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from minidyn.evaluation.attack_table import (ATTACKS, DEFAULT_ATTACKS, TABLE, WORST, WORST_LABEL, Attack,
                                  attack_seed, parse_attacks, stationary_target)
from minidyn.evaluation.autoattack import SQUARE_ALPHA, cascade, square_flag, stage_accuracies
from minidyn.evaluation.convergence import SHARE, THRESHOLD, FoscSummary, convergence_flag, fosc_of_points
from minidyn.attacks import check_eps
from minidyn.backend import Array, Backend, Model
from minidyn.data import Dataset
from minidyn.data.batches import batch_indices, to_backend as _dataset_to_backend
from minidyn.errors import ConfigError

__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "WORST", "EvalResult", "attack_seed", "checks_applied",
           "craft", "eps_curve_flags", "evaluate_attacks", "format_table", "mcnemar",
           "parse_attacks", "sanity_flags", "weaker"]


def craft(name: str, backend: Backend, model: Model, x: Array, y: Array, *, eps: float, rng=None,
          apgd_steps: int = 100, transfer: bool = False) -> Array:
    """The adversarial batch of attack `name` against `model` (x itself for "clean").

    transfer: the points are for another model (black-box). APGD then runs every example to
    the end and returns its highest-loss point x_best: the first misclassified iterate, which
    is what counts against `model` itself, barely crosses the surrogate's boundary and
    transfers poorly.
    """
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return ATTACKS[name].craft(backend, model, x, y, eps=eps, rng=rng, apgd_steps=apgd_steps,
                               transfer=transfer)[0]


@dataclass
class EvalResult:
    """Per-example correctness (numpy bool (n,)) for each attack, and the settings used.

    checks: what the built-in checks counted (see evaluate_attacks), read by sanity_flags.
    indices: int64 (n,), the index in the test set of each example (column) of `correct`;
    None: the first n (0, 1, ..., n - 1).
    stages: {cascade attack: {stage: numpy bool (n,)}}, white-box: still correct after the
    natural point ("clean") and after each stage of a cascade (AutoAttack), in order.
    """

    attacks: list[str]
    correct: dict[str, np.ndarray]
    eps: float
    n: int
    seed: int = 0
    restarts: int = 1
    apgd_steps: int = 100
    source: str | None = None  # the surrogate's name for black-box results
    meta: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    indices: np.ndarray | None = None
    stages: dict = field(default_factory=dict)

    def example_indices(self) -> np.ndarray:
        """int64 (n,): the test-set index of each example evaluated."""
        return np.arange(self.n, dtype=np.int64) if self.indices is None else np.asarray(self.indices, np.int64)

    def correct_matrix(self) -> np.ndarray:
        """bool (len(attacks), n): row i is correct[attacks[i]] (what a per-example file stores)."""
        return np.stack([np.asarray(self.correct[name], dtype=bool) for name in self.attacks]) \
            if self.attacks else np.zeros((0, self.n), dtype=bool)

    def worst_case(self) -> np.ndarray:
        """(n,) bool: correct under every attack evaluated."""
        out = np.ones(self.n, dtype=bool)
        for name in self.attacks:
            out &= self.correct[name]
        return out

    def accuracy(self) -> dict[str, float]:
        """{attack: accuracy in percent, ..., "worst-case": percent}."""
        def percent(mask):  # 100 k / n, correctly rounded (97.8, not 97.80000000000001)
            return 100.0 * int(mask.sum()) / self.n if self.n else float("nan")

        acc = {name: percent(self.correct[name]) for name in self.attacks}
        acc[WORST] = percent(self.worst_case())
        return acc

    def stage_accuracy(self) -> dict[str, dict[str, float]]:
        """{cascade attack: {stage: robust accuracy in percent after it}} (AutoAttack's numbers)."""
        return {name: stage_accuracies(stages) for name, stages in self.stages.items()}

    def to_dict(self) -> dict:
        """JSON-able summary (what `minidyn eval --save` writes); "stages" only with a cascade."""
        stages = {"stages": self.stage_accuracy()} if self.stages else {}
        return {"accuracy": self.accuracy(), "attacks": list(self.attacks), "eps": self.eps,
                "n": self.n, "seed": self.seed, "restarts": self.restarts,
                "apgd_steps": self.apgd_steps, "source": self.source, "checks": self.checks,
                **stages, **self.meta}


ZERO_GRAD_SHARE = 0.01  # flag when more than 1% of the examples have an all-zero input gradient
EPS0_EXAMPLES = 50      # the eps-0 check attacks the first 50 examples


@dataclass(frozen=True)
class _Setting:
    """What every attack of one evaluation shares. transfer: crafted on a surrogate."""

    eps: float
    seed: int
    apgd_steps: int
    transfer: bool


def evaluate_attacks(backend: Backend, model: Model, data: Dataset, *, eps: float,
                     attacks=DEFAULT_ATTACKS, batch_size: int = 256, seed: int = 0,
                     restarts: int = 1, limit: int | None = None, apgd_steps: int = 100,
                     source: tuple[Backend, Model] | None = None, source_name: str | None = None,
                     on_batch: Callable[[int, int], None] | None = None,
                     convergence: bool = False) -> EvalResult:
    """Accuracy of `model` under each attack on the first `limit` examples of `data`.

    source: (backend, model) of a surrogate that crafts the attacks (black-box, see `craft`'s
    transfer); None: white-box. on_batch(done, total) is called after each batch (progress).
    A cascade (`autoattack`) runs each stage on the examples still robust, --restarts times per
    stage with a random start, and (white-box) keeps each example's stage in result.stages.

    Three checks are counted into result.checks along the way (sanity_flags reads them):
      grad     examples whose input gradient at the clean point, of the model the attacks
               differentiate, is exactly zero everywhere or not finite (one gradient
               evaluation per example);
      eps0     the first EPS0_EXAMPLES examples attacked by every attack with eps 0: examples
               whose prediction then differs from the clean one (an attack that moves the
               input or changes the model's state);
      recount  examples whose verdict under an attack differs between the forward pass that
               counted it and a second forward pass of the same returned points in another
               batch split, or (white-box APGD) from the attack's own record of having
               misclassified them (one extra forward pass per example and attack).
    convergence=True (white-box) adds a fourth, checks["fosc"]: per attack with a `stationary`
    loss the normalised FOSC summary of the points it left correct (one gradient evaluation per
    such point; minidyn.evaluation.convergence), which sanity_flags reads.
    """
    names = parse_attacks(attacks)
    _validate(data, eps=eps, attacks=names, restarts=restarts, batch_size=batch_size,
              limit=limit, apgd_steps=apgd_steps)
    _validate_classes(data, names)
    target = (backend, model)
    crafter = source if source is not None else target
    setting = _Setting(eps, seed, apgd_steps, transfer=source is not None)
    n = len(data) if limit is None else min(limit, len(data))
    correct = {name: np.zeros(n, dtype=bool) for name in names}
    checks = {"grad": {"n": n, "zero": 0, "nonfinite": 0},
              "eps0": {"n": min(n, EPS0_EXAMPLES), "differs": dict.fromkeys(names, 0)},
              "recount": {"n": n, "differs": dict.fromkeys(names, 0)}}
    checks["eps0"]["differs"] = _eps0_check(names, target, crafter, data,
                                            np.arange(checks["eps0"]["n"]), setting)
    fosc = {name: [] for name in names if ATTACKS[name].stationary} if convergence and source is None else None
    stages = {name: {} for name in names if ATTACKS[name].stages} if source is None else {}
    for batch, idx in enumerate(batch_indices(np.arange(n), batch_size)):
        _gradient_check(*crafter, *to_backend(crafter[0], data, idx), checks["grad"])
        for name in names:
            recount = checks["recount"]["differs"]
            if ATTACKS[name].stages:
                correct[name][idx] = _cascade_batch(ATTACKS[name], target, crafter, data, idx, batch,
                                                    restarts, recount, setting, stages.get(name))
            else:
                correct[name][idx] = _attack_batch(ATTACKS[name], target, crafter, data, idx, batch, restarts,
                                                   recount, setting, None if fosc is None else fosc.get(name))
        if on_batch:
            on_batch(int(idx[-1]) + 1, n)
    if fosc is not None:
        checks["fosc"] = {name: FoscSummary.of(np.concatenate(r) if r else np.zeros(0)).to_dict()
                          for name, r in fosc.items()}
    return EvalResult(names, correct, eps, n, seed, restarts, apgd_steps, source_name, checks=checks,
                      indices=np.arange(n, dtype=np.int64),
                      stages={name: {k: np.concatenate(v) for k, v in st.items()} for name, st in stages.items()})


def _validate(data: Dataset, *, eps, attacks, restarts, batch_size, limit, apgd_steps) -> None:
    check_eps(eps)
    if restarts < 1:
        raise ConfigError(f"--restarts must be >= 1, got {restarts}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if apgd_steps < 1:
        raise ConfigError(f"APGD steps must be >= 1, got {apgd_steps}")
    if "apgd-dlr" in attacks and data.num_classes < 3:
        raise ConfigError("apgd-dlr needs at least 3 classes (the DLR loss uses the third largest logit)")


def to_backend(backend: Backend, data, idx: np.ndarray) -> tuple[Array, Array]:
    """Examples idx of `data` as (x float in [0, 1], y int) on the backend: a uint8 Dataset's
    (minidyn.data.batches), or those of any data object with its own to_backend(backend, idx)
    (minidyn.evaluation.examine's float arrays)."""
    own = getattr(data, "to_backend", None)
    return own(backend, idx) if own is not None else _dataset_to_backend(backend, data, idx)


def _validate_classes(data: Dataset, attacks) -> None:
    """APGD-T's targeted DLR loss (in AutoAttack too) needs 4 classes: say so before attacking."""
    needs = [name for name in attacks if name == "apgd-t" or "apgd-t" in ATTACKS[name].stages]
    if needs and data.num_classes < 4:
        raise ConfigError(f"{needs[0]} needs at least 4 classes (APGD-T's targeted DLR loss uses the "
                          f"fourth largest logit); {data.name} has {data.num_classes}")


def _move(a: Array, source: Backend, target: Backend) -> Array:
    """Array a of backend `source` as an array of `target` (itself when they are one backend)."""
    return a if source is target else target.asarray(source.to_numpy(a))


def _verdicts(backend: Backend, model: Model, x: Array, y: Array) -> np.ndarray:
    """(m,) numpy bool: model classifies each row of x correctly."""
    return backend.to_numpy(backend.argmax(backend.logits(model, x)) == y)


def _start_rng(attack: Attack, backend: Backend, seed: int, restart: int, batch: int):
    """The generator of the attack's random start (None for an attack without one)."""
    return backend.rng(attack_seed(seed, attack.name, restart, batch)) if attack.random_start else None


def _attack_batch(attack: Attack, target, crafter, data, idx, batch, restarts, recount,
                  setting: _Setting, fosc: list | None = None) -> np.ndarray:
    """(len(idx),) bool: correct under `attack` in every restart (restart r > 0 attacks only the
    examples still correct). Adds the examples whose verdict a recount contradicts to
    recount[attack.name]; appends the normalised FOSC of the points left correct to `fosc`."""
    (backend, model), (crafter_backend, crafter_model) = target, crafter
    correct = np.ones(len(idx), dtype=bool)
    last = None
    for restart in range(restarts if attack.random_start else 1):
        rows = np.arange(len(idx)) if restart == 0 else np.nonzero(correct)[0]
        if rows.size == 0:
            break
        x, y = to_backend(backend, data, idx[rows])
        x_crafter, y_crafter = (x, y) if crafter_backend is backend else \
            to_backend(crafter_backend, data, idx[rows])
        x_adv, fooled = attack.craft(
            crafter_backend, crafter_model, x_crafter, y_crafter, eps=setting.eps,
            rng=_start_rng(attack, crafter_backend, setting.seed, restart, batch),
            apgd_steps=setting.apgd_steps, transfer=setting.transfer)
        x_adv = _move(x_adv, crafter_backend, backend)
        verdict = _verdicts(backend, model, x_adv, y)
        differs = verdict != _recount(backend, model, x_adv, y)
        if fooled is not None:  # the attack recorded these as misclassified
            differs |= crafter_backend.to_numpy(fooled) & verdict
        recount[attack.name] += int(differs.sum())
        correct[rows] = verdict
        last = (x, y, x_adv, verdict)
    if fosc is not None and last is not None:
        fosc.append(_fosc_of_survivors(attack, backend, model, *last, setting.eps))
    return correct


def _fosc_of_survivors(attack: Attack, backend: Backend, model: Model, x: Array, y: Array, x_adv: Array,
                       verdict: np.ndarray, eps: float) -> np.ndarray:
    """Normalised FOSC (m,) of the points x_adv that the attack's last restart left correct
    (verdict), under the loss it maximises: one gradient evaluation each."""
    if not verdict.any():
        return np.zeros(0)
    rows = backend.asarray(np.nonzero(verdict)[0])
    x0, y0, points = backend.take(x, rows), backend.take(y, rows), backend.take(x_adv, rows)
    return fosc_of_points(backend, model, points, x0, y0, eps, attack.stationary,
                          stationary_target(attack, backend, model, x0))


def _cascade_batch(attack: Attack, target, crafter, data, idx, batch, restarts, recount,
                   setting: _Setting, stages: dict | None) -> np.ndarray:
    """(len(idx),) bool: correct under the cascade `attack` (its stages in turn on the examples
    still robust, each up to `restarts` times). The returned points are recounted like
    `_attack_batch`'s, and a stage's own record of a misclassified point that its forward pass
    contradicts counts too; white-box, appends each stage's (len(idx),) still-correct to `stages`."""
    (backend, model), (crafter_backend, crafter_model) = target, crafter
    x, y = to_backend(backend, data, idx)
    x_crafter, y_crafter = (x, y) if crafter_backend is backend else to_backend(crafter_backend, data, idx)
    result = cascade(crafter_backend, crafter_model, x_crafter, y_crafter,
                     stages=[ATTACKS[s] for s in attack.stages], eps=setting.eps,
                     rng=_start_rng(attack, crafter_backend, setting.seed, 0, batch),
                     apgd_steps=setting.apgd_steps, restarts=restarts)
    x_adv = _move(result.x_adv, crafter_backend, backend)
    verdict = _verdicts(backend, model, x_adv, y)
    differs = verdict != _recount(backend, model, x_adv, y)
    if not setting.transfer:
        differs |= crafter_backend.to_numpy(result.fooled) & verdict
    recount[attack.name] += int(differs.sum()) + (0 if setting.transfer else result.contradicted)
    if stages is not None:
        for k, name in enumerate(("clean", *attack.stages)):
            stages.setdefault(name, []).append(result.correct_after(k))
    return verdict


def _recount(backend: Backend, model: Model, x: Array, y: Array) -> np.ndarray:
    """The verdicts of a second forward pass of x in another split: its second half first, then
    its first half (a model whose outputs depend on the batch or on chance disagrees)."""
    m = int(x.shape[0])
    half = m // 2
    out = np.empty(m, dtype=bool)
    for part in (np.arange(half, m), np.arange(half)):
        if part.size:
            rows = backend.asarray(part)
            out[part] = _verdicts(backend, model, backend.take(x, rows), backend.take(y, rows))
    return out


def _eps0_check(names, target, crafter, data, idx, setting: _Setting) -> dict:
    """{attack: examples of idx whose prediction under the attack with eps 0 differs from the
    clean prediction}. With eps 0 every attack must return x itself."""
    (backend, model), (crafter_backend, crafter_model) = target, crafter
    x, _ = to_backend(backend, data, idx)
    x_crafter, y_crafter = to_backend(crafter_backend, data, idx)
    clean = backend.to_numpy(backend.argmax(backend.logits(model, x)))
    differs = {}
    for name in names:
        attack = ATTACKS[name]
        x_adv, _ = attack.craft(crafter_backend, crafter_model, x_crafter, y_crafter, eps=0.0,
                                rng=_start_rng(attack, crafter_backend, setting.seed, 0, 0),
                                apgd_steps=setting.apgd_steps, transfer=setting.transfer)
        pred = backend.to_numpy(backend.argmax(backend.logits(model, _move(x_adv, crafter_backend, backend))))
        differs[name] = int((pred != clean).sum())
    return differs


def _gradient_check(backend: Backend, model: Model, x: Array, y: Array, out: dict) -> None:
    """Count the rows of x whose input gradient (cross-entropy) is all zero, or not finite."""
    _, grad = backend.loss_and_grad(model, x, y)
    grad = backend.to_numpy(grad).reshape(int(x.shape[0]), -1)
    finite = np.isfinite(grad).all(axis=1)
    out["nonfinite"] += int((~finite).sum())
    out["zero"] += int((finite & (grad == 0).all(axis=1)).sum())


# --- sanity checks ---------------------------------------------------------------------------
def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, z: float = 2.0) -> tuple[bool, int, int]:
    """Are more examples correct under a than under b, beyond noise? A paired (McNemar) test on
    the examples where the (n,) bool arrays disagree: k_ab are correct under a but not b, k_ba the
    reverse; true when k_ab - k_ba > z sqrt(k_ab + k_ba). Returns (flag, k_ab, k_ba)."""
    k_ab, k_ba = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    return (k_ab > k_ba and k_ab - k_ba > z * math.sqrt(k_ab + k_ba)), k_ab, k_ba


def weaker(result: EvalResult, a: str, b: str, z: float = 2.0) -> tuple[bool, int, int]:
    """Is attack `a` weaker than `b` (accuracy under a above accuracy under b) beyond noise?
    `mcnemar` on their per-example results. Returns (flag, k_ab, k_ba)."""
    return mcnemar(result.correct[a], result.correct[b], z)


def _orderings(result: EvalResult) -> list[tuple[str, str, str]]:
    """(a, b, why) for each "accuracy under a <= accuracy under b" that should hold. Against the
    model's own gradients every attack is at most clean, iterative attacks at most FGSM, PGD-20
    at most PGD-10 and APGD at most PGD; transferred from a surrogate only the first holds
    (the paper's Table 2 has black-box CW above FGSM)."""
    present = set(result.attacks)
    out = [(attack.name, "clean", "an attack cannot make the model more accurate (eps 0 is clean): "
                                  "a sign of gradient masking or of a broken attack")
           for attack in TABLE if attack.name != "clean"]
    if result.source is None:
        out += [(attack.name, "fgsm", "an iterative attack should be at least as strong as one step")
                for attack in TABLE if attack.iterative]
        out.append(("pgd20", "pgd10", "more steps should not help the model"))
        ref = "pgd20" if "pgd20" in present else "pgd10"
        out += [(a, ref, "APGD should be at least as strong as PGD") for a in ("apgd-ce", "apgd-dlr")]
        out.append(("autoattack", "apgd-ce", "AutoAttack runs APGD-CE first, so it should be at least as strong"))
    return [(a, b, why) for a, b, why in out if a in present and b in present]


def sanity_flags(result: EvalResult, white_box: dict | None = None) -> list[str]:
    """Signs of gradient masking (or of a broken attack or model) in `result`, one sentence each.

    white_box: for a black-box result, the white-box {"accuracy": {...}, "n": n} of the same
    target (e.g. its eval.json): a transfer attack stronger than the white-box one is flagged.
    """
    acc, flags = result.accuracy(), []
    for a, b, why in _orderings(result):
        flag, k_ab, k_ba = weaker(result, a, b)
        if flag:
            label_a, label_b = ATTACKS[a].label, ATTACKS[b].label
            flags.append(f"{label_a} accuracy ({acc[a]:.2f}%) is above {label_b} accuracy "
                         f"({acc[b]:.2f}%) beyond noise: {k_ab} examples are correct under "
                         f"{label_a} but not under {label_b}, {k_ba} the reverse; {why}")
    if white_box is not None and result.source is not None:
        flags += _transfer_flags(result, white_box)
    for name, accuracies in result.stage_accuracy().items():
        flags += [flag for flag in [square_flag(accuracies, ATTACKS[name].label)] if flag]
    return flags + _check_flags(result.checks)


def _transfer_flags(result: EvalResult, white_box: dict) -> list[str]:
    """Black-box accuracy below white-box accuracy beyond noise (an unpaired two-sample test)."""
    acc, flags = result.accuracy(), []
    n_white_box = int(white_box.get("n") or 0)
    for name in result.attacks:
        white = (white_box.get("accuracy") or {}).get(name)
        if name == "clean" or white is None or not n_white_box:
            continue
        p1, p2 = white / 100, acc[name] / 100
        standard_error = 100 * math.sqrt(p1 * (1 - p1) / n_white_box + p2 * (1 - p2) / result.n)
        if white - acc[name] > 2 * standard_error + 100 / result.n:
            label = ATTACKS[name].label
            flags.append(f"black-box {label} accuracy ({acc[name]:.2f}%) is below white-box "
                         f"{label} accuracy ({white:.2f}%) beyond noise: the model's own "
                         "gradients mislead attacks, a classic sign of gradient masking")
    return flags


def _check_flags(checks: dict) -> list[str]:
    """Flags from the counts of evaluate_attacks' built-in checks (nothing when absent)."""
    flags = []
    grad = checks.get("grad")
    if grad and grad["nonfinite"]:
        flags.append(f"{grad['nonfinite']} of {grad['n']} examples have a NaN or infinite input "
                     "gradient at the clean point: the model (or its weights) is broken there and "
                     "gradient attacks cannot be trusted")
    if grad and grad["zero"] > ZERO_GRAD_SHARE * grad["n"]:
        flags.append(f"{grad['zero']} of {grad['n']} examples ({100 * grad['zero'] / grad['n']:.1f}%) "
                     "have an input gradient that is exactly zero at the clean point: a layer "
                     "that kills gradients (step, rounding, saturation) hides the model from "
                     "gradient attacks; try a black-box attack (--source)")
    eps0 = checks.get("eps0") or {}
    for name, k in (eps0.get("differs") or {}).items():
        if k:
            flags.append(f"{ATTACKS[name].label} with eps 0 changes the prediction of {k} of the "
                         f"first {eps0['n']} examples (it must return them unchanged): the attack "
                         "moves the input or changes the model's state (mode, BatchNorm statistics)")
    recount = checks.get("recount") or {}
    for name, k in (recount.get("differs") or {}).items():
        if k:
            flags.append(f"{ATTACKS[name].label}: the verdict on {k} of {recount['n']} examples "
                         "differs between the count and a second forward pass of the returned "
                         "points: the model is random or depends on the batch, so its accuracy is "
                         "not well defined")
    for name, summary in (checks.get("fosc") or {}).items():
        flags += [flag for flag in [convergence_flag(ATTACKS[name].label, summary)] if flag]
    return flags


def checks_applied(result: EvalResult, white_box: bool = False) -> list[str]:
    """What sanity_flags verified for this result (for a "passed" line), in accuracy terms."""
    below = {}  # b -> the attacks whose accuracy should be <= b's, in table order
    for a, b, _ in _orderings(result):
        below.setdefault(b, []).append(ATTACKS[a].label)
    out = ["every attack's accuracy <= clean accuracy"] if below.pop("clean", None) else []
    for b, labels in below.items():
        names = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
        out.append(f"{names} accuracy <= {ATTACKS[b].label} accuracy")
    out = [f"{line}, within noise" for line in out]
    if white_box:
        out.append("black-box accuracy >= white-box accuracy, within noise")
    checks = result.checks
    if checks.get("grad"):
        out.append("input gradients nonzero and finite at the clean points")
    if checks.get("eps0"):
        out.append(f"eps 0 leaves the predictions of the first {checks['eps0']['n']} examples unchanged")
    if checks.get("recount"):
        out.append("a second forward pass agrees with every verdict")
    if result.stages:
        out.append("Square does not lower AutoAttack's accuracy after the gradient attacks "
                   f"(by more than {SQUARE_ALPHA:g} points)")
    if checks.get("fosc"):
        labels = ", ".join(ATTACKS[name].label for name in checks["fosc"])
        out.append(f"the points {labels} left correct are near stationary (normalised FOSC above "
                   f"{THRESHOLD:g} for at most {100 * SHARE:.0f}% of them)")
    return out


def eps_curve_flags(eps_values, correct_by_eps: list[np.ndarray], z: float = 2.0) -> list[str]:
    """Flags where accuracy rises from one eps to a larger one beyond noise (`mcnemar`)."""
    flags = []
    for (e1, c1), (e2, c2) in zip(zip(eps_values, correct_by_eps), zip(eps_values[1:], correct_by_eps[1:])):
        if mcnemar(c2, c1, z)[0]:
            flags.append(f"accuracy rises with eps: {100 * c2.mean():.2f}% at eps {e2:.4g} > "
                         f"{100 * c1.mean():.2f}% at eps {e1:.4g}, a sign of gradient masking")
    return flags


def format_table(result: EvalResult, header: str | None = None) -> str:
    """The readable table `minidyn eval` prints."""
    acc = result.accuracy()
    lines = [header] if header else []
    lines.append(f"{'attack':<12}{'accuracy':>10}{'correct':>14}")
    for name in [*result.attacks, WORST]:
        mask = result.worst_case() if name == WORST else result.correct[name]
        label = WORST_LABEL if name == WORST else ATTACKS[name].label
        lines.append(f"{label:<12}{acc[name]:>9.2f}%{f'{int(mask.sum())}/{result.n}':>14}")
    lines += _stage_lines(result) + _fosc_lines(result.checks.get("fosc") or {})
    return "\n".join(lines)


def _stage_lines(result: EvalResult) -> list[str]:
    """A cascade's robust accuracy after each stage (AutoAttack's log), below the table."""
    lines = []
    for name, stages in result.stages.items():
        lines.append(f"{ATTACKS[name].label}, robust accuracy after each stage (each on the examples still robust):")
        for stage, correct in stages.items():
            label = "clean" if stage == "clean" else ATTACKS[stage].label
            lines.append(f"  {label:<10}{100.0 * int(correct.sum()) / max(correct.size, 1):>9.2f}%"
                         f"{f'{int(correct.sum())}/{correct.size}':>14}")
    return lines


def _fosc_lines(fosc: dict) -> list[str]:
    """The FOSC summary of each attack checked (convergence=True), below the table."""
    if not fosc:
        return []
    lines = [f"convergence (normalised FOSC of the points each attack left correct; 0 is stationary, "
             f"> {THRESHOLD:g} not converged):"]
    for name, s in fosc.items():
        median = "-" if s["median"] is None else f"{s['median']:.3f}"
        above = "-" if s["above"] is None else f"{100 * s['above']:.1f}%"
        lines.append(f"  {ATTACKS[name].label:<10} median {median:>6}   above {THRESHOLD:g}: {above:>6}   "
                     f"of {s['n']} points")
    return lines
