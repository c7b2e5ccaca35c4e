"""The share of training examples whose adversarial point has FOSC in the paper's [0, 0.1], with
intervals: the number behind Fig. 5 of Wang et al. (2019) ("late in training Dynamic's adversarial
examples converge best"), per setting and [report] fosc_epochs epoch.

    tables = fosc_tables(study, spec, cells)   # {"fosc/epoch=30": [row per setting], ...}

A seed's share is 100 x the fraction of its training examples with FOSC in [0, 0.1] (figures'
SHARE_RANGE, the figure legend's share; an example whose FOSC was not recorded is left out). Each seed holds out its own validation split,
so the training examples differ by seed: the interval of a setting's mean is the nested bootstrap
(seeds, then each seed's own examples; evaluation.bootstrap.nested_bootstrap), and a difference
to the baseline pairs the two settings' runs of one seed on that seed's examples, example by
example, beside the t interval over seeds. Rows have a report table's shape (report.table), with
the one column COLUMN, so that the claims table reads them as it reads accuracies.
"""
from __future__ import annotations

import numpy as np

from minidyn.evaluation.aggregate import paired_difference, summarize
from minidyn.evaluation.analysis import fosc_files
from minidyn.evaluation.bootstrap import nested_bootstrap
from minidyn.files.npyfile import read_fosc
from minidyn.studies.figures import SHARE_RANGE
from minidyn.studies.results import CellResult, baseline_setting, settings_of

COLUMN = "fosc-share"


def inside(cell_dir, epoch: int) -> np.ndarray | None:
    """float (n,) of one cell at `epoch` (from 1): 1 where FOSC is in SHARE_RANGE, 0 outside,
    NaN where not recorded; None without the file."""
    path = fosc_files(cell_dir).get(epoch)
    if path is None:
        return None
    values = read_fosc(path)
    lo, hi = SHARE_RANGE
    return np.where(np.isfinite(values), ((values >= lo) & (values <= hi)).astype(float), np.nan)


def fosc_tables(study, spec, cells: list[CellResult]) -> dict[str, list[dict]]:
    """{"fosc/epoch=E": rows} for each [report] fosc_epochs epoch some done cell has a file for
    (with some FOSC recorded)."""
    cell_of = {c.name: c for c in spec.cells()}
    tables = {}
    for epoch in spec.report.get("fosc_epochs") or [1]:
        arrays = {c.name: a for c in cells if c.state == "done"  # a run without FOSC recorded: left out
                  and (a := inside(study.cell_dir(cell_of[c.name]), epoch)) is not None and np.isfinite(a).any()}
        if arrays:
            tables[f"fosc/epoch={epoch}"] = _rows(spec, cells, arrays)
    return tables


def _rows(spec, cells: list[CellResult], arrays: dict) -> list[dict]:
    rows = []
    for setting in settings_of(cells):
        members = [c for c in cells if c.setting == setting and c.name in arrays]
        if not members:
            continue
        own = [arrays[c.name][np.isfinite(arrays[c.name])] for c in members]
        row = {"setting": setting, "values": {k: v for k, v in members[0].values.items() if k != "seed"},
               "seeds": [c.seed for c in members], "examples": min(a.size for a in own),
               "columns": {COLUMN: vars(summarize(100.0 * a.mean() for a in own))},
               "bootstrap": {COLUMN: vars(nested_bootstrap(own))}, "difference": None}
        base = baseline_setting(spec, cells, setting)
        base_members = {c.seed: c for c in cells if c.setting == base and c.name in arrays}
        if base is not None and base_members:
            row["baseline"] = base
            _difference(row, members, base_members, arrays)
        rows.append(row)
    return rows


def _difference(row: dict, members: list[CellResult], base_members: dict, arrays: dict) -> None:
    """row's paired difference to the baseline on each shared seed's examples recorded on both
    sides: the t interval over seeds and the nested bootstrap of the per-example differences.
    Runs of one seed with different training sets (another limit) pair by seed only, without
    the bootstrap."""
    pairs = {c.seed: (arrays[c.name], arrays[base_members[c.seed].name]) for c in members if c.seed in base_members}
    by_example = all(a.shape == b.shape for a, b in pairs.values())
    if by_example:
        pairs = {s: (a[m], b[m]) for s, (a, b) in pairs.items() if (m := np.isfinite(a) & np.isfinite(b)).any()}
    d = paired_difference({s: 100.0 * np.nanmean(a) for s, (a, _) in pairs.items()},
                          {s: 100.0 * np.nanmean(b) for s, (_, b) in pairs.items()})
    row["difference"] = {COLUMN: vars(d)}
    row["difference_bootstrap"] = {COLUMN: vars(nested_bootstrap([a - b for a, b in pairs.values()]))
                                   if by_example and pairs else None}
    row["mcnemar"] = {COLUMN: None}


def markdown(rows: list[dict], epoch: int, tally=None) -> list[str]:
    """The report's section for one epoch's table; `tally` (report.Tally) counts its intervals."""
    def interval(b):
        return "n/a" if b is None else f"[{b['low']:+.2f}, {b['high']:+.2f}]"

    lines = [f"## FOSC of the training examples' adversarial points, epoch {epoch}: share in "
             f"[{SHARE_RANGE[0]:g}, {SHARE_RANGE[1]:g}] (%)",
             "", "A seed's share of its training examples (cf. Fig. 5); mean ± sample std over seeds "
             "[95% nested bootstrap: seeds, then each seed's own training examples]; the difference to the "
             "baseline pairs each seed's two runs on that seed's examples: t [95% t interval over seeds], "
             "boot [the nested bootstrap of the per-example differences]. Exploratory: not corrected for "
             "multiplicity.", "", "| setting | share | seeds x training examples | setting - baseline |",
             "|---|---|---|---|"]
    for r in rows:
        c, b = r["columns"][COLUMN], r["bootstrap"][COLUMN]
        std = "" if c["std"] is None else f" ± {c['std']:.2f}"
        share = f"{c['mean']:.2f}{std} (n={c['n']}) [{b['low']:.2f}, {b['high']:.2f}]"
        counted = {"bootstrap": 1, "t": 0}
        diff = "-"
        d = None if r["difference"] is None else r["difference"][COLUMN]
        if d is not None and d["mean"] is not None:
            t = "" if d["low"] is None else f"; t [{d['low']:+.2f}, {d['high']:+.2f}]"
            diff = (f"{d['mean']:+.2f} vs {r['baseline']}{t}; boot "
                    f"{interval(r['difference_bootstrap'][COLUMN])}")
            counted["t"] += bool(t)
            counted["bootstrap"] += r["difference_bootstrap"][COLUMN] is not None
        if tally is not None:
            tally.t, tally.bootstrap = tally.t + counted["t"], tally.bootstrap + counted["bootstrap"]
        lines.append(f"| {r['setting']} | {share} | {len(r['seeds'])} x {r['examples']:,} | {diff} |")
    return lines + [""]
