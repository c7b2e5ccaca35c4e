"""The paper's FOSC analyses as numbers: dicts of numpy arrays (the computations only).

    fosc_bins(...)           Fig 1a: PGD-10 test examples in FOSC bins, accuracy and loss per bin
    trajectories(...)        Fig 1b: FOSC and loss along the PGD steps of random test examples
    fosc_distributions(...)  Figs 2, 3, 5: Gaussian KDE of a run's per-epoch training FOSC files,
                             and the share of examples with FOSC in [0, 0.1] per epoch
    eps_curve(...)           Fig 4a: PGD-10 accuracy over a grid of test eps

analysis_files.analyze_run(run_dir) runs all of them for one run and writes their files in
RUN_DIR/analysis (`minidyn analyze`); kde.py holds the Gaussian KDE of Figs 2, 3, 5. Pictures are
drawn by `minidyn.evaluation.plots` (matplotlib, optional); the numbers never need it.
FOSC here is the paper's definition (Eq. 4, over the eps-ball, `minidyn.fosc` with bounds=None),
the same quantity the training loop records.

Epochs are counted from 1 in everything this module returns and analysis_files writes (the
`epochs` argument,
the keys of the per-epoch dicts, the `epoch` column of fosc_share.csv, analysis.json): epoch 1
is the first epoch, as in the training log ("epoch 1/15"). The run files keep the 0-based index
t of the schedules (metrics.jsonl's "epoch", fosc/epoch_NNN.npy): epoch e is the file
fosc/epoch_{e-1:03d}.npy. `fosc_files` is the one place that translates.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from minidyn.evaluation.attack_table import ATTACKS, attack_seed
from minidyn.attacks import pgd
from minidyn.backend import Backend, Model
from minidyn.data import Dataset
from minidyn.data.batches import batch_indices, to_backend
from minidyn.errors import ConfigError
from minidyn.evaluation.evaluate import eps_curve_flags, evaluate_attacks
from minidyn.fosc import fosc
from minidyn.files.npyfile import read_fosc
from minidyn.evaluation.kde import gaussian_kde, scott_bandwidth

FIG_ATTACK = ATTACKS["pgd10"]  # the attack of Figs 1a and 4a: PGD-10, the paper's evaluation


# --- Fig 1a ------------------------------------------------------------------------------------
def pearson(a, b) -> float:
    """Pearson correlation of two 1-D arrays; NaN with fewer than 3 points or a constant one."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def describe_corr(fig1a: dict, what: str) -> str:
    """fig1a["corr_<what>"] as text, or why it is undefined (what: "accuracy" or "loss")."""
    r = fig1a[f"corr_{what}"]
    if np.isfinite(r):
        return f"{r:.3f}"
    full = np.asarray(fig1a["counts"]) > 0
    values = np.asarray(fig1a[what], float)[full]
    if full.sum() < 3:
        return f"undefined ({int(full.sum())} non-empty bins)"
    unit = "%" if what == "accuracy" else ""
    return f"undefined ({what} is {values[0]:.4g}{unit} in every non-empty bin)"


