"""Robustness evaluation a sceptic accepts: several attacks, per-example worst case, restarts,
black-box transfer, and checks for the usual signs of gradient masking.

    from minidyn.evaluate import load_checkpoint, evaluate_attacks, sanity_flags
    B, model, meta = load_checkpoint("runs/x/checkpoint.pt")
    result = evaluate_attacks(B, model, test_set, eps=0.3, limit=1000)
    result.accuracy()        # {"clean": 98.1, "fgsm": ..., "worst-case": ...} in percent
    sanity_flags(result)     # [] when nothing looks like gradient masking

Attacks (all L_inf, in the eps-ball intersected with [0, 1]^d):

    clean     no perturbation
    fgsm      one step of size eps (no random start)
    pgd10     PGD, 10 steps of eps/4, random start          (the paper's evaluation)
    pgd20     PGD, 20 steps of eps/4, random start
    cw        CW_inf: PGD, 30 steps of eps/4 on the margin loss, random start
    apgd-ce   APGD (Croce & Hein 2020) on the cross-entropy, 100 iterations, random start
    apgd-dlr  APGD on the DLR loss (needs >= 3 classes)

Every attack is the one PGD loop of `minidyn.attacks` or APGD of `minidyn.apgd`.

An example is correct under an attack when the model classifies its adversarial example
correctly (the paper's accuracy); the worst case is correct under *every* attack evaluated.
With `restarts=R`, a random-start attack is run up to R times with different random starts and
an example counts as correct only if it survives all of them (restart r > 0 attacks only the
examples that survived so far, which gives the same accuracy at less cost). The test set is
streamed in batches: memory holds one batch and one boolean per example and attack.

Black-box: `source=(B_src, model_src)` crafts the adversarial examples on a surrogate with the
same seeds, and the target classifies them. The points transferred are the attacks' final
points, and for APGD its highest-loss point after all iterations (`craft`'s transfer), so with
source == target every attack but APGD gives the white-box result exactly, and APGD an accuracy
at least as high (white-box APGD counts any misclassified iterate).

Sanity flags (`sanity_flags`) state in accuracy terms what should hold and does not, beyond
noise: the orderings of attacks (white-box only, except "no attack above clean"), black-box not
below white-box, and three checks counted during the evaluation (zero or non-finite input
gradients, attacks with eps 0 changing predictions, verdicts that a second forward pass
contradicts).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from minidyn.apgd import apgd
from minidyn.attacks import cw_inf, fgsm, pgd
from minidyn.backend import Array, Backend, Model, get_backend
from minidyn.data import Dataset
from minidyn.errors import CheckpointError, ConfigError
from minidyn.data.batches import batch_indices, to_backend

ATTACKS = ("clean", "fgsm", "pgd10", "pgd20", "cw", "apgd-ce", "apgd-dlr")
PAPER_ATTACKS = ("clean", "fgsm", "pgd10", "pgd20", "cw")
DEFAULT_ATTACKS = PAPER_ATTACKS + ("apgd-ce",)
RANDOM_START = frozenset({"pgd10", "pgd20", "cw", "apgd-ce", "apgd-dlr"})
ITERATIVE = ("pgd10", "pgd20", "cw", "apgd-ce", "apgd-dlr")
LABELS = {"clean": "clean", "fgsm": "FGSM", "pgd10": "PGD-10", "pgd20": "PGD-20", "cw": "CW-inf",
          "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "worst-case": "worst case"}
WORST = "worst-case"
_EVAL_STREAM = 3  # seed lists [seed, 3, attack, restart, batch] never equal epoch_seed's [seed, epoch, stream]


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
    """An independent 32-bit seed for the random start of (attack, restart, batch)."""
    ss = np.random.SeedSequence([seed, _EVAL_STREAM, ATTACKS.index(name), restart, batch])
    return int(ss.generate_state(1)[0])


def craft(name: str, B: Backend, model: Model, x: Array, y: Array, *, eps: float, rng=None,
          apgd_steps: int = 100, transfer: bool = False) -> Array:
    """The adversarial batch of attack `name` against `model` (x itself for "clean").

    transfer: the points are for another model (black-box). APGD then runs every example to
    the end and returns its highest-loss point x_best: the first misclassified iterate, which
    is what counts against `model` itself, barely crosses the surrogate's boundary and
    transfers poorly.
    """
    return _craft(name, B, model, x, y, eps=eps, rng=rng, apgd_steps=apgd_steps, transfer=transfer)[0]


def _craft(name, B, model, x, y, *, eps, rng, apgd_steps, transfer):
    """(x_adv, fooled): fooled is the attack's own (B,) verdict that x_adv is misclassified,
    where the attack keeps one (APGD against its own model), else None."""
    if name == "clean":
        return x, None
    if name == "fgsm":
        return fgsm(model, x, y, eps=eps, backend=B).x_adv, None
    if name in ("pgd10", "pgd20"):
        return pgd(model, x, y, eps=eps, step_size=eps / 4, steps=int(name[3:]), random_start=True,
                   final_stats=False, rng=rng, backend=B).x_adv, None
    if name == "cw":
        return cw_inf(model, x, y, eps=eps, steps=30, rng=rng, backend=B).x_adv, None
    if name in ("apgd-ce", "apgd-dlr"):
        res = apgd(model, x, y, eps=eps, steps=apgd_steps, loss=name[5:], rng=rng,
                   stop_when_misclassified=not transfer, backend=B)
        return (res.x_best, None) if transfer else (res.x_adv, res.found)
    raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")


@dataclass
class EvalResult:
    """Per-example correctness (numpy bool (n,)) for each attack, and the settings used.

    checks: what the built-in checks counted (see evaluate_attacks), read by sanity_flags.
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

    def worst_case(self) -> np.ndarray:
        """(n,) bool: correct under every attack evaluated."""
        out = np.ones(self.n, dtype=bool)
        for name in self.attacks:
            out &= self.correct[name]
        return out

    def accuracy(self) -> dict[str, float]:
        """{attack: accuracy in percent, ..., "worst-case": percent}."""
        def pct(mask):  # 100 k / n, correctly rounded (97.8, not 97.80000000000001)
            return 100.0 * int(mask.sum()) / self.n if self.n else float("nan")

        acc = {name: pct(self.correct[name]) for name in self.attacks}
        acc[WORST] = pct(self.worst_case())
        return acc

    def to_dict(self) -> dict:
        """JSON-able summary (what `minidyn eval --save` writes)."""
        return {"accuracy": self.accuracy(), "attacks": list(self.attacks), "eps": self.eps,
                "n": self.n, "seed": self.seed, "restarts": self.restarts,
                "apgd_steps": self.apgd_steps, "source": self.source, "checks": self.checks,
                **self.meta}


