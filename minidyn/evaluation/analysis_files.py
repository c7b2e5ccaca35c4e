"""One run's FOSC analyses to files (`minidyn analyze RUN_DIR`): load the run, compute every
analysis of minidyn.evaluation.analysis, write the numbers as CSV and analysis.json and (with
matplotlib) the PNGs of minidyn.evaluation.plots, in RUN_DIR/analysis by default.

    summary = analyze_run("runs/x")   # files in runs/x/analysis; summary["files"] names them
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from minidyn.errors import CheckpointError, ConfigError
from minidyn.evaluation import plots as plotting
from minidyn.evaluation.analysis import (FIG_ATTACK, FOSC_BOUNDS, PAPER_RANGE, check_epochs, default_eps_grid,
                                         eps_curve, fosc_bins, fosc_distributions, trajectories)
from minidyn.files.fileio import atomic_write


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
    if not plotting.available():
        log(plotting.MISSING)
        return []
    return plotting.plot_all(out, *figures, title=title, clipped=clipped)
