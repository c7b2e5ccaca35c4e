"""The PNGs of a study report (matplotlib, the `plot` extra): figures of the paper redrawn over
seeds. Each figure says in its title or legend what its bands and bars are.

    val_curves.png    per-epoch validation clean / PGD accuracy by setting: mean over seeds,
                      band ±1 sample std over seeds (cf. Fig. 3b)
    fosc_epochs.png   FOSC of the training examples at [report] fosc_epochs, seeds pooled, in %
                      of the setting's examples per bin. Top: the paper's range [0, 0.1] (the
                      share in it per setting in the legend); bottom: the whole distribution up
                      to the pooled 99th percentile (the tail not drawn counted in the legend);
                      dashed lines: c_t, Dynamic's FOSC stopping target at that epoch, from the
                      cell's metrics.jsonl (cf. Figs. 3a, 3c, 5)
    sweep_KEY.png     robust accuracy against a swept grid key, a line per combination of the
                      other grid keys met at two or more of its values (never pooled; none
                      drawn where no combination is). Top: mean, bars ±1 sample std over seeds;
                      bottom: the paired difference to [report] baseline seed by seed, bars its
                      95% t interval (aggregate.paired_difference). The paper's figure is cited
                      only for the key it sweeps: step_size Fig. 2a, steps Fig. 2b, eps Fig. 4b
    eps_curve.png     accuracy against the test eps: mean, bars ±1 sample std over seeds (cf. Fig. 4a)
    fig1a_SETTING.png Fig. 1a on the setting's PGD-10 test points measured by `minidyn study
                      fig1a` (the first [eval] checkpoint measured), seeds pooled: accuracy and
                      mean loss per FOSC bin, 20 bins over the paper's [0, 0.1] (another range
                      where fewer than half the points lie in it: analysis.choose_range), counts below
    frontier.png      the accuracy-cost frontier: robust accuracy (the strongest [eval] attack:
                      AutoAttack, else APGD-CE, else PGD-20) against the training attack's
                      gradient evaluations per example, a point per cell (setting and seed), the
                      setting's mean with bars ±1 sample std over seeds on both axes; settings
                      of nearly one cost drawn side by side (the legend gives the shift)

Every `*_figure` function returns (file name, matplotlib Figure, caption); plot_all saves them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minidyn.evaluation.drawing import PAPER, available, figure, line_colours, save

__all__ = ["available", "plot_all"]

SHARE_RANGE = (0.0, 0.1)     # the paper's FOSC range (Fig. 1a's x axis): its share is the quantity
SWEPT_FIGURE = {"step_size": "Fig. 2a", "steps": "Fig. 2b", "eps": "Fig. 4b"}
STD_WORDS = "±1 sample std over seeds (n seeds in the legend; none for n = 1)"
T_WORDS = "paired 95% Student t interval over seeds"
ZOOM_BINS = 20               # bins of [0, 0.1], as the paper's Fig. 1a
FULL_BINS = 40


def plot_all(spec, cells, out: Path) -> list[tuple[str, str]]:
    """Draw every figure the study's results allow into `out` (STUDY/report); [(file name, caption)]."""
    from minidyn.studies.tasks import StudyDir

    done = [c for c in cells if c.state == "done"]
    if not done:
        return []
    study = StudyDir(out.parent)
    drawn = [val_curves_figure(spec, done), fosc_epochs_figure(spec, done, study)]
    drawn += [sweep_figure(spec, done, key) for key in swept_keys(spec)]
    if len(spec.eval.eps or ()) > 1:
        drawn.append(eps_curve_figure(spec, done))
    if len(_settings(done)) > 1 and not spec.eval.eps:
        drawn.append(frontier_figure(spec, done))
    drawn += fig1a_figures(spec, done, study)
    return [(save(fig, out / name), caption) for name, fig, caption in filter(None, drawn)]


def swept_keys(spec) -> list[str]:
    """Grid keys other than method and seed with more than one value (or [report] sweep, a
    grid key: spec.check_report refuses another when the spec is read)."""
    if "sweep" in spec.report:
        return [spec.report["sweep"]]
    return [k for k, v in spec.grid.items() if k not in ("method", "seed") and len(v) > 1]


def _settings(cells) -> list[str]:
    return list(dict.fromkeys(c.setting for c in cells))