ZERO_GRAD_SHARE = 0.01  # flag when more than 1% of the examples have an all-zero input gradient
EPS0_EXAMPLES = 50      # the eps-0 check attacks the first 50 examples


def evaluate_attacks(B: Backend, model: Model, data: Dataset, *, eps: float,
                     attacks=DEFAULT_ATTACKS, batch_size: int = 256, seed: int = 0,
                     restarts: int = 1, limit: int | None = None, apgd_steps: int = 100,
                     source: tuple[Backend, Model] | None = None, source_name: str | None = None,
                     on_batch: Callable[[int, int], None] | None = None) -> EvalResult:
    """Accuracy of `model` under each attack on the first `limit` examples of `data`.

    source: (backend, model) of a surrogate that crafts the attacks (black-box, see `craft`'s
    transfer); None: white-box. on_batch(done, total) is called after each batch (progress).

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
    """
    attacks = parse_attacks(attacks)
    _validate(data, eps=eps, attacks=attacks, restarts=restarts, batch_size=batch_size,
              limit=limit, apgd_steps=apgd_steps)
    target, crafter = (B, model), (source if source is not None else (B, model))
    transfer = source is not None
    n = len(data) if limit is None else min(limit, len(data))
    correct = {name: np.zeros(n, dtype=bool) for name in attacks}
    checks = {"grad": {"n": n, "zero": 0, "nonfinite": 0},
              "eps0": {"n": min(n, EPS0_EXAMPLES), "differs": dict.fromkeys(attacks, 0)},
              "recount": {"n": n, "differs": dict.fromkeys(attacks, 0)}}
    kw = dict(seed=seed, apgd_steps=apgd_steps, transfer=transfer)
    checks["eps0"]["differs"] = _eps0_check(attacks, target, crafter, data,
                                            np.arange(checks["eps0"]["n"]), **kw)
    for batch, idx in enumerate(batch_indices(np.arange(n), batch_size)):
        _gradient_check(*crafter, *to_backend(crafter[0], data, idx), checks["grad"])
        for name in attacks:
            correct[name][idx] = _attack_batch(name, target, crafter, data, idx, batch, restarts,
                                               checks["recount"]["differs"], eps=eps, **kw)
        if on_batch:
            on_batch(int(idx[-1]) + 1, n)
    return EvalResult(attacks, correct, eps, n, seed, restarts, apgd_steps, source_name, checks=checks)


