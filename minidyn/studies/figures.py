"""The PNGs of a study report (matplotlib, the `plot` extra), each a figure of the paper redrawn
over seeds: a line per setting, its mean over seeds, with a band or error bars of one sample std.

    val_curves.png         per-epoch validation clean / PGD accuracy by setting (cf. Fig. 3b)
    fosc_epochs.png        FOSC of the training examples at chosen epochs (cf. Figs. 3a, 3c, 5)
    sweep_KEY.png          robust accuracy against a swept option (cf. Figs. 2a, 2b, 4b)
    eps_curve.png          accuracy against the test eps (cf. Fig. 4a)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minidyn.evaluation.plots import PAPER, _figure, _save, available, line_colours

__all__ = ["available", "plot_all"]


def plot_all(spec, cells, out: Path) -> list[tuple[str, str]]:
    """Draw every figure the study's results allow; [(file name, caption)]."""
    done = [c for c in cells if c.state == "done"]
    if not done:
        return []
    figures = [val_curves(spec, done, out), fosc_epochs(spec, done, out)]
    for key in swept_keys(spec):
        figures.append(sweep(spec, done, out, key))
    if len(spec.eval.eps or ()) > 1:
        figures.append(eps_curve(spec, done, out))
    return [f for f in figures if f is not None]


def swept_keys(spec) -> list[str]:
    """Grid keys other than method and seed with more than one value (or [report] sweep)."""
    if "sweep" in spec.report:
        return [spec.report["sweep"]]
    return [k for k, v in spec.grid.items() if k not in ("method", "seed") and len(v) > 1]


def _settings(cells) -> list[str]:
    return list(dict.fromkeys(c.setting for c in cells))


def _robust_column(spec) -> str:
    return "pgd20" if "pgd20" in spec.eval.attacks else spec.eval.attacks[-1]


def val_curves(spec, cells, out: Path):
    from matplotlib.ticker import MaxNLocator

    key = "val" if any("val_pgd_acc" in r for c in cells for r in c.metrics) else "test"
    fig, axes = _figure(10, 4, ncols=2)
    colours = line_colours(len(_settings(cells)))
    for colour, setting in zip(colours, _settings(cells)):
        members = [c for c in cells if c.setting == setting]
        epochs = min(len(c.metrics) for c in members)
        if not epochs:
            continue
        x = np.arange(1, epochs + 1)
        for ax, what in zip(axes[0], ("clean", "pgd")):
            y = np.array([[r[f"{key}_{what}_acc"] for r in c.metrics[:epochs]] for c in members])
            mean, std = y.mean(0), (y.std(0, ddof=1) if len(y) > 1 else np.zeros(epochs))
            ax.plot(x, mean, color=colour, label=f"{setting} (n={len(y)})")
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    words = "validation" if key == "val" else "test (no validation split held out)"
    for ax, what in zip(axes[0], ("clean", f"PGD-{spec.train.get('eval_steps', 20)}")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{words} accuracy, {what} (%)")
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=7)
    fig.suptitle(f"Per-epoch {words} accuracy, mean ± 1 std over seeds (cf. Fig. 3b of {PAPER})", fontsize=9)
    return _save(fig, out / "val_curves.png"), f"Per-epoch {words} clean and PGD accuracy by setting, mean ± 1 std over seeds"


def _fosc(cell_dir: Path, epoch: int) -> np.ndarray | None:
    from minidyn.npyfile import read_fosc

    path = cell_dir / "fosc" / f"epoch_{epoch - 1:03d}.npy"
    if not path.is_file():
        return None
    values = read_fosc(path)
    return values[np.isfinite(values)]


