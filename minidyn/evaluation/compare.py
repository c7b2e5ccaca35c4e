"""`minidyn compare RUN...` without its command line: which runs, where their numbers come from,
evaluating those without an eval.json, and the aggregation over seeds (Table 1's layout).

    found = compare_runs(["runs/a", "runs/b"], limit=1000, batch_size=256, seed=0, apgd_steps=100,
                         device="auto")
    print(markdown_table(found))

Runs that differ only in seed form a group (minidyn.evaluation.aggregate.group_runs); a group's
cell is the mean ± sample std over its runs, and with a baseline group the difference to it,
paired by seed, with its 95% t interval. The table's text is laid out by minidyn.evaluation.table1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from minidyn.errors import CheckpointError, ConfigError
from minidyn.evaluation import checkpoints, evaluate, table1
from minidyn.evaluation.aggregate import (flat_row, format_summary, grad_evals_per_example, group_runs,
                                          paired_difference, summarize_groups)
from minidyn.evaluation.attack_table import ATTACKS, DEFAULT_ATTACKS, WORST, WORST_LABEL
# load_checkpoint and evaluate_attacks are looked up on their modules when called (tests replace them)
from minidyn.evaluation.checkpoints import checkpoint_in, eps_of, read_meta, run_config, saved_white_box, test_set

COST = "grad_evals_per_example"
COLUMNS = (*DEFAULT_ATTACKS, WORST, COST)  # compare evaluates runs without an eval.json with DEFAULT_ATTACKS
HEADERS = {**{name: ATTACKS[name].label for name in DEFAULT_ATTACKS},
           "clean": "Clean",  # a table heading, capitalised
           WORST: WORST_LABEL, COST: "grad evals / example"}
COST_NOTE = ("grad evals / example: the training attacks' input-gradient evaluations (metrics.jsonl "
             "grad_evals) summed over all epochs, per training example; SGD's weight gradient is "
             "not counted.")


def _no_progress(label: str, total: int):
    return None, lambda: None


@dataclass
class Comparison:
    """What compare found: the groups (aggregate.Group), their table (summarize_groups entries
    with "runs" and, against a baseline, "vs_baseline"), the baseline group or None, {index of a
    group: {column: Difference}}, the common eps and n (None where the runs differ), the
    warnings and one record per run (evaluate_run)."""

    groups: list
    table: list[dict]
    base: object
    diffs: dict
    eps: float | None
    n: int | None
    warnings: list[str]
    records: list[dict]


def compare_runs(runs, *, limit: int, batch_size: int, seed: int, apgd_steps: int, device: str,
                 baseline: str | None = None, progress: Callable = _no_progress) -> Comparison:
    """Resolve, plan (every run checked before any is evaluated), evaluate where needed, group
    and aggregate `runs`; progress(label, total) -> (on_batch, close) shows each evaluation."""
    found, twice = resolve_runs(runs)
    configs = [run_config(path) or None for _, path in found]
    groups = group_runs(configs, [run for run, _ in found])
    base = baseline_group(groups, baseline)
    plans = plan_runs(found)  # before the first evaluation: a bad checkpoint or dataset fails now
    records = [evaluate_run(run, path, cfg, plan, limit=limit, batch_size=batch_size, seed=seed,
                            apgd_steps=apgd_steps, device=device, progress=progress)
               for (run, path), cfg, plan in zip(found, configs, plans)]
    rows = [{**{c: r["accuracy"].get(c) for c in COLUMNS if c != COST}, COST: r[COST]} for r in records]
    table = summarize_groups(groups, rows, COLUMNS)
    warnings = twice + compare_warnings(groups, records)
    diffs = baseline_differences(groups, rows, base)
    for index, (group, entry) in enumerate(zip(groups, table)):
        entry["runs"] = [records[member] for member in group.members]
        if index in diffs:
            entry["vs_baseline"] = {c: vars(difference) for c, difference in diffs[index].items()}
    settings = {(record["eps"], record["n"]) for record in records}
    eps, n = next(iter(settings)) if len(settings) == 1 else (None, None)
    return Comparison(groups, table, base, diffs, eps, n, warnings, records)


def saved_eval(checkpoint) -> dict | None:
    """The white-box eval.json next to a checkpoint, None when there is none or it is not
    usable (black-box, no accuracies); one that minidyn.files.readers.read_eval refuses is a
    ConfigError."""
    evaluation = saved_white_box(checkpoint)
    usable = evaluation is not None and evaluation.get("source") is None \
        and isinstance(evaluation.get("accuracy"), dict)
    return evaluation if usable else None


def resolve_runs(runs) -> tuple[list[tuple[str, Path]], list[str]]:
    """([(RUN, its checkpoint)] with each checkpoint once, [notes on RUNs given twice]);
    ConfigError naming every RUN that is missing or holds no checkpoint, before anything is
    evaluated."""
    bad, out, seen, twice = [], [], {}, []
    for run in runs:
        if not Path(run).exists():
            bad.append(f"{run}: no such run directory or checkpoint")
            continue
        try:
            path = checkpoint_in(run)
        except CheckpointError as exc:
            bad.append(str(exc))
            continue
        if path.resolve() in seen:
            twice.append(f"{run} is the checkpoint of {seen[path.resolve()]} again; counted once")
        else:
            seen[path.resolve()] = run
            out.append((run, path))
    if bad:
        raise ConfigError("; ".join(bad) + ("" if len(bad) == 1 else f" ({len(bad)} of {len(runs)} runs)"))
    return out, twice


def baseline_group(groups, baseline: str | None):
    """The group labelled `baseline` (None without --baseline); ConfigError naming the groups
    when there is none."""
    if baseline is None:
        return None
    base = next((g for g in groups if g.label == baseline), None)
    if base is None:
        raise ConfigError(f"--baseline {baseline!r} is not a group of these runs; the groups are "
                          + ", ".join(repr(g.label) for g in groups))
    return base


def plan_runs(found) -> list[dict]:
    """Per run: its white-box eval.json, or {"eps", "data"} to evaluate it with, read for every
    run before any is evaluated (the checkpoint's meta, its eps and its test set)."""
    plans, test_sets = [], {}
    for run, path in found:
        plan = saved_eval(path)
        if plan is None:
            meta = read_meta(path)
            key = (meta.get("dataset"), run_config(path).get("data_dir"))
            if key not in test_sets:
                test_sets[key] = test_set(meta, None, None, str(path))
            plan = {"eps": eps_of(meta, None, str(path)), "data": test_sets[key]}
        plans.append(plan)
    return plans


def evaluate_run(run, path, cfg, plan, *, limit, batch_size, seed, apgd_steps, device,
                 progress: Callable = _no_progress) -> dict:
    """What compare knows of one run: where its numbers come from, the eval settings, the
    accuracies (evaluated now with DEFAULT_ATTACKS where plan has no eval.json) and its cost."""
    if "data" in plan:
        backend, model, _ = checkpoints.load_checkpoint(path, device)
        on_batch, close = progress(f"eval {run}", min(limit, len(plan["data"])))
        try:
            result = evaluate.evaluate_attacks(backend, model, plan["data"], eps=plan["eps"],
                                      attacks=DEFAULT_ATTACKS, batch_size=batch_size, seed=seed,
                                      limit=limit, apgd_steps=apgd_steps, on_batch=on_batch)
        finally:
            close()
        evaluation, source = result.to_dict(), "computed now"
    else:
        evaluation, source = plan, str(path.parent / "eval.json")
    return {"run": run, "checkpoint": str(path), "seed": (cfg or {}).get("seed"), "from": source,
            "eps": evaluation.get("eps"), "n": evaluation.get("n"),
            "seed_of_attacks": evaluation.get("seed"), "restarts": evaluation.get("restarts"),
            "apgd_steps": evaluation.get("apgd_steps"), "attacks": evaluation.get("attacks"),
            "accuracy": evaluation["accuracy"],
            COST: grad_evals_per_example(path.parent) if cfg is not None else None}


def _by_seed(rows, members, seeds, column) -> dict:
    """{seed: the mean of the group's values of column at that seed} (duplicates averaged)."""
    values = {}
    for member, seed in zip(members, seeds):
        if seed is not None and rows[member].get(column) is not None:
            values.setdefault(seed, []).append(rows[member][column])
    return {seed: sum(v) / len(v) for seed, v in values.items()}


def paired_difference_of(rows, group, base, column):
    """aggregate.paired_difference of `column` between `group` and `base`, paired by seed."""
    return paired_difference(_by_seed(rows, group.members, group.seeds, column),
                             _by_seed(rows, base.members, base.seeds, column))


def baseline_differences(groups, rows, base) -> dict:
    """{index of a group other than base: {column: its paired Difference to base}}."""
    if base is None:
        return {}
    return {k: {c: paired_difference_of(rows, g, base, c) for c in COLUMNS}
            for k, g in enumerate(groups) if g is not base}


def compare_warnings(groups, records) -> list[str]:
    """What makes the numbers of a compare table less comparable than they look."""
    out = []
    settings = sorted({(r["eps"], r["n"]) for r in records}, key=str)
    if len(settings) > 1:
        out.append("the runs were evaluated with different eps or numbers of examples: "
                   + ", ".join(f"eps {e:g} n {k}" if e is not None else f"eps ? n {k}" for e, k in settings))
    attack_sets = {tuple(r["attacks"] or r["accuracy"]) for r in records}
    if len(attack_sets) > 1:
        out.append("the worst case is over different attacks in different runs (see each run's attacks)")
    for g in groups:
        seeds = [s for s in g.seeds if s is not None]
        if len(set(seeds)) < len(seeds):
            out.append(f"group {g.label!r} holds the same seed more than once "
                       f"({', '.join(str(s) for s in g.seeds)}): such runs are not independent")
    return out


# --- the table's text ----------------------------------------------------------------------------
def json_object(found: Comparison, baseline: str | None) -> dict:
    """compare --json: the groups with their runs, the columns and the settings."""
    for entry in found.table:
        entry.pop("members", None)  # indices into the arguments; "runs" names them
    return {"columns": list(COLUMNS), "headers": HEADERS, "eps": found.eps, "n": found.n,
            "baseline": baseline, "groups": found.table, "warnings": found.warnings,
            "units": {"accuracy": "percent (white-box)", COST: COST_NOTE}}


def csv_text(table: list[dict]) -> str:
    """compare --csv: one row per group (aggregate.flat_row)."""
    return table1.csv_text([flat_row(entry, COLUMNS) for entry in table], lineterminator="\n")


def _cell(summary: dict, runs: int, column: str) -> str:
    return format_summary(summary, runs, digits=1 if column == COST else 2)


def _diff_cell(difference) -> str:
    """An aggregate.Difference as 'mean [low, high] (n=N)'."""
    if not difference.n:
        return "-"
    if difference.low is None:
        return f"{difference.mean:+.2f} (n=1)"
    return f"{difference.mean:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}] (n={difference.n})"


def _seeds(seeds) -> str:
    return ", ".join("?" if s is None else str(s) for s in seeds)


def markdown_table(found: Comparison) -> str:
    """The table compare prints: one row per group, then the baseline table and the notes."""
    groups, table, base, diffs = found.groups, found.table, found.base, found.diffs
    head = ["Group", "Seeds"] + [HEADERS[c] for c in COLUMNS]
    lines = table1.markdown_lines(head, ([g.label, _seeds(g.seeds)]
                                         + [_cell(entry["columns"][c], len(g.members), c) for c in COLUMNS]
                                         for g, entry in zip(groups, table)))
    if base is not None:
        lines += ["", f"Difference to {base.label}, paired by seed: mean [95% t interval] (n seeds)."]
        lines += table1.markdown_lines(head, ([g.label, _seeds(g.seeds)] + [_diff_cell(diffs[k][c]) for c in COLUMNS]
                                              for k, g in enumerate(groups) if k in diffs))
    lines.append("")
    where = f"eps {found.eps:g}, {found.n} test examples per run" if found.eps is not None \
        else "settings differ, see below"
    lines.append(f"White-box accuracy (%), {where}; mean ± sample std over the runs of a group that "
                 "differ only in seed (n runs). Worst case: correct under every attack of the run's "
                 f"evaluation. {COST_NOTE}")
    lines += [f"Warning: {w}" for w in found.warnings]
    for g in groups:
        for i in g.members:
            r = found.records[i]
            attacks = ", ".join(r["attacks"] or [k for k in r["accuracy"] if k != "worst-case"])
            how = f"from {r['from']}" if r["from"] != "computed now" else \
                f"computed now (first {r['n']} test examples, attack seed {r['seed_of_attacks']})"
            lines.append(f"  {r['run']} ({g.label}, seed {'?' if r['seed'] is None else r['seed']}): "
                         f"{how}; attacks {attacks}")
    return "\n".join(lines)