def _validate(data: Dataset, *, eps, attacks, restarts, batch_size, limit, apgd_steps) -> None:
    if not 0 < eps <= 1:
        raise ConfigError(f"eps must be in (0, 1], got {eps}")
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


def _on(B_from: Backend, B_to: Backend, a: Array) -> Array:
    """Array a of backend B_from as an array of B_to (itself when they are one backend)."""
    return a if B_from is B_to else B_to.asarray(B_from.to_numpy(a))


def _verdicts(B: Backend, model: Model, x: Array, y: Array) -> np.ndarray:
    """(m,) numpy bool: model classifies each row of x correctly."""
    return B.to_numpy(B.argmax(B.logits(model, x)) == y)


def _attack_batch(name, target, crafter, data, idx, batch, restarts, recount, *, eps, seed,
                  apgd_steps, transfer) -> np.ndarray:
    """(len(idx),) bool: correct under attack `name` in every restart (restart r > 0 attacks only
    the examples still correct). Adds the examples whose verdict a recount contradicts to
    recount[name]."""
    (B, model), (src_B, src_model) = target, crafter
    ok = np.ones(len(idx), dtype=bool)
    for r in range(restarts if name in RANDOM_START else 1):
        rows = np.arange(len(idx)) if r == 0 else np.nonzero(ok)[0]
        if rows.size == 0:
            break
        x, y = to_backend(B, data, idx[rows])
        xs, ys = (x, y) if src_B is B else to_backend(src_B, data, idx[rows])
        rng = src_B.rng(attack_seed(seed, name, r, batch)) if name in RANDOM_START else None
        x_adv, fooled = _craft(name, src_B, src_model, xs, ys, eps=eps, rng=rng,
                               apgd_steps=apgd_steps, transfer=transfer)
        x_adv = _on(src_B, B, x_adv)
        verdict = _verdicts(B, model, x_adv, y)
        differs = verdict != _recount(B, model, x_adv, y)
        if fooled is not None:  # the attack recorded these as misclassified
            differs |= src_B.to_numpy(fooled) & verdict
        recount[name] += int(differs.sum())
        ok[rows] = verdict
    return ok


def _recount(B: Backend, model: Model, x: Array, y: Array) -> np.ndarray:
    """The verdicts of a second forward pass of x in another split: its second half first, then
    its first half (a model whose outputs depend on the batch or on chance disagrees)."""
    m = int(x.shape[0])
    half = m // 2
    out = np.empty(m, dtype=bool)
    for part in (np.arange(half, m), np.arange(half)):
        if part.size:
            rows = B.asarray(part)
            out[part] = _verdicts(B, model, B.take(x, rows), B.take(y, rows))
    return out


def _eps0_check(attacks, target, crafter, data, idx, *, seed, apgd_steps, transfer) -> dict:
    """{attack: examples of idx whose prediction under the attack with eps 0 differs from the
    clean prediction}. With eps 0 every attack must return x itself."""
    (B, model), (src_B, src_model) = target, crafter
    x, _ = to_backend(B, data, idx)
    xs, ys = to_backend(src_B, data, idx)
    clean = B.to_numpy(B.argmax(B.logits(model, x)))
    differs = {}
    for name in attacks:
        rng = src_B.rng(attack_seed(seed, name, 0, 0)) if name in RANDOM_START else None
        x_adv, _ = _craft(name, src_B, src_model, xs, ys, eps=0.0, rng=rng, apgd_steps=apgd_steps,
                          transfer=transfer)
        pred = B.to_numpy(B.argmax(B.logits(model, _on(src_B, B, x_adv))))
        differs[name] = int((pred != clean).sum())
    return differs


