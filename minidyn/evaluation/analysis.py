"""The paper's FOSC analyses as numbers: dicts of numpy arrays, written as CSV and JSON.

    fosc_bins(...)           Fig 1a: PGD-10 test examples in FOSC bins, accuracy and loss per bin
    trajectories(...)        Fig 1b: FOSC and loss along the PGD steps of random test examples
    fosc_distributions(...)  Figs 2, 3, 5: Gaussian KDE of a run's per-epoch training FOSC files,
                             and the share of examples with FOSC in [0, 0.1] per epoch
    eps_curve(...)           Fig 4a: PGD-10 accuracy over a grid of test eps
    analyze_run(run_dir)     all of them for one run, files in RUN_DIR/analysis (`minidyn analyze`)

Pictures are drawn by `minidyn.evaluation.plots` (matplotlib, optional); the numbers never need it.
FOSC here is the paper's definition (Eq. 4, over the eps-ball, `minidyn.fosc` with bounds=None),
the same quantity the training loop records.

Epochs are counted from 1 in everything this module returns or writes (the `epochs` argument,
the keys of the per-epoch dicts, the `epoch` column of fosc_share.csv, analysis.json): epoch 1
is the first epoch, as in the training log ("epoch 1/15"). The run files keep the 0-based index
t of the schedules (metrics.jsonl's "epoch", fosc/epoch_NNN.npy): epoch e is the file
fosc/epoch_{e-1:03d}.npy. `fosc_files` is the one place that translates.
"""
from __future__ import annotations

import csv
import json
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
from minidyn.errors import CheckpointError, ConfigError
from minidyn.evaluation.evaluate import eps_curve_flags, evaluate_attacks
from minidyn.files.fileio import atomic_write
from minidyn.fosc import fosc
from minidyn.files.npyfile import read_fosc

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
    """(FOSC (B,), loss (B,)) at x_adv; bounds None: the paper's Eq. 4 over the eps-ball; (0, 1):
    over the ball intersected with the pixel box, the set PGD actually searches."""
    losses, grad = backend.loss_and_grad(model, x_adv, y)
    return fosc(x_adv, x0, grad, eps, bounds=bounds), losses


def pgd_examples(backend: Backend, model: Model, data: Dataset, *, eps: float, limit: int | None = 1000,
                 steps: int = 10, step_size: float | None = None, batch_size: int = 256,
                 seed: int = 0, fosc_bounds=None,
                 on_batch: Callable[[int, int], None] | None = None) -> dict:
    """PGD-`steps` (step eps/4, random start) on the first `limit` test examples: numpy arrays
    fosc, loss (at the adversarial example) and correct (classified correctly there).
    fosc_bounds: None (the paper's FOSC) or (0, 1) (FOSC over the ball and the pixel box)."""
    n = len(data) if limit is None else min(limit, len(data))
    out = {"fosc": np.empty(n), "loss": np.empty(n), "correct": np.empty(n, bool)}
    for batch, idx in enumerate(batch_indices(np.arange(n), batch_size)):
        x, y = to_backend(backend, data, idx)
        x_adv = pgd(model, x, y, eps=eps, step_size=step_size or eps / 4, steps=steps,
                    rng=backend.rng(attack_seed(seed, FIG_ATTACK.name, 0, batch)), final_stats=False,
                    backend=backend).x_adv
        fosc_values, losses = _fosc_at(backend, model, x_adv, x, y, eps, fosc_bounds)
        out["fosc"][idx] = backend.to_numpy(fosc_values)
        out["loss"][idx] = backend.to_numpy(losses)
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
        fosc_values, losses = _fosc_at(backend, model, x_k, x, y, eps, fosc_bounds)
        fosc_by_step[k], loss_by_step[k] = backend.to_numpy(fosc_values), backend.to_numpy(losses)
    return {"indices": idx, "fosc": fosc_by_step, "loss": loss_by_step, "steps": steps}


# --- Figs 2, 3, 5 ----------------------------------------------------------------------------
def scott_bandwidth(samples) -> float:
    """Scott's rule for a 1-D Gaussian KDE: std (ddof 1) * n^(-1/5), as scipy's gaussian_kde."""
    s = np.asarray(samples, float)
    if s.size < 2:
        return 1e-6
    h = float(s.std(ddof=1)) * s.size ** (-1 / 5)
    return h if h > 0 else 1e-6


def gaussian_kde(samples, grid, bandwidth: float | None = None, chunk: int = 64) -> np.ndarray:
    """Gaussian kernel density of 1-D `samples` at the points `grid` (numpy only, no scipy).

    density(g) = mean_i N(g; s_i, h^2), h by Scott's rule unless given. Computed over chunks of
    the grid, so memory is len(samples) * chunk.
    """
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    grid = np.asarray(grid, float)
    if s.size == 0:
        return np.full(grid.shape, np.nan)
    h = bandwidth or scott_bandwidth(s)
    out = np.empty(grid.size)
    norm = 1.0 / (s.size * h * math.sqrt(2 * math.pi))
    flat = grid.ravel()
    for i in range(0, flat.size, chunk):
        u = (flat[i:i + chunk, None] - s[None, :]) / h
        out[i:i + chunk] = np.exp(-0.5 * u * u).sum(axis=1) * norm
    return out.reshape(grid.shape)


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


