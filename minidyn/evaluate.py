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
same seeds, and the target classifies them. With source == target this is the white-box
evaluation, exactly.
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
from minidyn.train import batch_indices, to_backend

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
          apgd_steps: int = 100) -> Array:
    """The adversarial batch of attack `name` against `model` (x itself for "clean")."""
    if name == "clean":
        return x
    if name == "fgsm":
        return fgsm(model, x, y, eps=eps, backend=B).x_adv
    if name in ("pgd10", "pgd20"):
        return pgd(model, x, y, eps=eps, step_size=eps / 4, steps=int(name[3:]), random_start=True,
                   final_stats=False, rng=rng, backend=B).x_adv
    if name == "cw":
        return cw_inf(model, x, y, eps=eps, steps=30, rng=rng, backend=B).x_adv
    if name in ("apgd-ce", "apgd-dlr"):
        return apgd(model, x, y, eps=eps, steps=apgd_steps, loss=name[5:], rng=rng,
                    stop_when_misclassified=True, backend=B).x_adv
    raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")


@dataclass
class EvalResult:
    """Per-example correctness (numpy bool (n,)) for each attack, and the settings used."""

    attacks: list[str]
    correct: dict[str, np.ndarray]
    eps: float
    n: int
    seed: int = 0
    restarts: int = 1
    apgd_steps: int = 100
    source: str | None = None  # the surrogate's name for black-box results
    meta: dict = field(default_factory=dict)

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
                "apgd_steps": self.apgd_steps, "source": self.source, **self.meta}


def evaluate_attacks(B: Backend, model: Model, data: Dataset, *, eps: float,
                     attacks=DEFAULT_ATTACKS, batch_size: int = 256, seed: int = 0,
                     restarts: int = 1, limit: int | None = None, apgd_steps: int = 100,
                     source: tuple[Backend, Model] | None = None, source_name: str | None = None,
                     on_batch: Callable[[int, int], None] | None = None) -> EvalResult:
    """Accuracy of `model` under each attack on the first `limit` examples of `data`.

    source: (backend, model) of a surrogate that crafts the attacks (black-box); None: white-box.
    on_batch(done, total) is called after each batch (progress).
    """
    attacks = parse_attacks(attacks)
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
    src_B, src_model = source if source is not None else (B, model)
    n = len(data) if limit is None else min(limit, len(data))
    correct = {name: np.zeros(n, dtype=bool) for name in attacks}
    for batch, idx in enumerate(batch_indices(np.arange(n), batch_size)):
        x, y = to_backend(B, data, idx)
        xs, ys = (x, y) if src_B is B else to_backend(src_B, data, idx)
        for name in attacks:
            ok = np.ones(len(idx), dtype=bool)
            for r in range(restarts if name in RANDOM_START else 1):
                rows = np.arange(len(idx)) if r == 0 else np.nonzero(ok)[0]
                if rows.size == 0:
                    break
                if r == 0:
                    xr, yr, xsr, ysr = x, y, xs, ys
                else:
                    xr, yr = B.take(x, B.asarray(rows)), B.take(y, B.asarray(rows))
                    xsr, ysr = (xr, yr) if src_B is B else (src_B.take(xs, src_B.asarray(rows)),
                                                            src_B.take(ys, src_B.asarray(rows)))
                rng = src_B.rng(attack_seed(seed, name, r, batch)) if name in RANDOM_START else None
                x_adv = craft(name, src_B, src_model, xsr, ysr, eps=eps, rng=rng, apgd_steps=apgd_steps)
                if src_B is not B:
                    x_adv = B.asarray(src_B.to_numpy(x_adv))
                ok[rows] = B.to_numpy(B.argmax(B.logits(model, x_adv)) == yr)
            correct[name][idx] = ok
        if on_batch:
            on_batch(int(idx[-1]) + 1, n)
    return EvalResult(attacks, correct, eps, n, seed, restarts, apgd_steps, source_name)