def _gradient_check(B: Backend, model: Model, x: Array, y: Array, out: dict) -> None:
    """Count the rows of x whose input gradient (cross-entropy) is all zero, or not finite."""
    _, g = B.loss_and_grad(model, x, y)
    g = B.to_numpy(g).reshape(int(x.shape[0]), -1)
    finite = np.isfinite(g).all(axis=1)
    out["nonfinite"] += int((~finite).sum())
    out["zero"] += int((finite & (g == 0).all(axis=1)).sum())


# --- sanity checks ---------------------------------------------------------------------------
def weaker(result: EvalResult, a: str, b: str, z: float = 2.0) -> tuple[bool, int, int]:
    """Is attack `a` weaker than `b` (accuracy under a above accuracy under b) beyond noise? A
    paired (McNemar) test on the examples where they disagree: k_ab survive a but not b, k_ba
    the reverse; flagged when k_ab - k_ba > z sqrt(k_ab + k_ba). Returns (flag, k_ab, k_ba)."""
    ca, cb = result.correct[a], result.correct[b]
    k_ab, k_ba = int((ca & ~cb).sum()), int((cb & ~ca).sum())
    return (k_ab > k_ba and k_ab - k_ba > z * math.sqrt(k_ab + k_ba)), k_ab, k_ba


def _orderings(result: EvalResult) -> list[tuple[str, str, str]]:
    """(a, b, why) for each "accuracy under a <= accuracy under b" that should hold. Against the
    model's own gradients every attack is at most clean, iterative attacks at most FGSM, PGD-20
    at most PGD-10 and APGD at most PGD; transferred from a surrogate only the first holds
    (the paper's Table 2 has black-box CW above FGSM)."""
    present = set(result.attacks)
    out = [(a, "clean", "an attack cannot make the model more accurate (eps 0 is clean): a sign "
                        "of gradient masking or of a broken attack") for a in ATTACKS[1:]]
    if result.source is None:
        out += [(a, "fgsm", "an iterative attack should be at least as strong as one step")
                for a in ITERATIVE]
        out.append(("pgd20", "pgd10", "more steps should not help the model"))
        ref = "pgd20" if "pgd20" in present else "pgd10"
        out += [(a, ref, "APGD should be at least as strong as PGD") for a in ("apgd-ce", "apgd-dlr")]
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
            flags.append(f"{LABELS[a]} accuracy ({acc[a]:.2f}%) is above {LABELS[b]} accuracy "
                         f"({acc[b]:.2f}%) beyond noise: {k_ab} examples are correct under "
                         f"{LABELS[a]} but not under {LABELS[b]}, {k_ba} the reverse; {why}")
    if white_box is not None and result.source is not None:
        flags += _transfer_flags(result, white_box)
    return flags + _check_flags(result.checks)