# --- writing the numbers -------------------------------------------------------------------------
def write_csv(path: str | os.PathLike, header: list[str], rows) -> None:
    def write(f):
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow([_fmt(v) for v in row])
    atomic_write(path, write)


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else repr(float(v))
    if isinstance(v, (np.integer, np.bool_)):
        return int(v)
    return v


def jsonable(obj):
    """numpy arrays and scalars -> lists and numbers; NaN -> None; dict keys -> str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj


def write_bins(out: Path, fig1a: dict) -> None:
    write_csv(out / "fig1a_fosc_bins.csv",
              ["bin_lo", "bin_hi", "count", "accuracy_pct", "mean_loss", "mean_fosc"],
              zip(fig1a["edges"][:-1], fig1a["edges"][1:], fig1a["counts"], fig1a["accuracy"],
                  fig1a["loss"], fig1a["fosc"]))
    examples = fig1a["examples"]
    write_csv(out / "fig1a_examples.csv", ["example", "fosc", "loss", "correct"],
              zip(range(len(examples["fosc"])), examples["fosc"], examples["loss"], examples["correct"]))


def write_trajectories(out: Path, fig1b: dict) -> None:
    rows = ((int(example), step, fig1b["fosc"][step, j], fig1b["loss"][step, j])
            for j, example in enumerate(fig1b["indices"]) for step in range(fig1b["fosc"].shape[0]))
    write_csv(out / "fig1b_trajectories.csv", ["example", "step", "fosc", "loss"], rows)


def write_distributions(out: Path, distributions: dict) -> None:
    write_csv(out / "fosc_share.csv", ["epoch", "share_in_range"], distributions["share"].items())
    if distributions["density"]:
        epochs = list(distributions["density"])
        write_csv(out / "fosc_kde.csv", ["fosc"] + [f"density_epoch_{e}" for e in epochs],
                  zip(distributions["grid"], *(distributions["density"][e] for e in epochs)))


def write_eps_curve(out: Path, fig4a: dict) -> None:
    write_csv(out / "fig4a_eps_curve.csv", ["eps", "accuracy_pct"], zip(fig4a["eps"], fig4a["accuracy"]))


def write_all(out: Path, fig1a: dict, fig1b: dict, distributions: dict, fig4a: dict) -> list[str]:
    """The CSV files of every figure into `out`; returns their names."""
    write_bins(out, fig1a)
    write_trajectories(out, fig1b)
    write_distributions(out, distributions)
    write_eps_curve(out, fig4a)
    return (["fig1a_fosc_bins.csv", "fig1a_examples.csv", "fig1b_trajectories.csv", "fosc_share.csv"]
            + (["fosc_kde.csv"] if distributions["density"] else []) + ["fig4a_eps_curve.csv"])


def _summary(head: dict, fig1a: dict, fig1b: dict, distributions: dict, fig4a: dict) -> dict:
    """analysis.json: `head` (run, checkpoint, method, model, ...) and the numbers of every figure
    (epochs counted from 1)."""
    examples = fig1a["examples"]
    return head | {
        "fig1a": {k: fig1a[k] for k in ("edges", "counts", "accuracy", "loss", "fosc", "n", "n_below",
                                        "n_above", "n_nan", "corr_accuracy", "corr_loss",
                                        "range_source", "n_in_paper_range")}
                 | {"fosc_range": list(fig1a["fosc_range"]), "paper_range": list(PAPER_RANGE),
                    "bins": len(fig1a["counts"]), "attack": FIG_ATTACK.name,
                    "fosc_quantiles": np.quantile(examples["fosc"], [0.1, 0.5, 0.9]).tolist(),
                    "accuracy_all": 100.0 * float(examples["correct"].mean())},
        "fig1b": {"indices": fig1b["indices"], "steps": fig1b["steps"],
                  "median_fosc": np.nanmedian(fig1b["fosc"], axis=1),
                  "median_loss": np.nanmedian(fig1b["loss"], axis=1)},
        "fosc_distributions": {k: distributions[k] for k in ("epochs", "share", "share_range",
                                                             "bandwidth", "n")}
                              | {"quantiles": distributions.get("quantiles", {}),
                                 "epochs_counted_from": 1},
        "fig4a": {"eps": fig4a["eps"], "accuracy": fig4a["accuracy"], "n": fig4a["n"]},
        "flags": fig4a["flags"],
    }


def _load_run(run: Path, device: str):
    """(backend, model, head of analysis.json, test data) of the run directory `run`."""
    from minidyn.evaluation.checkpoints import checkpoint_in, load_checkpoint, run_config
    from minidyn.data import load_dataset

    if not run.is_dir():
        raise ConfigError(f"{run} is not a run directory")
    path = checkpoint_in(run)
    backend, model, meta = load_checkpoint(path, device)
    config = run_config(path)
    data = load_dataset(meta.get("dataset") or config.get("dataset"), "test", config.get("data_dir"))
    eps = meta.get("eps") or config.get("eps")
    if eps is None:
        raise CheckpointError(f"{path} does not record the eps it was trained with, nor does its config.json")
    head = {"run": str(run), "checkpoint": str(path), "method": meta.get("method") or config.get("method"),
            "model": meta.get("model"), "dataset": data.name, "eps": float(eps)}
    return backend, model, head, data


def _output_dir(run: Path, out: str | os.PathLike | None) -> Path:
    """`out` (default RUN_DIR/analysis), created; ConfigError when it cannot be."""
    out = Path(out) if out is not None else run / "analysis"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out {out}: {exc.strerror}") from None
    return out


def analyze_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                limit: int | None = 1000, epochs: list[int] | None = None, bins: int = 20,
                fosc_range=None, eps_grid=None, traj_n: int = 20, traj_steps: int = 20,
                batch_size: int = 256, seed: int = 0, device: str = "auto", plots: bool = True,
                fosc_bounds: str = "ball", log: Callable[[str], None] = print, progress=None) -> dict:
    """Every analysis for the run in `run_dir`; numbers to CSV/JSON and (matplotlib) PNGs in `out`
    (default RUN_DIR/analysis). Returns the summary written to analysis.json, with "files".

    epochs: the epochs (counted from 1) of the FOSC KDE; default first, middle and last.
    fosc_bounds: "ball" (the paper's FOSC, Eq. 4) or "clipped" (FOSC over the feasible set PGD
    searches, the eps-ball intersected with the pixel box [0, 1]^d) for Figs 1a and 1b; the
    training FOSC files of the distributions are always the paper's (what training records).
    fosc_range: None, (lo, hi) or "auto", the range of Fig 1a's bins (see choose_range). The
    "share of training examples with FOSC in range" of the distributions uses the same range,
    except after a fallback, where it keeps the paper's [0, 0.1] (its "FOSC density").
    progress(label, total) -> (on_batch, close): a progress display for Fig 1a's attack.
    """
    run = Path(run_dir)
    if fosc_bounds not in FOSC_BOUNDS:
        raise ConfigError(f"fosc_bounds must be one of {', '.join(FOSC_BOUNDS)}, got {fosc_bounds!r}")
    bounds = FOSC_BOUNDS[fosc_bounds]
    backend, model, head, data = _load_run(run, device)
    check_epochs(run, epochs)  # before minutes of PGD, not after
    out = _output_dir(run, out)
    eps = head["eps"]
    eps_grid = default_eps_grid(eps) if eps_grid is None else np.asarray(eps_grid, float)
    on_batch, close = (progress or (lambda label, total: (None, lambda: None)))(
        f"Fig 1a: {FIG_ATTACK.label}", len(data) if limit is None else min(limit, len(data)))
    try:
        fig1a = fosc_bins(backend, model, data, eps=eps, limit=limit, bins=bins, fosc_range=fosc_range,
                          batch_size=batch_size, seed=seed, fosc_bounds=bounds, on_batch=on_batch)
    finally:
        close()
    fig1b = trajectories(backend, model, data, eps=eps, n=traj_n, steps=traj_steps, seed=seed,
                         fosc_bounds=bounds)
    distributions = fosc_distributions(
        run, epochs, share_range=PAPER_RANGE if fig1a["range_source"] == "fallback" else fig1a["fosc_range"])
    fig4a = eps_curve(backend, model, data, eps_grid=eps_grid, limit=limit, batch_size=batch_size, seed=seed)
    figures = (fig1a, fig1b, distributions, fig4a)
    written = write_all(out, *figures)
    summary = _summary(head | {"seed": seed, "fosc_bounds": fosc_bounds}, *figures)
    atomic_write(out / "analysis.json", lambda f: json.dump(jsonable(summary), f, indent=2))
    written.append("analysis.json")
    if plots:
        written += _plot(out, figures, f"{summary['method']} {summary['model']}, eps {eps:g}",
                         clipped=bounds is not None, log=log)
    summary["files"] = [str(out / name) for name in written]
    return summary


def _plot(out: Path, figures: tuple, title: str, clipped: bool, log: Callable[[str], None]) -> list[str]:
    """The PNGs of `figures` (fig1a, fig1b, distributions, fig4a) in `out`, their names; none,
    and a line to `log`, without matplotlib."""
    from minidyn.evaluation import plots as plotting

    if not plotting.available():
        log(plotting.MISSING)
        return []
    return plotting.plot_all(out, *figures, title=title, clipped=clipped)
