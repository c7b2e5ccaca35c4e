"""PNG figures of `minidyn.evaluation.analysis` results, with matplotlib (the `plot` extra), imported lazily.

Drawn with minidyn.evaluation.drawing (matplotlib's object API, never pyplot). Every `*_figure`
function takes the dict an analysis function returned and gives back the matplotlib Figure (for
tests and notebooks); `plot_*` saves it.
Each title names the paper's figure it redraws (Wang et al., ICML 2019) and says in one line
how to read it. Epochs are counted from 1, as in the training log.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minidyn.evaluation.analysis import FIG_ATTACK, describe_corr
from minidyn.evaluation.drawing import PAPER, available, figure, line_colours, save  # noqa: F401  (available: used as plots.available)

MISSING = ("matplotlib is not installed (pip install 'minidyn[plot]'): "
           "wrote the numbers (CSV/JSON) but no PNGs")
LOW_FOSC = "low FOSC = the inner maximisation is well solved (FOSC ≥ 0; 0 at a local maximum)"


def fosc_set(clipped: bool) -> str:
    """Which feasible set the FOSC of Figs 1a/1b maximises over, in words."""
    if clipped:
        return "FOSC over the eps-ball ∩ the pixel box [0, 1]^d"
    return "FOSC over the eps-ball (the paper's)"


def _title(fig, what: str, figure: str, lines: list[str]) -> None:
    """Suptitle: `what` (cf. Fig. `figure` of the paper), then one short line per entry."""
    fig.suptitle("\n".join([f"{what} (cf. {figure} of {PAPER})"] + [ln for ln in lines if ln]),
                 fontsize=9)


def _range_words(fig1a: dict) -> str:
    """How Fig 1a's FOSC range was chosen, for its x-axis label."""
    lo, hi = fig1a["fosc_range"]
    inside = fig1a["n"] - fig1a["n_below"] - fig1a["n_above"] - fig1a.get("n_nan", 0)
    counts = f"{inside} of {fig1a['n']} examples in [{lo:g}, {hi:g}], {fig1a['n_above']} above"
    if fig1a.get("range_source") == "fallback":
        return (f"FOSC of the {FIG_ATTACK.label} point ({counts};\nrange chosen automatically: only "
                f"{fig1a['n_in_paper_range']} of {fig1a['n']} lie in the paper's [0, 0.1])")
    return f"FOSC of the {FIG_ATTACK.label} point ({counts})"