def _robust_column(spec) -> str:
    return "pgd20" if "pgd20" in spec.eval.attacks else spec.eval.attacks[-1]


def _columns(labels: list[str], width: float) -> int:
    """Legend columns (at most 3) that fit `width` inches of 7-point text (about 18 characters an inch)."""
    return max(1, min(3, len(labels), int(18 * width) // (max(map(len, labels), default=1) + 12)))


def _mean_std(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) over axis 0, NaN-aware; the std is NaN (nothing drawn) for n < 2."""
    y = np.asarray(y, dtype=float)
    n = np.sum(np.isfinite(y), axis=0)
    mean = np.array([np.mean(col[np.isfinite(col)]) if k else np.nan for col, k in zip(y.T, n)])
    std = np.array([np.std(col[np.isfinite(col)], ddof=1) if k > 1 else np.nan for col, k in zip(y.T, n)])
    return mean, std


# --- per-epoch validation accuracy -------------------------------------------------------------
def val_curves_figure(spec, cells):
    """Per-epoch validation (else test) clean and PGD accuracy from metrics.jsonl, a line per setting."""
    from matplotlib.ticker import MaxNLocator

    key = "val" if any("val_pgd_acc" in r for c in cells for r in c.metrics) else "test"
    fig, axes = figure(10, 4 + 0.16 * len(_settings(cells)) / _columns(_settings(cells), 10.0), ncols=2)
    colours = line_colours(len(_settings(cells)))
    for colour, setting in zip(colours, _settings(cells)):
        members = [c for c in cells if c.setting == setting]
        epochs = min(len(c.metrics) for c in members)
        if not epochs:
            continue
        x = np.arange(1, epochs + 1)
        for ax, what in zip(axes[0], ("clean", "pgd")):
            y = np.array([[r.get(f"{key}_{what}_acc", np.nan) for r in c.metrics[:epochs]] for c in members],
                         dtype=float)
            mean, std = _mean_std(y)
            ax.plot(x, mean, color=colour, label=f"{setting} (n={len(y)})")
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    words = "validation" if key == "val" else "test (no validation split held out)"
    for ax, what in zip(axes[0], ("clean", f"PGD-{spec.train.get('eval_steps', 20)}")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{words} accuracy, {what} (%)")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", fontsize=7,
               ncol=_columns(_settings(cells), 10.0), title_fontsize=7,
               title=f"line: the mean over seeds; band: {STD_WORDS.replace(' (', chr(10) + '(')}")
    fig.suptitle(f"Per-epoch {words} accuracy, mean over seeds, band {STD_WORDS}\n"
                 f"(cf. Fig. 3b of {PAPER})", fontsize=9)
    return ("val_curves.png", fig,
            f"Per-epoch {words} clean and PGD accuracy by setting: line the mean, band {STD_WORDS}")


# --- FOSC of the training examples -------------------------------------------------------------
def _fosc(cell_dir: Path, epoch: int) -> np.ndarray | None:
    from minidyn.evaluation.analysis import fosc_files
    from minidyn.files.npyfile import read_fosc

    path = fosc_files(cell_dir).get(epoch)
    if path is None:
        return None
    values = read_fosc(path)
    return values[np.isfinite(values)]


def _c_t(metrics: list, epoch: int) -> float | None:
    """c_t of `epoch` (counted from 1) in a cell's metrics.jsonl records (None: not Dynamic)."""
    for record in metrics:
        if record.get("epoch") == epoch - 1:
            return record.get("c_t")
    return None


def fosc_samples(spec, cells, study) -> tuple[dict, dict]:
    """For [report] fosc_epochs (counted from 1; default [1]): {(setting, epoch): [FOSC of each
    seed's training examples]} and {(setting, epoch): [c_t of each seed]} (Dynamic cells only)."""
    epochs = spec.report.get("fosc_epochs") or [1]
    cell_of = {c.name: c for c in spec.cells()}
    samples, targets = {}, {}
    for c in cells:
        for e in epochs:
            values = _fosc(study.cell_dir(cell_of[c.name]), e)
            if values is not None and values.size:
                samples.setdefault((c.setting, e), []).append(values)
                c_t = _c_t(c.metrics, e)
                if c_t is not None:
                    targets.setdefault((c.setting, e), []).append(float(c_t))
    return samples, targets


def fosc_epochs_figure(spec, cells, study):
    """fosc_figure of the study's cells (None where no cell has a FOSC file for fosc_epochs)."""
    samples, targets = fosc_samples(spec, cells, study)
    if not samples:
        return None
    epochs = list(dict.fromkeys(e for _, e in samples))
    fig = fosc_figure(samples, targets, epochs)
    lo, hi = SHARE_RANGE
    return ("fosc_epochs.png", fig,
            f"FOSC of the training examples at epochs {', '.join(map(str, epochs))}, by setting, seeds "
            f"pooled, % of examples per bin: top the paper's range [{lo:g}, {hi:g}] (legend: the share "
            f"in it), bottom up to the 99th percentile (legend: the tail not drawn); dashed: Dynamic's c_t")


def fig1a_figures(spec, cells, study) -> list[tuple]:
    """[(file name, Figure, caption)]: a Fig. 1a per setting measured by `minidyn study fig1a`,
    at the first [eval] checkpoint it was measured at: its seeds' PGD-10 test points pooled and
    binned as `minidyn analyze` bins one run's (analysis.bin_by_fosc, plots.fosc_bins_figure)."""
    from minidyn.evaluation.analysis import PAPER_RANGE, bin_by_fosc, choose_range, n_in_range
    from minidyn.evaluation.plots import fosc_bins_figure
    from minidyn.studies.fig1a import measured_cells

    measured = {w: measured_cells(study, spec, cells, w)[0] for w in spec.eval.checkpoints}
    out = []
    for setting in _settings(cells):
        found = [(w, [m[c.name] for c in cells if c.setting == setting and c.name in m]) for w, m in measured.items()]
        checkpoint, members = next(((w, ms) for w, ms in found if ms), (None, []))
        if not members:
            continue
        pooled = {k: np.concatenate([m[k] for m in members]) for k in ("fosc", "loss", "correct")}
        fosc_range, source = choose_range(pooled["fosc"])
        bins = {**bin_by_fosc(pooled["fosc"], pooled["loss"], pooled["correct"], ZOOM_BINS, fosc_range),
                "fosc_range": fosc_range, "range_source": source,
                "n_in_paper_range": n_in_range(pooled["fosc"], PAPER_RANGE)}
        seeds = f"{len(members)} seed{'s' if len(members) != 1 else ''} pooled"
        title = f"{spec.name}: {setting}\n{checkpoint} checkpoint, {seeds}"  # two lines fit 7 inches
        out.append((f"fig1a_{setting}.png", fosc_bins_figure(bins, title),
                    f"Fig. 1a on {setting}'s PGD-10 test points ({checkpoint} checkpoint, {seeds}, "
                    f"`minidyn study fig1a`): accuracy and mean loss per FOSC bin over "
                    f"[{fosc_range[0]:g}, {fosc_range[1]:g}], examples per bin below"))
    return out


def fosc_range(pooled: np.ndarray, c_ts: list[float]) -> tuple[float, float]:
    """The x range of the whole-distribution panel: from 0 (or the 1st percentile where FOSC
    goes negative, as from the random start) to the 99th percentile, widened to show [0, 0.1]
    and every c_t."""
    lo = min(0.0, float(np.quantile(pooled, 0.01)))
    hi = max(float(np.quantile(pooled, 0.99)), 1.05 * max(c_ts, default=0.0), 1.05 * SHARE_RANGE[1])
    return lo, hi


def fosc_legend(setting: str, seeds: int, values: np.ndarray, lo: float, hi: float,
                c_ts: list[float]) -> str:
    """The legend entry of one setting in one epoch's panels, e.g. 'dynamic (n=3): 12.3% in
    [0, 0.1], median 0.25; not drawn: 0.9% (8) above 7.81; c_t 0.3' (n: seeds pooled; the
    count of examples in brackets; values below lo only where there are some)."""
    inside = np.mean((values >= SHARE_RANGE[0]) & (values <= SHARE_RANGE[1]))
    above, below = int(np.sum(values > hi)), int(np.sum(values < lo))
    text = (f"{setting} (n={seeds}): {100 * inside:.1f}% in [{SHARE_RANGE[0]:g}, {SHARE_RANGE[1]:g}], "
            f"median {np.median(values):.3g};\nnot drawn: {100 * above / values.size:.1f}% ({above}) above {hi:.3g}")
    if below:
        text += f", {100 * below / values.size:.1f}% ({below}) below {lo:.3g}"
    if c_ts:
        low_t, high_t = min(c_ts), max(c_ts)
        text += f"; c_t {low_t:.3g}" + (f"-{high_t:.3g} by seed" if f"{low_t:.3g}" != f"{high_t:.3g}" else "")
    return text


def fosc_figure(samples: dict, targets: dict, epochs: list[int]):
    """A column per epoch: top the FOSC histogram on the paper's [0, 0.1], bottom the whole
    distribution (see fosc_range); % of the setting's examples (seeds pooled) per bin; dashed
    vertical lines at each seed's c_t in the setting's colour. samples, targets: fosc_samples'."""
    from matplotlib.lines import Line2D

    settings = list(dict.fromkeys(s for s, _ in samples))
    colour_of = dict(zip(settings, line_colours(len(settings))))
    legend_height = 0.36 * (len(settings) + 1)        # each entry two lines of 6-point text
    fig, axes = figure(max(5.5 * len(epochs), 7.0), 6.5 + legend_height, ncols=len(epochs), nrows=3,
                        gridspec_kw={"height_ratios": [3, 3, legend_height]})
    for zoom, full, key, e in zip(axes[0], axes[1], axes[2], epochs):
        present = [s for s in settings if (s, e) in samples]
        pooled = {s: np.concatenate(samples[s, e]) for s in present}
        lo, hi = fosc_range(np.concatenate(list(pooled.values())),
                            [t for s in present for t in targets.get((s, e), [])])
        handles = []
        for s in present:
            values, c_ts = pooled[s], targets.get((s, e), [])
            weights = np.full(values.size, 100.0 / values.size)
            zoom.hist(values, bins=np.linspace(*SHARE_RANGE, ZOOM_BINS + 1), weights=weights,
                      histtype="step", color=colour_of[s])
            full.hist(values, bins=np.linspace(lo, hi, FULL_BINS + 1), weights=weights,
                      histtype="step", color=colour_of[s])
            for c_t in sorted(set(c_ts)):
                for ax in (zoom, full):
                    ax.axvline(c_t, color=colour_of[s], ls="--", lw=1)
            handles.append(Line2D([], [], color=colour_of[s],
                                  label=fosc_legend(s, len(samples[s, e]), values, lo, hi, c_ts)))
        if any(targets.get((s, e)) for s in present):
            handles.append(Line2D([], [], color="0.3", ls="--", label="dashed: c_t, Dynamic's FOSC "
                                  "stopping target this epoch (one line per distinct seed value)"))
        _fosc_axes(zoom, full, e, lo, hi)
        key.axis("off")
        key.legend(handles=handles, fontsize=6, loc="upper center", title=f"epoch {e}", title_fontsize=7)
    parts = ["FOSC of the training examples' adversarial points, seeds pooled", f"(cf. Figs. 3a, 3c, 5 of {PAPER})",
             "low FOSC = the inner maximisation is well solved",
             f"top: the paper's range [{SHARE_RANGE[0]:g}, {SHARE_RANGE[1]:g}], bottom: the whole distribution",
             "(the tail not drawn counted in the legend)"]
    if len(epochs) < 2:  # one column: a line each, or the title is wider than the figure
        fig.suptitle("\n".join(parts), fontsize=9)
    else:
        fig.suptitle(f"{parts[0]} {parts[1]}\n{parts[2]}; {parts[3]} {parts[4]}", fontsize=9)
    return fig


def _fosc_axes(zoom, full, epoch: int, lo: float, hi: float) -> None:
    zoom.set_xlim(*SHARE_RANGE)
    zoom.set_title(f"epoch {epoch}: FOSC in the paper's [{SHARE_RANGE[0]:g}, {SHARE_RANGE[1]:g}] "
                   f"({ZOOM_BINS} bins)", fontsize=9)
    full.set_xlim(lo, hi)
    full.axvspan(*SHARE_RANGE, color="0.9", zorder=0)
    full.set_title(f"epoch {epoch}: up to the 99th percentile ({FULL_BINS} bins; "
                   f"grey: [{SHARE_RANGE[0]:g}, {SHARE_RANGE[1]:g}])", fontsize=9)
    for ax in (zoom, full):
        ax.set_xlabel("FOSC of the training example's adversarial point")
        ax.set_ylabel("% of the setting's examples per bin", fontsize=8)
        ax.grid(alpha=0.3)


# --- robustness against a swept option ---------------------------------------------------------
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


def sweep_lines(cells, key: str) -> tuple[dict[str, list], list[str]]:
    """The cells that have `key`, a line per combination of their other grid values (the seed
    aside), labelled by the values that vary between those cells: ({label: [cells]}, those keys).
    A combination met at one value of `key` alone is no line: a point sweeps nothing, and
    [[exclude]] leaves one value where the key does not apply (FGSM-RS's `steps`)."""
    rest = {c.name: {k: v for k, v in c.values.items() if k not in ("seed", key)} for c in cells if key in c.values}
    varying = [k for k in dict.fromkeys(k for r in rest.values() for k in r)
               if len({repr(r.get(k)) for r in rest.values()}) > 1]
    lines: dict[str, list] = {}
    for c in cells:
        if c.name in rest:
            words = ", ".join(str(rest[c.name].get(k)) if k == "method" else f"{k} {rest[c.name].get(k)}"
                              for k in varying)
            lines.setdefault(words or "mean over seeds", []).append(c)
    return {words: members for words, members in lines.items()
            if len({repr(c.values[key]) for c in members}) > 1}, varying


def sweep_citation(spec, key: str) -> str | None:
    """The paper's figure that sweeps `key`, or None; Fig. 4b tests at the training eps, so an
    eps sweep evaluated at fixed [eval] eps cites nothing."""
    if key == "eps" and spec.eval.eps:
        return None
    return SWEPT_FIGURE.get(key)


def sweep_figure(spec, cells, key: str):
    """Robust accuracy against `key` (a column per checkpoint): see the module's docstring; None
    where no combination of the other grid values meets two values of `key`."""
    from minidyn.studies.results import CHECKPOINT_WORDS, baseline_words, label

    lines, others = sweep_lines(cells, key)
    if not lines:
        return None
    column = _robust_column(spec)
    checkpoints = list(spec.eval.checkpoints)
    fig, axes = figure(max(5.5 * len(checkpoints), 6.5), 8.0, ncols=len(checkpoints), nrows=2, sharex="col")
    position, numeric = _positions(spec, key)
    span = (max(position.values()) - min(position.values())) or 1.0
    baseline_drawn = any(_is_baseline(spec, c) for members in lines.values() for c in members)
    for j, which in enumerate(checkpoints):
        top, bottom = axes[0, j], axes[1, j]
        for i, (colour, (words, members)) in enumerate(zip(line_colours(len(lines)), lines.items())):
            dodge = (i - (len(lines) - 1) / 2) * 0.02 * span   # keeps the lines' bars apart
            _sweep_line(spec, cells, key, which, column, members, position, dodge, colour, words, top, bottom)
        bottom.axhline(0, color="0.2", lw=0.8, zorder=0)
        top.set_title(CHECKPOINT_WORDS[which], fontsize=9)
        top.set_ylabel(f"test {label(column)} accuracy (%)")
        bottom.set_ylabel("difference to the baseline (points)")
        bottom.set_xlabel(key.replace("_", " ") + (" (fraction of eps)" if key == "step_size" else ""))
        if not numeric:
            bottom.set_xticks(list(position.values()), [str(v) for v in spec.grid[key]], fontsize=7)
        bottom.legend(handles=_difference_handles(baseline_drawn), fontsize=7, title_fontsize=7,
                      title=f"baseline: {baseline_words(spec)}, same other values\nbars: {T_WORDS}")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", fontsize=7,
               ncol=_columns(list(lines), max(5.5 * len(checkpoints), 6.5)),
               title=f"top: point the mean, bars {STD_WORDS.replace(' (', chr(10) + '(')};\n"
                     "bottom: the same line's difference to the baseline",
               title_fontsize=7)
    cite = sweep_citation(spec, key)
    fig.suptitle(f"Robustness against {key}" + (f" (cf. {cite} of {PAPER})" if cite else "")
                 + f"\n{'a line per ' + ', '.join(others) if others else 'one line'}"
                 f" (settings never pooled)\ntop: mean ± 1 sample std over seeds\nbottom: the paired "
                 f"difference to the baseline, seed by seed, with its 95% t interval", fontsize=9)
    return (f"sweep_{key}.png", fig,
            f"Test {label(column)} accuracy against {key}, a line per combination of the other grid keys: "
            f"top the mean over seeds, bars {STD_WORDS}; bottom the difference to the baseline "
            f"({baseline_words(spec)}) seed by seed, bars its {T_WORDS}")


def _is_baseline(spec, cell) -> bool:
    """Whether the cell has every grid value of [report] baseline (False without one)."""
    baseline = spec.report.get("baseline") or {}
    return bool(baseline) and all(cell.values.get(k) == v for k, v in baseline.items())


def _difference_handles(baseline_drawn: bool) -> list:
    """The bottom panel's legend: the zero line, and the hollow marker where the baseline is on a line."""
    from matplotlib.lines import Line2D

    zero = Line2D([], [], color="0.2", lw=0.8, label="0: no difference to the baseline")
    itself = Line2D([], [], color="0.2", marker="o", mfc="none", ls="none", label="the baseline itself")
    return [zero, itself] if baseline_drawn else [zero]


def _sweep_line(spec, cells, key, which, column, members, position, dodge, colour, words, top, bottom) -> None:
    """One line of a sweep figure: mean ± 1 std on `top`, the paired difference to the
    baseline with its t interval on `bottom` (a hollow marker at 0 for the baseline itself)."""
    from minidyn.evaluation.aggregate import paired_difference
    from minidyn.studies.results import accuracy, baseline_setting

    by_x: dict[float, list] = {}
    for c in members:
        by_x.setdefault(position[repr(c.values[key])], []).append(c)
    xs = sorted(by_x)
    ys = [[accuracy(c, which, None, column) for c in by_x[x]] for x in xs]
    mean, std = zip(*[(m[0], s[0]) for m, s in (_mean_std(np.array([y], dtype=float).T) for y in ys)])
    n = sorted({len(y) for y in ys})
    top.errorbar(np.add(xs, dodge), mean, yerr=std, color=colour, marker="o", capsize=3,
                 label=f"{words} (n={'-'.join(map(str, (n[0], n[-1])) if n[0] != n[-1] else str(n[0]))})")
    for x in xs:
        setting = by_x[x][0].setting
        base = baseline_setting(spec, cells, setting)
        if base is None:
            if _is_baseline(spec, by_x[x][0]):
                bottom.plot(x + dodge, 0, marker="o", mfc="none", color=colour)
            continue
        d = paired_difference({c.seed: accuracy(c, which, None, column) for c in by_x[x]},
                              {b.seed: accuracy(b, which, None, column) for b in cells if b.setting == base})
        if d.n:
            yerr = None if d.low is None else [[d.mean - d.low], [d.high - d.mean]]
            bottom.errorbar([x + dodge], [d.mean], yerr=yerr, color=colour, marker="s", capsize=3)


def _side_by_side(mean_x: dict[str, float], gap: float = 0.012) -> dict[str, float]:
    """An x shift per setting that sets apart settings of (nearly) the same mean cost: those
    within `gap` of the axis' span of each other are spread `gap` of the span apart, centred on
    their cost; a setting alone at its cost is not moved."""
    xs = list(mean_x.values())
    span = (max(xs) - min(xs)) if xs else 0.0
    span = span or max(max(map(abs, xs), default=1.0), 1.0)
    shift, group = {s: 0.0 for s in mean_x}, []
    for s in sorted(mean_x, key=mean_x.get) + [None]:
        if s is None or (group and mean_x[s] - mean_x[group[0]] > gap * span):
            for i, member in enumerate(group):
                shift[member] = (i - (len(group) - 1) / 2) * gap * span
            group = []
        if s is not None:
            group.append(s)
    return shift


# --- robustness against the test eps -----------------------------------------------------------
def eps_curve_figure(spec, cells):
    """Robust accuracy at the last epoch against the [eval] test eps, a line per setting."""
    from minidyn.studies.results import accuracy, eps_keys, label

    column = _robust_column(spec)
    keys = eps_keys(cells)
    settings = _settings(cells)
    fig, axes = figure(5.5, 3.8 + 0.16 * len(settings) / _columns(settings, 5.5))   # room for the legend
    ax = axes[0][0]
    for colour, setting in zip(line_colours(len(settings)), settings):
        members = [c for c in cells if c.setting == setting]
        ys = np.array([[accuracy(c, "last", k, column) for k in keys] for c in members], dtype=float)
        mean, std = _mean_std(ys)
        ax.errorbar([float(k) for k in keys], mean, yerr=std, color=colour, marker="o", capsize=3,
                    label=f"{setting} (n={len(members)})")
    ax.set_xlabel("test eps")
    ax.set_ylabel(f"{label(column)} accuracy, last epoch (%)")
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7, title_fontsize=7,
               ncol=_columns(settings, 5.5), title=f"point: the mean; bars: {STD_WORDS.replace(' (', chr(10) + '(')}")
    fig.suptitle(f"Robustness against the test eps, mean over seeds,\nbars ±1 sample std over seeds "
                 f"(cf. Fig. 4a of {PAPER})", fontsize=9)
    return ("eps_curve.png", fig,
            f"Test {label(column)} accuracy against the test eps, last epoch: point the mean, bars {STD_WORDS}")


