"""The report of a study: every number of every cell, aggregated over seeds, as tables and figures.

    write_report("studies/t1")   # -> studies/t1/report/{report.md, results.csv, results.json, *.png}

A *setting* is a cell's grid values without the seed; its cells are the replicates. Per setting,
checkpoint (last epoch / best on validation) and test eps: mean and sample std over seeds of
every attack's accuracy (Table 1's layout), and the paired difference to the baseline method's
setting with the same other values, seed by seed, with its 95% Student t interval
(minidyn.evaluation.aggregate, as `minidyn compare`). Where the cells saved which test examples
each attack left correct (minidyn.studies.examples), every mean and difference also gets a
two-way bootstrap interval over seeds and test examples (minidyn.evaluation.bootstrap), a
comparison of one seed per side the exact McNemar test, and the comparisons the spec declares
primary ([report] primary) Holm-adjusted p-values (minidyn.evaluation.significance). Cells that
are not done, and failed black-box tasks, are listed and left out of the means, never
silently: each mean says its n.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from minidyn.evaluation import bootstrap, table1
from minidyn.evaluation.aggregate import paired_difference, summarize
from minidyn.errors import MinidynError
from minidyn.evaluation.significance import holm, mcnemar_exact, paired_t_p
from minidyn.files.fileio import atomic_write
from minidyn.studies import fig1a, figures, fosc_share
from minidyn.studies.results import (CHECKPOINT_WORDS, CellResult, accuracy, baseline_setting,  # noqa: F401
                                     other_baseline_key,
                                     baseline_words, collect, columns, eps_keys, label,
                                     settings_of, stacked)
from minidyn.studies.spec import Spec, cell_name, primary_baseline
from minidyn.studies.tasks import StudyDir


def table(spec: Spec, cells: list[CellResult], which: str, eps_key: str | None = None,
          black: bool = False) -> list[dict]:
    """One row per setting: {"setting", "values" (its grid values), "seeds", "examples" (test
    examples per cell, None without per-example files), "columns": {col: Summary dict},
    "bootstrap": {col: Bootstrap dict or None}, "difference": {col: Difference dict} (None for
    the baseline), "difference_bootstrap", "mcnemar" (one seed per side), "grad_evals",
    "train_minutes"}."""
    rows = []
    cols = columns(spec) if not black else [c for c in columns(spec) if c != "clean"]
    for setting in settings_of(cells):
        members = [c for c in cells if c.setting == setting and c.state == "done"]
        values = next({k: v for k, v in c.values.items() if k != "seed"} for c in cells if c.setting == setting)
        row = {"setting": setting, "values": values, "seeds": [c.seed for c in members], "examples": None,
               "columns": {}, "bootstrap": {}, "difference": None}
        for col in cols:
            row["columns"][col] = vars(summarize(accuracy(c, which, eps_key, col, black) for c in members))
            matrix = stacked(members, which, eps_key, col, black)
            row["bootstrap"][col] = None if matrix is None else vars(bootstrap.two_way_bootstrap(matrix))
            row["examples"] = row["examples"] or (None if matrix is None else matrix.shape[1])
        base = baseline_setting(spec, cells, setting)
        if base is not None:
            row["baseline"] = base
            _differences(row, cols, members, [c for c in cells if c.setting == base and c.state == "done"],
                         which, eps_key, black)
        row["grad_evals"] = vars(summarize(c.grad_evals for c in members))
        row["train_minutes"] = vars(summarize(None if c.train_seconds is None else c.train_seconds / 60
                                              for c in members))
        rows.append(row)
    return rows


def _differences(row: dict, cols: list[str], members: list[CellResult], base_members: list[CellResult],
                 which: str, eps_key: str | None, black: bool) -> None:
    """row's paired differences to the baseline's cells, seed by seed: the t interval over
    seeds, the two-way bootstrap of the per-example differences of the shared seeds (the same
    seeds and examples on both sides), and with one shared seed the exact McNemar test."""
    row.update(difference={}, difference_bootstrap={}, mcnemar={})
    by_seed = {b.seed: b for b in base_members}
    pairs = [(c, by_seed[c.seed]) for c in members if c.seed in by_seed]
    for col in cols:
        d = paired_difference({c.seed: accuracy(c, which, eps_key, col, black) for c in members},
                              {s: accuracy(b, which, eps_key, col, black) for s, b in by_seed.items()})
        row["difference"][col] = vars(d)
        both = stacked([c for c, _ in pairs] + [b for _, b in pairs], which, eps_key, col, black)
        ours, theirs = (None, None) if both is None else (both[:len(pairs)], both[len(pairs):])
        row["difference_bootstrap"][col] = None if both is None else vars(
            bootstrap.two_way_bootstrap(ours.astype(np.int8) - theirs))
        row["mcnemar"][col] = vars(mcnemar_exact(ours[0], theirs[0])) if both is not None and len(pairs) == 1 else None


class Tally:
    """How many intervals the report prints (counted as they are formatted)."""

    def __init__(self):
        self.t = self.bootstrap = 0


def starred(low: float | None, high: float | None) -> bool:
    """An interval that excludes 0 and has positive width. A zero-width interval (every seed,
    or every resample, gave the same number) shows too little data, not certainty."""
    return low is not None and high is not None and high > low and (low > 0 or high < 0)


def _mean_std(s: dict, digits: int = 2, boot: dict | None | bool = False, tally: Tally | None = None) -> str:
    """'84.00 ± 2.65 (n=3)', then the bootstrap interval ' [81.25, 86.50]' (' [n/a]' where None;
    nothing where `boot` is False)."""
    if not s["n"]:
        return "-"
    text = f"{s['mean']:.{digits}f}" + ("" if s["std"] is None else f" ± {s['std']:.{digits}f}") + f" (n={s['n']})"
    if boot is False:
        return text
    if boot is None:
        return text + " [n/a]"
    if tally is not None:
        tally.bootstrap += 1
    return text + f" [{boot['low']:.{digits}f}, {boot['high']:.{digits}f}]"


def _difference(d: dict | None, boot: dict | None = None, test: dict | None = None,
                tally: Tally | None = None, primary: bool = False) -> str:
    """'+2.00; t [+0.52, +3.48] *; boot [-1.20, +5.10]' (n/a for a missing bootstrap; with one
    seed per side the exact McNemar p)."""
    if d is None or not d["n"]:
        return "-"
    parts = [f"{d['mean']:+.2f}" + (" (n=1)" if d["n"] == 1 else "")]
    if d["low"] is not None:
        parts.append(f"t [{d['low']:+.2f}, {d['high']:+.2f}]" + (" *" if starred(d["low"], d["high"]) else ""))
        if tally is not None:
            tally.t += 1
    if boot is None:
        parts.append("boot n/a")
    else:
        parts.append(f"boot [{boot['low']:+.2f}, {boot['high']:+.2f}]" + (" *" if starred(boot["low"], boot["high"]) else ""))
        if tally is not None:
            tally.bootstrap += 1
    if test is not None:
        parts.append(f"McNemar p {test['p']:.3g} ({test['k_ab']}:{test['k_ba']})")
    return "; ".join(parts) + ("; **primary**" if primary else "")


def markdown_table(spec: Spec, rows: list[dict], black: bool = False, tally: Tally | None = None) -> str:
    cols = columns(spec) if not black else [c for c in columns(spec) if c != "clean"]
    head = ["setting"] + [label(c) for c in cols] + ([] if black else ["grad evals / example", "train min"])
    lines = []
    for r in rows:
        cells = [r["setting"]] + [_mean_std(r["columns"][c], boot=r["bootstrap"][c], tally=tally) for c in cols]
        if not black:
            cells += [_mean_std(r["grad_evals"], 1), _mean_std(r["train_minutes"], 1)]
        lines.append(cells)
    return table1.markdown(head, lines)


def markdown_differences(spec: Spec, rows: list[dict], black: bool = False, tally: Tally | None = None,
                         primary: set | None = None) -> str:
    """The differences table; `primary`: the (setting, column) pairs the spec declares primary."""
    cols = columns(spec) if not black else [c for c in columns(spec) if c != "clean"]
    diff_rows = [r for r in rows if r["difference"] is not None]
    if not diff_rows:
        return ""
    head = ["setting - baseline"] + [label(c) for c in cols]
    return table1.markdown(head, [[f"{r['setting']} - {r['baseline']}"] + [
        _difference(r["difference"][c], r["difference_bootstrap"][c], r["mcnemar"][c], tally,
                    (r["setting"], c) in (primary or set())) for c in cols] for r in diff_rows])


def csv_rows(spec: Spec, cells: list[CellResult]) -> list[dict]:
    """Every number of every finished cell: one row per (cell, checkpoint, kind, eps, attack)."""
    rows = []
    for c in cells:
        for kind, results in (("white-box", c.white), ("black-box", c.black)):
            for which, result in results.items():
                for eps_key, evaluation in result["eps"].items():
                    for attack, acc in evaluation["accuracy"].items():
                        rows.append({"cell": c.name, "setting": c.setting, "seed": c.seed,
                                     "checkpoint": which, "epoch": result.get("epoch"), "kind": kind,
                                     "eps": float(eps_key), "attack": attack, "accuracy": acc,
                                     "n": evaluation["n"], "grad_evals_per_example": c.grad_evals,
                                     "train_seconds": c.train_seconds})
    return rows


def write_report(study_dir: str | Path) -> list[Path]:
    """Write STUDY/report/ and return the paths written."""
    study = StudyDir(study_dir)
    spec = study.spec()
    cells = collect(study, spec)
    out = study.path / "report"
    try:
        out.mkdir(exist_ok=True)
    except OSError as error:
        raise MinidynError(f"cannot create {out}: {error.strerror or error}") from None
    numbers = {"study": spec.name, "cells": [_cell_numbers(c) for c in cells], "tables": {},
               "bootstrap": {"method": bootstrap.METHOD, "resamples": bootstrap.RESAMPLES,
                             "level": bootstrap.LEVEL, "seed": bootstrap.SEED}}
    tally = Tally()
    targets = primary_targets(spec, cells)
    tables = _table_sections(spec, cells, numbers, tally, targets)
    primary = numbers["primary"] = primary_results(targets, numbers["tables"], spec, cells)
    shares = fosc_share.fosc_tables(study, spec, cells)
    numbers["tables"].update(shares)
    for key, rows in shares.items():
        tables += fosc_share.markdown(rows, int(key.split("=")[1]), tally)
    halves = fig1a.fig1a_tables(study, spec, cells)
    numbers["tables"].update(halves)
    for key, rows in halves.items():
        tables += fig1a.markdown(rows, key.split("/")[1], tally)
    numbers["intervals"] = {"t": tally.t, "bootstrap": tally.bootstrap}
    sections = [f"# Study {spec.name}", "", f"Made by `minidyn study report {study.path}` from "
                f"`{study.spec_file}`.", "", *_state_lines(cells), "", *_reading_lines(spec, cells, tally), "",
                *_primary_lines(primary), *_best_lines(spec, cells, numbers), *tables]
    written = []
    if figures.available():
        sections += ["## Figures", ""]
        try:
            drawn = figures.plot_all(spec, cells, out)
        except OSError as error:  # matplotlib's own write: its OSError may name no file
            raise MinidynError(f"cannot write the figures (PNG) in {out}: {error.strerror or error}"
                               + (f" ({error.filename})" if error.filename else "")) from None
        for name, caption in drawn:
            sections += [f"![{caption}]({name})", "", f"*{caption}*", ""]
            written.append(out / name)
    else:
        sections += ["(matplotlib is not installed: `pip install 'minidyn[plot]'` for the figures)", ""]
    report = out / "report.md"
    atomic_write(report, lambda f: f.write("\n".join(sections)))
    _write_csv(out / "results.csv", csv_rows(spec, cells))
    atomic_write(out / "results.json", lambda f: json.dump(numbers, f, indent=1, default=_plain))
    return [report, out / "results.csv", out / "results.json", *written]


def _cell_numbers(cell: CellResult) -> dict:
    """A cell for results.json: its per-example arrays reduced to whether it has them."""
    return vars(cell) | {"metrics": None, "examples": cell.examples is not None,
                         "black_examples": cell.black_examples is not None}


def _table_sections(spec: Spec, cells: list[CellResult], numbers: dict, tally: Tally, targets: list[dict]) -> list[str]:
    """The markdown of every white-box and black-box table (numbers["tables"] gets their rows);
    `targets`: the primary comparisons (primary_targets), marked in the table of their baseline."""
    primary = {(t["table"], t["setting"], t["column"]) for t in targets
               if t["baseline"] == baseline_setting(spec, cells, t["setting"])}
    sections = []
    for which in spec.eval.checkpoints:
        for eps_key in eps_keys(cells, which) or [None]:
            key = f"{which}/eps={eps_key}"
            rows = numbers["tables"][key] = table(spec, cells, which, eps_key)
            title = f"White-box accuracy (%), {CHECKPOINT_WORDS[which]}, test eps {float(eps_key):g}" \
                if eps_key else f"White-box accuracy (%), {CHECKPOINT_WORDS[which]}"
            sections += [f"## {title}", "", _means_words(rows), "", markdown_table(spec, rows, tally=tally), ""]
            diffs = markdown_differences(spec, rows, tally=tally, primary=_of_table(primary, key))
            if diffs:
                sections += [_differences_words(spec, rows), "", diffs, ""]
            sections += _other_baselines(spec, cells, numbers, tally, key, which, eps_key, targets)
    if any(c.black for c in cells):
        for which in spec.eval.checkpoints:
            key = f"blackbox/{which}"
            rows = numbers["tables"][key] = table(spec, cells, which, None, black=True)
            sections += [f"## Black-box accuracy (%), {CHECKPOINT_WORDS[which]} (cf. Table 2)", "",
                         "attacks crafted on each seed's surrogate (the next seed's "
                         f"{json.dumps(spec.eval.surrogate)} cell). {_means_words(rows)}", "",
                         markdown_table(spec, rows, black=True, tally=tally), ""]
            diffs = markdown_differences(spec, rows, black=True, tally=tally, primary=_of_table(primary, key))
            if diffs:
                sections += [_differences_words(spec, rows), "", diffs, ""]
    return sections


def other_baselines(spec: Spec) -> list[dict]:
    """The whole baselines ([report] baseline's values with the primary's own over them,
    spec.primary_baseline) of the [report] primary comparisons that name their own and differ
    from [report] baseline (the equal-cost Standard's, say): each once, by name, in spec order."""
    found = {}
    for item in spec.report.get("primary", []):
        merged = primary_baseline(spec, item)
        if item.get("baseline") and merged != spec.report["baseline"]:
            found.setdefault(other_baseline_key("", merged), merged)
    return list(found.values())


def _other_baselines(spec: Spec, cells: list[CellResult], numbers: dict, tally: Tally, key: str,
                     which: str, eps_key: str | None, targets: list[dict]) -> list[str]:
    """For each other_baselines(spec), every setting's paired differences to it in the white-box
    table `key` (each checkpoint and test eps gets one, so that claims find any of them; the
    black-box tables have none): a section, and numbers["tables"][other_baseline_key(key, ...)]
    = the rows. The primary `targets` compared with that baseline are marked; every other row
    is exploratory."""
    sections = []
    for merged in other_baselines(spec):
        other = dataclasses.replace(spec, report={**spec.report, "baseline": merged})
        rows = numbers["tables"][other_baseline_key(key, merged)] = table(other, cells, which, eps_key)
        baseline_of = {r["setting"]: r.get("baseline") for r in rows}
        marked = {(t["setting"], t["column"]) for t in targets
                  if t["table"] == key and baseline_of.get(t["setting"]) == t["baseline"]}
        diffs = markdown_differences(other, rows, tally=tally, primary=marked)
        if diffs:
            sections += [f"{_differences_words(other, rows)}. Another baseline, named by a [report] primary "
                         "comparison: every other row is exploratory", "", diffs, ""]
    return sections


def _of_table(primary: set, key: str) -> set:
    return {(setting, column) for table_key, setting, column in primary if table_key == key}


def _examples_words(rows: list[dict]) -> str:
    seeds = sorted({len(r["seeds"]) for r in rows if r["seeds"]})
    examples = sorted({r["examples"] for r in rows if r["examples"]})
    seed_words = "-".join(map(str, (seeds[0], seeds[-1]) if seeds[0] != seeds[-1] else seeds[:1])) if seeds else "0"
    return (f"{seed_words} seeds per setting, " + (f"{', '.join(map(str, examples))} test examples per cell"
                                                    if examples else "no per-example results"))


def _means_words(rows: list[dict]) -> str:
    return (f"mean ± sample std over seeds (n = seeds) [95% two-way bootstrap interval over seeds "
            f"and test examples; n/a: no per-example results]; {_examples_words(rows)}")


def _differences_words(spec: Spec, rows: list[dict]) -> str:
    return (f"Paired difference to {baseline_words(spec)}, seed by seed (points): mean; t [95% Student t "
            f"interval over seeds]; boot [95% two-way bootstrap interval over the shared seeds and test "
            f"examples]; * where an interval excludes 0 and has positive width; {_examples_words(rows)}")


# --- primary comparisons -----------------------------------------------------------------------
HOLM_WORDS = ("p is the larger of the two-way bootstrap p-value and the paired t test's over seeds "
              "(with one seed per side, the exact McNemar test's): the bootstrap includes the test "
              "sample's noise but with few seeds understates the seeds', the t test the reverse, and a "
              "primary claim should survive both. Holm-adjusted over the primary comparisons, which "
              "keeps the chance of any false finding among them at most 5% where adjusted p <= 0.05")


def primary_targets(spec: Spec, cells: list[CellResult]) -> list[dict]:
    """The comparisons [report] primary declares: {"table" (a numbers["tables"] key), "setting",
    "column", "kind", "checkpoint", "eps_key", "baseline" (the compared setting), "own_baseline"
    (whether the comparison names its own baseline values, spec.primary_baseline)}, one per
    matching setting that has a baseline, in spec order."""
    out = []
    for item in spec.report.get("primary", []):
        which = item["checkpoint"] or spec.eval.checkpoints[0]
        if item["kind"] == "black-box":
            keys = [(f"blackbox/{which}", None)]
        elif item["eps"] is not None:
            keys = [(f"{which}/eps={float(item['eps'])!r}", repr(float(item["eps"])))]
        else:
            keys = [(f"{which}/eps={k}", k) for k in eps_keys(cells, which) or [None]]
        for setting in settings_of(cells):
            values = next(c.values for c in cells if c.setting == setting)
            base = _setting_with(spec, cells, values, primary_baseline(spec, item))
            if all(values.get(k) == v for k, v in item["setting"].items()) and base is not None:
                out += [{"table": key, "setting": setting, "column": item["attack"], "kind": item["kind"],
                         "checkpoint": which, "eps_key": eps_key, "baseline": base,
                         "own_baseline": item.get("baseline") is not None} for key, eps_key in keys]
    return [dict(t) for t in dict.fromkeys(tuple(t.items()) for t in out)]


def _setting_with(spec: Spec, cells: list[CellResult], values: dict, baseline: dict) -> str | None:
    """The setting of `values` (a cell's grid values) with `baseline`'s values over them; None
    where that is the same setting or not in the study."""
    own = {k: v for k, v in values.items() if k != "seed"}
    wanted = {**own, **{k: v for k, v in baseline.items() if k in own}}
    if wanted == own:
        return None
    name = cell_name(wanted) or spec.name
    return name if any(c.setting == name for c in cells) else None


def primary_results(targets: list[dict], tables: dict, spec: Spec | None = None,
                    cells: list[CellResult] | None = None) -> list[dict]:
    """Each target with its difference, bootstrap interval, p-values ("p_bootstrap", "p_seeds":
    the t test's or with one seed McNemar's, "p": their maximum) and Holm-adjusted "holm" (None
    for all when any primary comparison has no p: the family is incomplete). A target with its
    own baseline is compared with it here (`spec`, `cells`), the rest read from the tables."""
    out = []
    for t in targets:
        if t.get("own_baseline"):
            row = _own_difference(t, cells)
        else:
            row = next((r for r in tables.get(t["table"], []) if r["setting"] == t["setting"]), None)
        found = row is not None and row["difference"] is not None
        d = row["difference"][t["column"]] if found else None
        boot = row["difference_bootstrap"][t["column"]] if found else None
        test = row["mcnemar"][t["column"]] if found else None
        p_seeds = test["p"] if test else (paired_t_p(d["mean"], d["std"], d["n"]) if d and d["n"] else None)
        p_values = [p for p in (None if boot is None else boot["p"], p_seeds) if p is not None]
        out.append({**t, "baseline": row.get("baseline") if found else None, "difference": d,
                    "bootstrap": boot, "p_bootstrap": None if boot is None else boot["p"], "p_seeds": p_seeds,
                    "p": max(p_values) if p_values else None, "holm": None})
    if out and all(r["p"] is not None for r in out):
        for r, adjusted in zip(out, holm([r["p"] for r in out])):
            r["holm"] = adjusted
    return out


def _own_difference(t: dict, cells: list[CellResult]) -> dict:
    """The paired difference of t's setting to t's own baseline setting, as a table row has it."""
    done = [c for c in cells if c.state == "done"]
    row = {"baseline": t["baseline"]}
    _differences(row, [t["column"]], [c for c in done if c.setting == t["setting"]],
                 [c for c in done if c.setting == t["baseline"]], t["checkpoint"], t["eps_key"],
                 t["kind"] == "black-box")
    return row


def _primary_lines(primary: list[dict]) -> list[str]:
    if not primary:
        return ["No comparison is declared primary (`[report] primary`): every interval below is "
                "exploratory.", ""]
    lines = ["## Primary comparisons", "", "Declared in `[report] primary`, marked **primary** in the "
             f"tables below; every other interval is exploratory. {HOLM_WORDS}.", "",
             "| comparison | table | attack | difference | bootstrap p | seeds p | p | Holm-adjusted p |",
             "|---|---|---|---|---|---|---|---|"]
    for r in primary:
        comparison = f"{r['setting']} - {r['baseline']}" if r["baseline"] else r["setting"]
        ps = ["n/a" if r[k] is None else f"{r[k]:.3g}" for k in ("p_bootstrap", "p_seeds", "p", "holm")]
        lines.append(f"| {comparison} | {r['table']} | {label(r['column'])} | "
                     f"{_difference(r['difference'], r['bootstrap'])} | {' | '.join(ps)} |")
    return lines + [""]


# --- how to read it; what "best" chose ----------------------------------------------------------
def _reading_lines(spec: Spec, cells: list[CellResult], tally: Tally) -> list[str]:
    have = sum(c.examples is not None for c in cells if c.state == "done")
    done = sum(c.state == "done" for c in cells)
    return ["## How to read the numbers", "",
            "- `±` is the sample standard deviation over seeds (ddof 1); `(n=...)` the number of seeds.",
            f"- `[low, high]` after a mean, and `boot [low, high]` after a difference: the 95% "
            f"{bootstrap.METHOD}, {bootstrap.RESAMPLES:,} resamples, bootstrap seed {bootstrap.SEED}; "
            "for a difference both sides get the same resampled seeds and test examples. It includes "
            "the noise of the finite test sample, which the spread over seeds does not. `n/a`: the "
            f"cells have no per-example results (studies evaluated before them); {have} of {done} "
            "done cells have them.",
            "- `t [low, high]`: the 95% Student t interval of the paired difference over seeds "
            "(seed-to-seed noise only; on the same test examples for every cell). With few seeds "
            "the bootstrap understates the seed-to-seed noise (3 seeds give 10 distinct seed "
            "resamples) and can be narrower than the t interval: read both; a difference is "
            "supported where both exclude 0.",
            "- `*`: the interval excludes 0 and has positive width. A zero-width interval (every seed "
            "gave the same difference) is never starred: it shows too few seeds, not certainty.",
            "- `McNemar p (a:b)`: with one seed per side, the exact two-sided McNemar test of the two "
            "models on the same test examples (a examples right only under the setting, b only under "
            "the baseline).",
            f"- This report prints {tally.t + tally.bootstrap} intervals ({tally.t} t, {tally.bootstrap} "
            "bootstrap), each at 95% on its own: around a true difference of 0, about one interval in "
            "20 excludes 0 by chance. Only the primary comparisons are corrected for multiplicity."]


def _best_lines(spec: Spec, cells: list[CellResult], numbers: dict) -> list[str]:
    """Which epoch each seed's best-on-validation checkpoint holds, and on how many validation
    examples it was chosen (numbers["best_epochs"] gets the rows)."""
    rows = numbers["best_epochs"] = [_best_row(c) for c in cells if c.state == "done" and c.white.get("best")]
    if not rows:
        return []
    lines = ["## The checkpoint chosen on validation", "",
             "The epoch whose validation PGD accuracy was the highest (the first of ties); a "
             "validation accuracy on n examples has a binomial standard error of "
             "sqrt(p (1 - p) / n).", "",
             "| cell | epoch chosen | of epochs | validation PGD acc (%) | its std error | validation examples (PGD / clean) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["val_pgd_acc"] is None else f"{r['val_pgd_acc']:.2f}"
        se = "-" if r["std_error"] is None else f"{r['std_error']:.2f}"
        lines.append(f"| {r['cell']} | {r['epoch'] if r['epoch'] is not None else '-'} | {r['epochs']} | "
                     f"{acc} | {se} | {r['val_pgd_n'] if r['val_pgd_n'] is not None else '-'} / "
                     f"{r['val_clean_n'] if r['val_clean_n'] is not None else '-'} |")
    return lines + [""]


def _best_row(cell: CellResult) -> dict:
    """The best checkpoint's epoch (counted from 1, as its meta records the epochs done) and the
    validation record of that epoch in metrics.jsonl."""
    epoch = cell.white["best"].get("epoch")
    record = next((r for r in cell.metrics if epoch is not None and r["epoch"] == epoch - 1), {})
    acc, n = record.get("val_pgd_acc"), record.get("val_pgd_n")
    se = 100 * math.sqrt(acc / 100 * (1 - acc / 100) / n) if acc is not None and n else None
    return {"cell": cell.name, "seed": cell.seed, "epoch": epoch, "epochs": len(cell.metrics),
            "val_pgd_acc": acc, "std_error": se, "val_pgd_n": n, "val_clean_n": record.get("val_clean_n")}


def _write_csv(path: Path, rows: list[dict]) -> None:
    text = table1.csv_text(rows)
    atomic_write(path, lambda f: f.write(text))


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _state_lines(cells: list[CellResult]) -> list[str]:
    lines = [f"{sum(c.state == 'done' for c in cells)} of {len(cells)} cells done."]
    for state in ("failed", "unfinished", "not started"):
        names = [c.name for c in cells if c.state == state]
        if names:
            lines.append(f"- {state} (left out of every number below): {', '.join(names)}")
    for state, words in (("failed", "black-box task failed"), ("waiting", "black-box task not done")):
        names = [c.name for c in cells if c.black_state == state and (state == "failed" or c.state == "done")]
        if names:
            lines.append(f"- {words} (left out of the black-box tables): {', '.join(names)}")
    for c in cells:  # a tampered or broken result file: the cell (or its black-box result) is left out
        lines += [f"- invalid result of {c.name} (left out of every number it would enter; `minidyn "
                  f"study run` evaluates it again): {problem}" for problem in c.problems]
    return lines
