"""PNG figures of `minidyn.analysis` results, with matplotlib (the `plot` extra), imported lazily.

Uses matplotlib's object API (Figure + the Agg canvas), never pyplot, so it touches no global
state and needs no display. Every function takes the dict an analysis function returned.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MISSING = ("matplotlib is not installed (pip install 'minidyn[plot]'): "
           "wrote the numbers (CSV/JSON) but no PNGs")


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110)
    return path.name


def plot_fosc_bins(b: dict, path: Path, title: str = "") -> str:
    """Fig 1a: accuracy (left axis) and mean loss (right axis) per FOSC bin; counts below."""
    fig, axes = _figure(6.4, 5.2, nrows=2, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax, axc = axes[0, 0], axes[1, 0]
    full = b["counts"] > 0
    x = b["centers"]
    if not full.any():
        ax.text(0.5, 0.5, "no example has its FOSC in this range:\nchoose another with --fosc-range",
                ha="center", va="center", transform=ax.transAxes)
    ax.plot(x[full], b["accuracy"][full], "o-", color="tab:blue", label="accuracy")
    ax.set_ylabel("accuracy (%)", color="tab:blue")
    ax.set_ylim(-3, 103)
    ax2 = ax.twinx()
    ax2.plot(x[full], b["loss"][full], "s--", color="tab:red", label="mean loss")
    ax2.set_ylabel("mean cross-entropy loss", color="tab:red")
    from minidyn.analysis import describe_corr

    ax.set_title(f"{title}: PGD-10 test examples by FOSC\nr(FOSC, accuracy) = "
                 f"{describe_corr(b, 'accuracy')}, r(FOSC, loss) = {describe_corr(b, 'loss')}", fontsize=9)
    width = b["edges"][1] - b["edges"][0]
    axc.bar(x, b["counts"], width=0.9 * width, color="0.6")
    axc.set_ylabel("examples")
    axc.set_xlabel(f"FOSC ({b['n'] - b['n_below'] - b['n_above']} of {b['n']} in range, "
                   f"{b['n_above']} above)")
    axc.set_xlim(b["edges"][0], b["edges"][-1])
    return _save(fig, path)


def plot_trajectories(t: dict, path: Path, title: str = "") -> str:
    """Fig 1b: FOSC and loss along the PGD steps, one line per example."""
    fig, axes = _figure(9.0, 3.8, ncols=2)
    steps = np.arange(t["fosc"].shape[0])
    for j in range(t["fosc"].shape[1]):
        axes[0, 0].plot(steps, t["fosc"][:, j], lw=1, alpha=0.8)
        axes[0, 1].plot(steps, t["loss"][:, j], lw=1, alpha=0.8)
    axes[0, 0].set_ylabel("FOSC")
    axes[0, 1].set_ylabel("cross-entropy loss")
    for ax in axes[0]:
        ax.set_xlabel("PGD step")
    fig.suptitle(f"{title}: {t['fosc'].shape[1]} random test examples, PGD steps of eps/4", fontsize=10)
    return _save(fig, path)


def plot_distributions(d: dict, path: Path, title: str = "") -> str:
    """Figs 2/3/5: KDE of the training FOSC at chosen epochs; share in [0, 0.1] per epoch."""
    fig, axes = _figure(10.0, 3.9, ncols=2)
    ax, axs = axes[0, 0], axes[0, 1]
    lo_s, hi_s = d["share_range"]
    if d["density"]:
        for e, dens in d["density"].items():
            ax.plot(d["grid"], dens, lw=1.5, label=f"epoch {e}  ({100 * d['share'][e]:.1f}% in [{lo_s:g}, {hi_s:g}])")
        top = max(max(q[2] for q in d["quantiles"].values()) * 1.1, hi_s * 1.5)
        ax.set_xlim(min(0.0, min(q[0] for q in d["quantiles"].values())) - 0.02 * top, top)
        ax.axvspan(lo_s, hi_s, color="0.85", zorder=0)
        ax.set_xlabel("FOSC of the training adversarial examples (x-axis up to the 99th percentile)")
        ax.set_ylabel("density (Gaussian KDE, Scott)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no FOSC recorded", ha="center", transform=ax.transAxes)
    from matplotlib.ticker import MaxNLocator

    epochs = list(d["share"])
    shares = [100 * d["share"][e] for e in epochs]
    axs.plot(epochs, shares, "o-")
    axs.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = [v for v in shares if np.isfinite(v)]
    axs.set_ylim(0, max(finite + [1.0]) * 1.1)
    axs.set_xlabel("epoch")
    axs.set_ylabel(f"% of examples with FOSC in [{lo_s:g}, {hi_s:g}]")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_eps_curve(c: dict, path: Path, title: str = "") -> str:
    """Fig 4a: PGD-10 accuracy against the test eps (eps 0: clean)."""
    fig, axes = _figure(5.6, 4.0)
    ax = axes[0, 0]
    ax.plot(c["eps"], c["accuracy"], "o-")
    for e, a in zip(c["eps"], c["accuracy"]):
        ax.annotate(f"{a:.1f}", (e, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("test eps (0: clean)")
    ax.set_ylabel(f"PGD-10 accuracy (%), {c['n']} test examples")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_all(out: Path, b: dict, t: dict, d: dict, c: dict, title: str = "",
             clipped: bool = False) -> list[str]:
    """Every figure of `minidyn analyze` into `out`; returns the file names. clipped: Figs 1a/1b
    show FOSC over the eps-ball and [0, 1] (said in their titles)."""
    out = Path(out)
    fosc_title = title + (" (FOSC clipped to [0, 1])" if clipped else "")
    return [plot_fosc_bins(b, out / "fig1a_fosc_bins.png", fosc_title),
            plot_trajectories(t, out / "fig1b_trajectories.png", fosc_title),
            plot_distributions(d, out / "fosc_distributions.png", title),
            plot_eps_curve(c, out / "fig4a_eps_curve.png", title)]