# --- sanity checks ---------------------------------------------------------------------------
def weaker(result: EvalResult, a: str, b: str, z: float = 2.0) -> tuple[bool, int, int]:
    """Is attack `a` weaker than `b` beyond noise? A paired (McNemar) test on the examples where
    they disagree: k_ab survive a but not b, k_ba the reverse; flagged when
    k_ab - k_ba > z sqrt(k_ab + k_ba). Returns (flag, k_ab, k_ba)."""
    ca, cb = result.correct[a], result.correct[b]
    k_ab, k_ba = int((ca & ~cb).sum()), int((cb & ~ca).sum())
    return (k_ab > k_ba and k_ab - k_ba > z * math.sqrt(k_ab + k_ba)), k_ab, k_ba


def sanity_flags(result: EvalResult, white_box: dict | None = None) -> list[str]:
    """Signs of gradient masking (or of a broken attack) in `result`, one sentence each.

    white_box: for a black-box result, the white-box {"accuracy": {...}, "n": n} of the same
    target (e.g. its eval.json): a transfer attack stronger than the white-box one is flagged.
    """
    acc, present = result.accuracy(), set(result.attacks)
    flags = []

    def check(a, b, what):
        if a in present and b in present:
            flag, k_ab, k_ba = weaker(result, a, b)
            if flag:
                flags.append(f"{LABELS[a]} ({acc[a]:.2f}%) is weaker than {LABELS[b]} ({acc[b]:.2f}%): "
                             f"{k_ab} examples survive {LABELS[a]} but not {LABELS[b]}, {k_ba} the "
                             f"reverse; {what}")

    for a in (a for a in ATTACKS if a != "clean"):
        check(a, "clean", "accuracy rises with eps (eps 0 is clean), a sign of gradient masking "
                          "or of a broken attack")
    for a in ITERATIVE:
        check(a, "fgsm", "an iterative attack should be at least as strong as one step")
    check("pgd20", "pgd10", "more steps should not help the model")
    for a in ("apgd-ce", "apgd-dlr"):
        ref = "pgd20" if "pgd20" in present else "pgd10"
        check(a, ref, "APGD should be at least as strong as PGD")
    if white_box is not None and result.source is not None:
        n_wb = int(white_box.get("n") or 0)
        for name in result.attacks:
            wb = (white_box.get("accuracy") or {}).get(name)
            if name == "clean" or wb is None or not n_wb:
                continue
            p1, p2 = wb / 100, acc[name] / 100
            se = 100 * math.sqrt(p1 * (1 - p1) / n_wb + p2 * (1 - p2) / result.n)
            if wb - acc[name] > 2 * se + 100 / result.n:
                flags.append(f"black-box {LABELS[name]} ({acc[name]:.2f}%) is stronger than white-box "
                             f"({wb:.2f}%): the model's own gradients mislead attacks, a classic sign "
                             "of gradient masking")
    return flags


def checks_applied(attacks, white_box: bool = False) -> list[str]:
    """What sanity_flags verified for this set of attacks (for a "passed" line)."""
    present = set(attacks)
    out = []
    if "clean" in present and present - {"clean"}:
        out.append("no attack above clean")
    if "fgsm" in present and present & set(ITERATIVE):
        out.append("no iterative attack below FGSM")
    if {"pgd10", "pgd20"} <= present:
        out.append("PGD-20 not below PGD-10")
    if present & {"apgd-ce", "apgd-dlr"} and present & {"pgd10", "pgd20"}:
        out.append("APGD not below PGD")
    if white_box:
        out.append("black-box not above white-box")
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
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as f:
                meta = json.loads(f["meta"].item())
        except Exception as exc:  # not a zip, no meta, not JSON, ...
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{p} is not a valid minidyn checkpoint: {reason}") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{p} is not a valid minidyn checkpoint: its meta is not a JSON object")
        return meta
    if p.suffix == ".pt":
        from minidyn.backends.torch_backend import _read_checkpoint

        return dict(_read_checkpoint(p, "cpu")["meta"])
    raise CheckpointError(f"{p}: a minidyn checkpoint ends in .pt (torch) or .npz (numpy)")


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