def fosc_bins_figure(fig1a: dict, title: str = "", clipped: bool = False):
    """Fig 1a: accuracy (left axis) and mean loss (right axis) per FOSC bin; counts below."""
    fig, axes = figure(7.0, 6.0, nrows=2, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax, axc = axes[0, 0], axes[1, 0]
    full = fig1a["counts"] > 0
    x = fig1a["centers"]
    if not full.any():
        ax.text(0.5, 0.5, "no example has its FOSC in this range:\nchoose another with --fosc-range",
                ha="center", va="center", transform=ax.transAxes)
    acc, = ax.plot(x[full], fig1a["accuracy"][full], "o-", color="tab:blue", label="accuracy (left axis)")
    ax.set_ylabel("accuracy (%)", color="tab:blue")
    ax.set_ylim(-3, 103)
    ax2 = ax.twinx()
    loss, = ax2.plot(x[full], fig1a["loss"][full], "s--", color="tab:red", label="mean loss (right axis)")
    ax2.set_ylabel("mean cross-entropy loss", color="tab:red")
    # above the axes: "best" would only avoid the accuracy points, not the loss on the twin axis
    ax.legend(handles=[acc, loss], fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=2, frameon=False)
    _title(fig, f"Accuracy and loss of {FIG_ATTACK.label} test examples, binned by FOSC", "Fig. 1a",
           [f"{title}; {fosc_set(clipped)}", LOW_FOSC,
            f"r(FOSC, accuracy) = {describe_corr(fig1a, 'accuracy')}, "
            f"r(FOSC, loss) = {describe_corr(fig1a, 'loss')}"])
    width = fig1a["edges"][1] - fig1a["edges"][0]
    axc.bar(x, fig1a["counts"], width=0.9 * width, color="0.6")
    axc.set_ylabel("examples\nper bin")
    axc.set_xlabel(_range_words(fig1a))
    axc.set_xlim(fig1a["edges"][0], fig1a["edges"][-1])
    return fig


def trajectories_figure(fig1b: dict, title: str = "", clipped: bool = False):
    """Fig 1b: FOSC and loss along the PGD steps, one line per example, the same colour (and,
    past the 10th example, a dashed style) for an example in both panels."""
    from matplotlib.ticker import MaxNLocator

    n = fig1b["fosc"].shape[1]
    fig, axes = figure(11.0, 4.4, ncols=2)
    steps = np.arange(fig1b["fosc"].shape[0])
    for j, colour in enumerate(line_colours(n)):
        style = "-" if j < 10 else "--"
        label = f"test #{int(fig1b['indices'][j])}"
        axes[0, 0].plot(steps, fig1b["fosc"][:, j], style, color=colour, lw=1.2, label=label)
        axes[0, 1].plot(steps, fig1b["loss"][:, j], style, color=colour, lw=1.2, label=label)
    axes[0, 0].set_ylabel("FOSC" + (" (eps-ball ∩ [0, 1]^d)" if clipped else " (eps-ball)"))
    axes[0, 1].set_ylabel("cross-entropy loss")
    for ax in axes[0]:
        ax.set_xlabel("PGD step (0: the random start)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    if n <= 20:
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right center",
                   fontsize=7, title="example", title_fontsize=8)
    _title(fig, f"FOSC and loss along the PGD steps (eps/4, random start) of {n} random test examples",
           "Fig. 1b", [f"{title}; {fosc_set(clipped)}", LOW_FOSC])
    return fig


def distributions_figure(distributions: dict, title: str = ""):
    """Figs 2/3/5: KDE of the training FOSC at chosen epochs, the share range shaded; right:
    the share of training examples in that range at every epoch (counted from 1)."""
    fig, axes = figure(11.0, 4.4, ncols=2)
    ax, axs = axes[0, 0], axes[0, 1]
    lo_s, hi_s = distributions["share_range"]
    if distributions["density"]:
        for e, dens in distributions["density"].items():
            share = 100 * distributions["share"][e]
            ax.plot(distributions["grid"], dens, lw=1.5,
                    label=f"epoch {e}  ({share:.1f}% in [{lo_s:g}, {hi_s:g}])")
        top = max(max(q[2] for q in distributions["quantiles"].values()) * 1.1, hi_s * 1.5)
        ax.set_xlim(min(0.0, min(q[0] for q in distributions["quantiles"].values())) - 0.02 * top, top)
        ax.axvspan(lo_s, hi_s, color="0.85", zorder=0,
                   label=f"FOSC in [{lo_s:g}, {hi_s:g}]: the share plotted on the right")
        ax.set_xlabel("FOSC of the training adversarial examples (x-axis up to the 99th percentile)")
        ax.set_ylabel("density (Gaussian KDE, Scott)")
        # the top third kept free for the legend, so that it never hides a peak
        ax.set_ylim(top=1.5 * max(np.nanmax(v) for v in distributions["density"].values()))
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no FOSC recorded", ha="center", transform=ax.transAxes)
    _share_panel(axs, distributions)
    _title(fig, "FOSC of the training examples by epoch", "Figs. 2, 3 and 5",
           [f"{title}; FOSC over the eps-ball, as recorded in training; epochs counted from 1",
            LOW_FOSC])
    return fig


def _share_panel(axs, distributions: dict) -> None:
    """The share of training examples with FOSC in distributions["share_range"], per epoch."""
    from matplotlib.ticker import MaxNLocator

    lo_s, hi_s = distributions["share_range"]
    epochs = list(distributions["share"])
    shares = [100 * distributions["share"][e] for e in epochs]
    axs.plot(epochs, shares, "o-")
    axs.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = [v for v in shares if np.isfinite(v)]
    axs.set_ylim(0, max(finite + [1.0]) * 1.1)
    axs.set_xlabel("epoch (1 = the first, as in the training log)")
    axs.set_ylabel(f"% of training examples with FOSC in [{lo_s:g}, {hi_s:g}]")


def eps_curve_figure(fig4a: dict, title: str = ""):
    """Fig 4a: PGD-10 accuracy against the test eps (eps 0: clean)."""
    fig, axes = figure(5.8, 4.4)
    ax = axes[0, 0]
    ax.plot(fig4a["eps"], fig4a["accuracy"], "o-")
    for e, a in zip(fig4a["eps"], fig4a["accuracy"]):
        ax.annotate(f"{a:.1f}", (e, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("test eps (0: clean)")
    ax.set_ylabel(f"{FIG_ATTACK.label} accuracy (%), {fig4a['n']} test examples")
    ax.set_ylim(0, 105)
    # no FOSC in this figure: its one-line reading is about the curve instead
    _title(fig, "Robustness against the test eps", "Fig. 4a",
           [title, "accuracy should fall as eps grows; a rise hints at gradient masking"])
    return fig


def plot_fosc_bins(fig1a: dict, path: Path, title: str = "", clipped: bool = False) -> str:
    return save(fosc_bins_figure(fig1a, title, clipped), path)


def plot_trajectories(fig1b: dict, path: Path, title: str = "", clipped: bool = False) -> str:
    return save(trajectories_figure(fig1b, title, clipped), path)


def plot_distributions(distributions: dict, path: Path, title: str = "") -> str:
    return save(distributions_figure(distributions, title), path)


def plot_eps_curve(fig4a: dict, path: Path, title: str = "") -> str:
    return save(eps_curve_figure(fig4a, title), path)


def plot_all(out: Path, fig1a: dict, fig1b: dict, distributions: dict, fig4a: dict, title: str = "",
             clipped: bool = False) -> list[str]:
    """Every figure of `minidyn analyze` into `out`; returns the file names. clipped: the FOSC
    of Figs 1a/1b is the maximum over the eps-ball intersected with the pixel box [0, 1]^d
    (said in their titles); the FOSC values themselves are never clipped."""
    out = Path(out)
    return [plot_fosc_bins(fig1a, out / "fig1a_fosc_bins.png", title, clipped),
            plot_trajectories(fig1b, out / "fig1b_trajectories.png", title, clipped),
            plot_distributions(distributions, out / "fosc_distributions.png", title),
            plot_eps_curve(fig4a, out / "fig4a_eps_curve.png", title)]