# --- the accuracy-cost frontier ----------------------------------------------------------------
FRONTIER_ATTACKS = ("autoattack", "apgd-ce", "pgd20")  # the strongest first


def frontier_column(spec) -> str:
    """The attack of the frontier: the first of FRONTIER_ATTACKS in [eval], else the robust column."""
    return next((a for a in FRONTIER_ATTACKS if a in spec.eval.attacks), _robust_column(spec))


def frontier_figure(spec, cells):
    """Robust accuracy against the training attack's gradient evaluations per example: a point
    per cell, the setting's mean ± 1 sample std over seeds on both axes (module docstring)."""
    from minidyn.studies.results import CHECKPOINT_WORDS, accuracy, label

    column = frontier_column(spec)
    which = "best" if "best" in spec.eval.checkpoints else spec.eval.checkpoints[0]
    settings = _settings(cells)
    fig, axes = figure(7.5, 5.5 + 0.16 * len(settings) / _columns(settings, 7.5))
    ax = axes[0][0]
    points = {}
    for setting in settings:
        members = [c for c in cells if c.setting == setting and c.grad_evals is not None]
        xy = np.array([[c.grad_evals, accuracy(c, which, None, column)] for c in members], dtype=float)
        xy = xy[np.all(np.isfinite(xy), axis=1)] if len(xy) else xy
        if len(xy):
            points[setting] = xy
    shift = _side_by_side({s: float(xy[:, 0].mean()) for s, xy in points.items()})
    for colour, setting in zip(line_colours(len(settings)), settings):
        if setting not in points:
            continue
        xy = points[setting]
        ax.scatter(xy[:, 0] + shift[setting], xy[:, 1], color=colour, s=12, alpha=0.6)
        (mx, my), (sx, sy) = _mean_std(xy)
        ax.errorbar([mx + shift[setting]], [my], xerr=[sx] if np.isfinite(sx) else None,
                    yerr=[sy] if np.isfinite(sy) else None,
                    color=colour, marker="D", markersize=6, capsize=3, label=f"{setting} (n={len(xy)})")
    ax.set_xlabel("training attack: gradient evaluations per example (all epochs)")
    ax.set_ylabel(f"test {label(column)} accuracy (%), {CHECKPOINT_WORDS[which]}")
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7,
               ncol=_columns(settings, 7.5), title_fontsize=7,
               title=f"dot: one seed; diamond: the mean, bars {STD_WORDS.replace(' (', chr(10) + '(')}"
                     + ("\nsettings of the same cost drawn side by side (x shifted by up to "
                        f"{max(map(abs, shift.values())):.2g})" if any(shift.values()) else ""))
    two_pass = {m.get("method") for c in cells for m in c.metrics[:1]} & {"trades", "mart"}
    fig.suptitle(f"The accuracy-cost frontier: test {label(column)} accuracy against the training "
                 "attack's cost" + ("\n(TRADES' and MART's SGD step costs one pass per example more, "
                                    "not on this axis)" if two_pass else ""), fontsize=9)
    return ("frontier.png", fig,
            f"Test {label(column)} accuracy ({CHECKPOINT_WORDS[which]}) against the training attack's "
            f"gradient evaluations per example: a dot per cell, the setting's mean with bars {STD_WORDS}")