def _transfer_flags(result: EvalResult, white_box: dict) -> list[str]:
    """Black-box accuracy below white-box accuracy beyond noise (an unpaired two-sample test)."""
    acc, flags = result.accuracy(), []
    n_wb = int(white_box.get("n") or 0)
    for name in result.attacks:
        wb = (white_box.get("accuracy") or {}).get(name)
        if name == "clean" or wb is None or not n_wb:
            continue
        p1, p2 = wb / 100, acc[name] / 100
        se = 100 * math.sqrt(p1 * (1 - p1) / n_wb + p2 * (1 - p2) / result.n)
        if wb - acc[name] > 2 * se + 100 / result.n:
            flags.append(f"black-box {LABELS[name]} accuracy ({acc[name]:.2f}%) is below white-box "
                         f"{LABELS[name]} accuracy ({wb:.2f}%) beyond noise: the model's own "
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
            flags.append(f"{LABELS[name]} with eps 0 changes the prediction of {k} of the first "
                         f"{eps0['n']} examples (it must return them unchanged): the attack moves "
                         "the input or changes the model's state (mode, BatchNorm statistics)")
    recount = checks.get("recount") or {}
    for name, k in (recount.get("differs") or {}).items():
        if k:
            flags.append(f"{LABELS[name]}: the verdict on {k} of {recount['n']} examples differs "
                         "between the count and a second forward pass of the returned points: "
                         "the model is random or depends on the batch, so its accuracy is not "
                         "well defined")
    return flags


def checks_applied(result: EvalResult, white_box: bool = False) -> list[str]:
    """What sanity_flags verified for this result (for a "passed" line), in accuracy terms."""
    out = [f"{LABELS[a]} accuracy <= {LABELS[b]} accuracy" for a, b, _ in _orderings(result)
           if b != "clean"]
    if any(b == "clean" for _, b, _ in _orderings(result)):
        out.insert(0, "every attack's accuracy <= clean accuracy")
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
    return out


def eps_curve_flags(eps_values, correct_by_eps: list[np.ndarray], z: float = 2.0) -> list[str]:
    """Flags where accuracy rises from one eps to a larger one beyond noise (paired test)."""
    flags = []
    for (e1, c1), (e2, c2) in zip(zip(eps_values, correct_by_eps), zip(eps_values[1:], correct_by_eps[1:])):
        k_ab, k_ba = int((c2 & ~c1).sum()), int((c1 & ~c2).sum())
        if k_ab > k_ba and k_ab - k_ba > z * math.sqrt(k_ab + k_ba):
            flags.append(f"accuracy rises with eps: {100 * c2.mean():.2f}% at eps {e2:.4g} > "
                         f"{100 * c1.mean():.2f}% at eps {e1:.4g}, a sign of gradient masking")
    return flags


# --- checkpoints -------------------------------------------------------------------------------
def checkpoint_in(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the checkpoint of a run directory (checkpoint.pt or .npz)."""
    p = Path(path)
    if p.is_dir():
        found = [p / name for name in ("checkpoint.pt", "checkpoint.npz") if (p / name).is_file()]
        if not found:
            raise CheckpointError(f"{p} holds no checkpoint.pt or checkpoint.npz")
        if len(found) > 1:
            cfg = p / "config.json"
            backend = json.loads(cfg.read_text()).get("backend") if cfg.is_file() else None
            return found[0] if backend == "torch" else found[1]
        return found[0]
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    return p


def peek_meta(path: str | os.PathLike) -> dict:
    """The meta dict of a minidyn checkpoint (.pt or .npz) without building a model."""
    p = Path(path)
    if p.suffix not in (".pt", ".npz"):
        raise CheckpointError(f"{p}: a minidyn checkpoint ends in .pt (torch) or .npz (numpy)")
    return get_backend("torch" if p.suffix == ".pt" else "numpy").read_meta(p)


def load_checkpoint(path: str | os.PathLike, device: str = "auto") -> tuple[Backend, Model, dict]:
    """(backend, model with the checkpoint's weights, meta) for a checkpoint.pt or .npz.

    The backend follows the extension: .pt -> torch on `device`; .npz -> numpy (cupy when
    `device` is cuda or cuda:N).
    """
    p = checkpoint_in(path)
    meta = peek_meta(p)
    arch = {**meta, **(meta.get("arch") or {})}
    missing = [k for k in ("model", "input_shape", "num_classes") if k not in arch]
    if missing:
        raise CheckpointError(f"{p} does not record its architecture ({', '.join(missing)} missing)")
    if p.suffix == ".pt":
        B = get_backend("torch", device=device)
    elif device in ("auto", "cpu", None):
        B = get_backend("numpy")
    elif str(device).startswith("cuda"):
        index = str(device).partition(":")[2]
        B = get_backend("cupy", device=int(index or 0))
    else:
        raise ConfigError(f"unknown device {device!r} for a numpy checkpoint; use cpu or cuda[:N]")
    try:
        model = B.make_model(arch["model"], tuple(arch["input_shape"]), int(arch["num_classes"]), 0)
    except ConfigError as exc:
        raise CheckpointError(f"{p} records a model this backend cannot build ({exc})") from None
    meta = B.load_checkpoint(str(p), model)
    return B, model, {**meta, "path": str(p)}


def run_config(checkpoint: str | os.PathLike) -> dict:
    """The config.json of the run a checkpoint belongs to ({} when there is none)."""
    cfg = Path(checkpoint).parent / "config.json"
    try:
        return json.loads(cfg.read_text()) if cfg.is_file() else {}
    except (OSError, ValueError):
        return {}


def format_table(result: EvalResult, header: str | None = None) -> str:
    """The readable table `minidyn eval` prints."""
    acc = result.accuracy()
    lines = [header] if header else []
    lines.append(f"{'attack':<12}{'accuracy':>10}{'correct':>14}")
    for name in [*result.attacks, WORST]:
        k = int(result.worst_case().sum()) if name == WORST else int(result.correct[name].sum())
        lines.append(f"{LABELS[name]:<12}{acc[name]:>9.2f}%{f'{k}/{result.n}':>14}")
    return "\n".join(lines)