def bin_by_fosc(fosc, loss, correct, bins: int = 20, fosc_range=(0.0, 0.1)) -> dict:
    """Group examples into `bins` equal FOSC bins over `fosc_range` (both ends included).

    Returns edges (bins+1,), centers, counts, accuracy (%) and mean loss and FOSC per bin (NaN
    where empty), the examples below / above the range, and the Pearson correlation between
    the bin centres and accuracy / loss over the non-empty bins.
    """
    fosc, loss = np.asarray(fosc, float), np.asarray(loss, float)
    correct = np.asarray(correct, bool)
    lo, hi = map(float, fosc_range)
    if bins < 1:
        raise ConfigError(f"--bins must be >= 1, got {bins}")
    if not hi > lo:
        raise ConfigError(f"the FOSC range needs lo < hi, got [{lo}, {hi}]")
    edges = np.linspace(lo, hi, bins + 1)
    inside = (fosc >= lo) & (fosc <= hi)
    which = np.clip(np.searchsorted(edges, fosc[inside], side="right") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = 100.0 * np.bincount(which, weights=correct[inside], minlength=bins) / counts
        mean_loss = np.bincount(which, weights=loss[inside], minlength=bins) / counts
        mean_fosc = np.bincount(which, weights=fosc[inside], minlength=bins) / counts
    centers = (edges[:-1] + edges[1:]) / 2
    full = counts > 0
    return {
        "edges": edges, "centers": centers, "counts": counts, "accuracy": acc,
        "loss": mean_loss, "fosc": mean_fosc, "n": int(fosc.size),
        "n_below": int((fosc < lo).sum()), "n_above": int((fosc > hi).sum()),
        "n_nan": int(np.isnan(fosc).sum()),
        "corr_accuracy": pearson(centers[full], acc[full]),
        "corr_loss": pearson(centers[full], mean_loss[full]),
    }


FOSC_BOUNDS = {"ball": None, "clipped": (0.0, 1.0)}


def _fosc_at(backend: Backend, model: Model, x_adv, x0, y, eps: float, bounds):
    """(FOSC (B,), loss (B,), the input gradient (B, ...)) at x_adv; bounds None: the paper's
    Eq. 4 over the eps-ball; (0, 1): over the ball intersected with the pixel box, the set PGD
    actually searches."""
    losses, grad = backend.loss_and_grad(model, x_adv, y)
    return fosc(x_adv, x0, grad, eps, bounds=bounds), losses, grad


def pgd_examples(backend: Backend, model: Model, data: Dataset, *, eps: float, limit: int | None = 1000,
                 steps: int = 10, step_size: float | None = None, batch_size: int = 256,
                 seed: int = 0, fosc_bounds=None,
                 on_batch: Callable[[int, int], None] | None = None) -> dict:
    """PGD-`steps` (step eps/4, random start) on the first `limit` test examples: numpy arrays
    (n,) fosc, loss (at the adversarial example), correct (classified correctly there) and
    grad_l1, the L1 norm of the loss's input gradient there (eps * grad_l1 bounds the paper's
    FOSC: FOSC / (eps grad_l1) lies in [0, 2] whatever the gradient's scale).
    fosc_bounds: None (the paper's FOSC) or (0, 1) (FOSC over the ball and the pixel box)."""
    n = len(data) if limit is None else min(limit, len(data))
    out = {"fosc": np.empty(n), "loss": np.empty(n), "correct": np.empty(n, bool), "grad_l1": np.empty(n)}
    for batch, idx in enumerate(batch_indices(np.arange(n), batch_size)):
        x, y = to_backend(backend, data, idx)
        x_adv = pgd(model, x, y, eps=eps, step_size=step_size or eps / 4, steps=steps,
                    rng=backend.rng(attack_seed(seed, FIG_ATTACK.name, 0, batch)), final_stats=False,
                    backend=backend).x_adv
        fosc_values, losses, grad = _fosc_at(backend, model, x_adv, x, y, eps, fosc_bounds)
        out["fosc"][idx] = backend.to_numpy(fosc_values)
        out["loss"][idx] = backend.to_numpy(losses)
        out["grad_l1"][idx] = backend.to_numpy(backend.sum_per_example(backend.abs(grad)))
        out["correct"][idx] = backend.to_numpy(backend.argmax(backend.logits(model, x_adv)) == y)
        if on_batch:
            on_batch(int(idx[-1]) + 1, n)
    return out


def auto_range(fosc, q: float = 0.95) -> tuple[float, float]:
    """[0, the q-quantile of the finite FOSC values rounded up to 2 significant digits]."""
    f = np.asarray(fosc, float)
    f = f[np.isfinite(f)]
    top = float(np.quantile(f, q)) if f.size else 0.0
    if top <= 0:
        return (0.0, 0.1)
    scale = 10 ** (math.floor(math.log10(top)) - 1)
    return (0.0, math.ceil(top / scale) * scale)


PAPER_RANGE = (0.0, 0.1)  # the paper's Fig 1a range (CIFAR-10, eps 8/255)


def n_in_range(fosc, fosc_range) -> int:
    """How many FOSC values lie in [lo, hi] (NaN never does)."""
    f = np.asarray(fosc, float)
    return int(((f >= fosc_range[0]) & (f <= fosc_range[1])).sum())


def choose_range(fosc, fosc_range=None) -> tuple[tuple[float, float], str]:
    """The FOSC range of Fig 1a's bins and how it was chosen, from the test examples' FOSC (n,).

    fosc_range (lo, hi): used as given ("given"); "auto": auto_range ("auto"); None (the
    default): the paper's [0, 0.1] ("paper") unless fewer than half of the n examples lie in it,
    then auto_range ("fallback"): FOSC scales with eps and the input size, and on MNIST the
    paper's range can hold no example at all, which would leave Fig 1a empty.
    """
    if fosc_range is None:
        if n_in_range(fosc, PAPER_RANGE) >= np.asarray(fosc).size / 2:
            return PAPER_RANGE, "paper"
        return auto_range(fosc), "fallback"
    if isinstance(fosc_range, str):
        if fosc_range != "auto":
            raise ConfigError(f"fosc_range must be (lo, hi), 'auto' or None, got {fosc_range!r}")
        return auto_range(fosc), "auto"
    return tuple(map(float, fosc_range)), "given"


def fosc_bins(backend: Backend, model: Model, data: Dataset, *, eps: float, limit: int | None = 1000,
              bins: int = 20, fosc_range=None, steps: int = 10, batch_size: int = 256,
              seed: int = 0, fosc_bounds=None, on_batch=None) -> dict:
    """Fig 1a: PGD-10 test examples binned by FOSC; bin_by_fosc's dict plus "examples",
    "fosc_range", "range_source" and "n_in_paper_range" (see choose_range for fosc_range)."""
    examples = pgd_examples(backend, model, data, eps=eps, limit=limit, steps=steps,
                            batch_size=batch_size, seed=seed, fosc_bounds=fosc_bounds,
                            on_batch=on_batch)
    chosen, source = choose_range(examples["fosc"], fosc_range)
    return {**bin_by_fosc(examples["fosc"], examples["loss"], examples["correct"], bins, chosen),
            "examples": examples, "fosc_range": chosen, "range_source": source,
            "n_in_paper_range": n_in_range(examples["fosc"], PAPER_RANGE)}


# --- Fig 1b ------------------------------------------------------------------------------------
def trajectories(backend: Backend, model: Model, data: Dataset, *, eps: float, n: int = 20,
                 steps: int = 20, step_size: float | None = None, seed: int = 0,
                 fosc_bounds=None) -> dict:
    """Fig 1b: FOSC and loss at x^0 .. x^steps of PGD (step eps/4, random start) for `n`
    random test examples. Returns indices (n,), fosc and loss (steps+1, n).

    The paper's FOSC comes from pgd(trace=True). The clipped variant (fosc_bounds=(0, 1)) needs
    the gradient at every x^k, which the trace does not keep: PGD is deterministic given its
    seed, so x^k is the result of the same PGD run for k steps (k = 1 .. steps; x^0 is the
    run for one step of size 1e-30), at about (steps + 1)(steps + 2) / 2 gradient evaluations
    per example.
    """
    if n < 1 or steps < 1:
        raise ConfigError("trajectories need n >= 1 examples and steps >= 1")
    n = min(n, len(data))
    idx = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
    x, y = to_backend(backend, data, idx)
    # PGD-20's seed for restart 1 of batch 0: none of the seeds of Figs 1a and 4a (PGD-10, restart 0)
    stream = attack_seed(seed, "pgd20", 1, 0)
    alpha = step_size or eps / 4
    if fosc_bounds is None:
        trace = pgd(model, x, y, eps=eps, step_size=alpha, steps=steps, trace=True,
                    rng=backend.rng(stream), backend=backend).trace
        return {"indices": idx, "fosc": trace.fosc, "loss": trace.loss, "steps": steps}
    fosc_by_step, loss_by_step = np.empty((steps + 1, n)), np.empty((steps + 1, n))
    for k in range(steps + 1):
        # k = 0: one step of a vanishing size from the random start, i.e. the start itself
        x_k = pgd(model, x, y, eps=eps, step_size=alpha if k else 1e-30, steps=max(k, 1),
                  final_stats=False, rng=backend.rng(stream), backend=backend).x_adv
        fosc_values, losses, _ = _fosc_at(backend, model, x_k, x, y, eps, fosc_bounds)
        fosc_by_step[k], loss_by_step[k] = backend.to_numpy(fosc_values), backend.to_numpy(losses)
    return {"indices": idx, "fosc": fosc_by_step, "loss": loss_by_step, "steps": steps}


# --- Figs 2, 3, 5 ----------------------------------------------------------------------------
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.npy$")


def fosc_files(run_dir: str | os.PathLike) -> dict[int, Path]:
    """{epoch: path} of RUN_DIR/fosc/epoch_NNN.npy, sorted, with epochs counted from 1: the file
    names hold the 0-based index t of the schedules, so epoch_000.npy is epoch 1."""
    folder = Path(run_dir) / "fosc"
    if not folder.is_dir():
        return {}
    found = {int(m.group(1)) + 1: folder / name for name in os.listdir(folder)
             if (m := _EPOCH_FILE.match(name))}
    return dict(sorted(found.items()))


def default_epochs(available: list[int]) -> list[int]:
    """First, middle and last of the available epochs (fewer when fewer exist)."""
    if not available:
        return []
    return sorted({available[0], available[len(available) // 2], available[-1]})


def fosc_share(samples, share_range=(0.0, 0.1)) -> float:
    """Fraction of the finite samples with FOSC in [lo, hi] (the paper's "FOSC density")."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    return float(((s >= share_range[0]) & (s <= share_range[1])).mean()) if s.size else float("nan")


def check_epochs(run_dir: str | os.PathLike, epochs: list[int] | None) -> list[int]:
    """The epochs (counted from 1) whose FOSC files fosc_distributions reads: `epochs`, or the
    first, middle and last available; ConfigError for an epoch < 1 or one without a file."""
    files = fosc_files(run_dir)
    if epochs is None:
        return default_epochs(list(files))
    if any(e < 1 for e in epochs):
        raise ConfigError(f"epochs are counted from 1 (epoch 1 is the first), got {min(epochs)}")
    missing = [e for e in epochs if e not in files]
    if missing:
        raise ConfigError(f"{run_dir}: no FOSC file for epoch {missing[0]} "
                          f"(fosc/epoch_{missing[0] - 1:03d}.npy); epochs with FOSC files: "
                          + (", ".join(map(str, files)) or "none"))
    return list(epochs)


def fosc_distributions(run_dir: str | os.PathLike, epochs: list[int] | None = None,
                       grid_points: int = 1024, share_range=PAPER_RANGE) -> dict:
    """KDE of the training FOSC at `epochs` (counted from 1; default: first, middle, last
    available) on one common grid, and the share in `share_range` at every available epoch.

    Returns epochs (chosen), grid, density {epoch: array}, bandwidth {epoch}, n {epoch}
    (finite samples), share {epoch: fraction} over all available epochs, share_range; every
    epoch counted from 1. Epochs whose file holds no finite FOSC (a run with --no-record-fosc,
    or unsecured) are left out of `density`.
    """
    files = fosc_files(run_dir)
    available = list(files)
    chosen = check_epochs(run_dir, epochs)
    samples = {e: read_fosc(files[e]).astype(float) for e in chosen}
    samples = {e: v[np.isfinite(v)] for e, v in samples.items()}
    samples = {e: v for e, v in samples.items() if v.size}
    share = {e: fosc_share(read_fosc(files[e]), share_range) for e in available}
    out = {"epochs": list(samples), "share": share, "share_range": tuple(share_range),
           "density": {}, "bandwidth": {}, "n": {}, "grid": np.zeros(0)}
    if not samples:
        return out
    bandwidths = {e: scott_bandwidth(v) for e, v in samples.items()}
    lo = min(v.min() - 4 * bandwidths[e] for e, v in samples.items())
    hi = max(v.max() + 4 * bandwidths[e] for e, v in samples.items())
    grid = np.linspace(lo, hi, grid_points)
    out.update(grid=grid, bandwidth=bandwidths, n={e: int(v.size) for e, v in samples.items()},
               density={e: gaussian_kde(v, grid, bandwidths[e]) for e, v in samples.items()},
               quantiles={e: np.quantile(v, [0.01, 0.5, 0.99]).tolist() for e, v in samples.items()})
    return out


# --- Fig 4a ------------------------------------------------------------------------------------
def default_eps_grid(eps: float, points: int = 5) -> np.ndarray:
    """`points` values from eps/4 to eps (the paper: 2/255 .. 8/255 for eps 8/255)."""
    return np.linspace(eps / 4, eps, points)


def eps_curve(backend: Backend, model: Model, data: Dataset, *, eps_grid, limit: int | None = 1000,
              batch_size: int = 256, seed: int = 0, on_eps=None) -> dict:
    """Fig 4a: clean accuracy (eps 0) and PGD-10 accuracy at each test eps of `eps_grid`, on
    the first `limit` test examples; with sanity flags where accuracy rises with eps."""
    grid = [float(e) for e in eps_grid]
    clean = evaluate_attacks(backend, model, data, eps=grid[-1], attacks=["clean"], limit=limit,
                             batch_size=batch_size, seed=seed)
    correct = [clean.correct["clean"]]
    for e in grid:
        result = evaluate_attacks(backend, model, data, eps=e, attacks=[FIG_ATTACK.name],
                                  limit=limit, batch_size=batch_size, seed=seed)
        correct.append(result.correct[FIG_ATTACK.name])
        if on_eps:
            on_eps(e, 100.0 * float(correct[-1].mean()))
    eps_all = [0.0] + grid
    return {"eps": np.array(eps_all), "accuracy": np.array([100.0 * c.mean() for c in correct]),
            "n": int(clean.n), "flags": eps_curve_flags(eps_all, correct)}