def fosc_epochs(spec, cells, out: Path):
    from minidyn.studies.tasks import StudyDir

    epochs = spec.report.get("fosc_epochs") or [1]
    study = StudyDir(out.parent)
    cell_of = {c.name: c for c in spec.cells()}
    data = {}
    for c in cells:
        for e in epochs:
            f = _fosc(study.cell_dir(cell_of[c.name]), e)
            if f is not None and f.size:
                data.setdefault((c.setting, e), []).append(f)
    if not data:
        return None
    fig, axes = _figure(4 * len(epochs), 3.6, ncols=len(epochs), sharey=True)
    high = float(np.quantile(np.concatenate([np.concatenate(v) for v in data.values()]), 0.99))
    bins = np.linspace(0, max(high, 1e-6), 41)
    colours = line_colours(len(_settings(cells)))
    for ax, e in zip(axes[0], epochs):
        for colour, setting in zip(colours, _settings(cells)):
            if (setting, e) not in data:
                continue
            values = np.concatenate(data[setting, e])
            ax.hist(values, bins=bins, density=True, histtype="step", color=colour,
                    label=f"{setting} (median {np.median(values):.3g})")
        ax.set_title(f"epoch {e}", fontsize=9)
        ax.set_xlabel("FOSC of the training example's adversarial point")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("density (all seeds pooled)")
    fig.suptitle(f"FOSC of the training examples (cf. Figs. 3a, 5 of {PAPER})\n"
                 "low FOSC = the inner maximisation is well solved", fontsize=9)
    return (_save(fig, out / "fosc_epochs.png"),
            f"FOSC of the training examples at epochs {', '.join(map(str, epochs))}, by setting, seeds pooled")


def _positions(spec, key: str) -> tuple[dict, bool]:
    """{grid value: x} for a swept key: the number ('eps/4' as 0.25) where every value is one,
    else the value's place in the grid (a categorical axis); and whether it is numeric."""
    def number(value):
        if isinstance(value, str) and value.startswith("eps"):
            tail = value.partition("/")[2]
            return 1 / float(tail) if tail else 1.0
        return float(value)
    try:
        return {repr(v): number(v) for v in spec.grid[key]}, True
    except (TypeError, ValueError):
        return {repr(v): float(i) for i, v in enumerate(spec.grid[key])}, False


def sweep(spec, cells, out: Path, key: str):
    column = _robust_column(spec)
    from minidyn.studies.report import CHECKPOINT_WORDS, accuracy, label

    fig, axes = _figure(5 * len(spec.eval.checkpoints), 3.8, ncols=len(spec.eval.checkpoints), sharey=True)
    methods = list(dict.fromkeys(c.values.get("method", spec.train.get("method", "dynamic")) for c in cells))
    position, numeric = _positions(spec, key)
    for ax, which in zip(axes[0], spec.eval.checkpoints):
        if not numeric:
            ax.set_xticks(list(position.values()), [str(v) for v in spec.grid[key]], fontsize=7)
        for colour, method in zip(line_colours(len(methods)), methods):
            points = {}
            for c in cells:
                if c.values.get("method", spec.train.get("method", "dynamic")) == method and key in c.values:
                    acc = accuracy(c, which, None, column)
                    if acc is not None:
                        points.setdefault(position[repr(c.values[key])], []).append(acc)
            if not points:
                continue
            xs = sorted(points)
            mean = [np.mean(points[x]) for x in xs]
            std = [np.std(points[x], ddof=1) if len(points[x]) > 1 else 0 for x in xs]
            ax.errorbar(xs, mean, yerr=std, color=colour, marker="o", capsize=3, label=method)
        ax.set_xlabel(key.replace("_", " ") + (" (fraction of eps)" if key == "step_size" else ""))
        ax.set_title(CHECKPOINT_WORDS[which], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"test {label(column)} accuracy (%)")
    fig.suptitle(f"Robustness against {key}, mean ± 1 std over seeds\n(cf. Figs. 2a/2b/4b of {PAPER})", fontsize=9)
    return _save(fig, out / f"sweep_{key}.png"), f"Test {label(column)} accuracy against {key}, mean ± 1 std over seeds"


def eps_curve(spec, cells, out: Path):
    from minidyn.studies.report import accuracy, eps_keys, label

    column = _robust_column(spec)
    keys = eps_keys(cells)
    fig, axes = _figure(5.5, 3.8)
    ax = axes[0][0]
    settings = _settings(cells)
    for colour, setting in zip(line_colours(len(settings)), settings):
        members = [c for c in cells if c.setting == setting]
        ys = np.array([[accuracy(c, "last", k, column) for k in keys] for c in members], dtype=float)
        mean = np.nanmean(ys, 0)
        std = np.nanstd(ys, 0, ddof=1) if len(ys) > 1 else np.zeros(len(keys))
        ax.errorbar([float(k) for k in keys], mean, yerr=std, color=colour, marker="o", capsize=3,
                    label=setting)
    ax.set_xlabel("test eps")
    ax.set_ylabel(f"{label(column)} accuracy, last epoch (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"Robustness against the test eps, mean ± 1 std over seeds\n(cf. Fig. 4a of {PAPER})", fontsize=9)
    return _save(fig, out / "eps_curve.png"), f"Test {label(column)} accuracy against the test eps"
