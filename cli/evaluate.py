"""`minidyn eval CHECKPOINT` and `minidyn compare RUN...`: robustness numbers and Table 1.

`minidyn eval --save` writes eval.json (white-box) or eval-blackbox.json (with --source) next
to the checkpoint, the object `eval --json` prints; `minidyn compare` reads RUN/eval.json where
it exists and evaluates the run otherwise, then aggregates runs that differ only in seed with
minidyn.evaluation.aggregate (the module the study report shares). Registered on the `minidyn` group at
the end of cli/main.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from minidyn.evaluation.attack_table import ATTACKS, DEFAULT_ATTACKS, WORST, WORST_LABEL
from minidyn.cli.params import APGD_STEPS, BATCH_SIZE, LIMIT, MAX_RESTARTS, SEED, Eps, check_writable_file, count
from minidyn.errors import ConfigError


def progress(label: str, total: int):
    """A stderr progress bar driven by on_batch(done, total) calls; returns (callback, close).
    Nothing without a terminal: a log file would get only the bar's label."""
    if not sys.stderr.isatty():
        return (lambda done, n: None), (lambda: None)
    bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=True)
    bar.__enter__()
    state = {"done": 0}

    def on_batch(done, n):
        bar.update(done - state["done"])
        state["done"] = done

    return on_batch, lambda: bar.__exit__(None, None, None)


def test_set(meta: dict, dataset: str | None, data_dir: str | None, checkpoint: str):
    """The test split the checkpoint was trained on (or --dataset/--data-dir)."""
    from minidyn.evaluation.checkpoints import run_config
    from minidyn.data import load_dataset

    name = dataset or meta.get("dataset")
    if not name:
        raise ConfigError(f"{checkpoint} does not record its dataset; pass --dataset")
    if data_dir is None and name == meta.get("dataset"):
        data_dir = run_config(checkpoint).get("data_dir")
    return load_dataset(name, "test", data_dir)


def eps_of(meta: dict, eps: float | None, checkpoint: str) -> float:
    eps = eps if eps is not None else meta.get("eps")
    if eps is None:
        raise ConfigError(f"{checkpoint} does not record the eps it was trained with; pass --eps")
    return float(eps)


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--attacks", help=f"Comma-separated: {', '.join(ATTACKS)}.  "
                                f"[default: {','.join(DEFAULT_ATTACKS)}]")
@click.option("--eps", type=Eps(), help="L_inf budget, e.g. 0.3 or 8/255.  [default: the checkpoint's]")
@click.option("--dataset", help="Test set to use.  [default: the checkpoint's]")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the dataset files are.  [default: the run's]")
@click.option("--limit", type=LIMIT, help="Evaluate the first N test examples.  [default: all]")
@click.option("--batch-size", type=BATCH_SIZE, default=256, show_default=True, help="Examples per batch.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random starts.")
@click.option("--restarts", type=count("--restarts", MAX_RESTARTS), default=1, show_default=True,
              help="Random starts per iterative attack; robust only if every one fails.")
@click.option("--apgd-steps", type=APGD_STEPS, default=100, show_default=True, help="APGD iterations.")
@click.option("--source", type=click.Path(), help="Black-box: craft the attacks on this surrogate checkpoint.")
@click.option("--device", default="auto", show_default=True, help="torch device (auto, cpu, cuda, cuda:N).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object and nothing else: what was evaluated (checkpoint, model, method, "
                   "dataset, epoch, eps, n, seed, restarts, apgd_steps, source: null for white-box), "
                   "\"accuracy\" {attack: %}, the sanity flags and checks; the object --save writes.")
@click.option("--save", is_flag=True, help="Also write eval.json (eval-blackbox.json with --source) next to the checkpoint.")
def eval_command(checkpoint, attacks, eps, dataset, data_dir, limit, batch_size, seed, restarts,
                 apgd_steps, source, device, as_json, save):
    """Accuracy of CHECKPOINT (a .pt or .npz file, or a run directory) under several attacks.

    PGD-10/20 use step eps/4 and a random start, CW-inf is 30 such steps on the margin loss,
    APGD-CE/DLR follow Croce & Hein (2020). The worst case counts an example as robust only if
    it survives every attack. Sanity flags point at results that look like gradient masking.
    """
    from minidyn import __version__
    from minidyn.evaluation.checkpoints import checkpoint_in, load_checkpoint
    from minidyn.evaluation.evaluate import evaluate_attacks, format_table, parse_attacks, sanity_flags

    names = parse_attacks(attacks or list(DEFAULT_ATTACKS))
    path = checkpoint_in(checkpoint)
    target = path.parent / ("eval-blackbox.json" if source is not None else "eval.json")
    if save:  # before the evaluation, which can take hours
        check_writable_file(target, "--save")
    backend, model, meta = load_checkpoint(path, device)
    eps = eps_of(meta, eps, str(path))
    data = test_set(meta, dataset, data_dir, str(path))
    surrogate, source_path = load_source(source, path, meta, device)
    saved = saved_white_box(path) if surrogate is not None else None  # a bad eval.json fails now
    on_batch, close = progress("eval", len(data) if limit is None else min(limit, len(data)))
    try:
        result = evaluate_attacks(backend, model, data, eps=eps, attacks=names, batch_size=batch_size,
                                  seed=seed, restarts=restarts, limit=limit, apgd_steps=apgd_steps,
                                  source=surrogate, source_name=str(source_path) if source_path else None,
                                  on_batch=on_batch)
    finally:
        close()
    white_box, note = (None, None) if surrogate is None else matching_white_box(path, saved, result, eps, seed)
    flags = sanity_flags(result, white_box)
    result.meta = {"checkpoint": str(path), "dataset": data.name, "model": meta.get("model"),
                   "method": meta.get("method"), "epoch": meta.get("epoch"), "flags": flags,
                   "version": __version__}
    if save:
        write_eval(result, target)
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    mode = f"black-box, crafted on {source_path}" if surrogate is not None else "white-box"
    click.echo(format_table(result, eval_header(path, meta, data, result, mode)))
    echo_sanity(result, flags, note, white_box is not None)


def load_source(source, path, meta: dict, device) -> tuple[tuple | None, Path | None]:
    """((backend, model), its checkpoint) of the --source surrogate, (None, None) without one;
    ConfigError when it takes other inputs or classes than the target `path` (meta: its meta)."""
    if source is None:
        return None, None
    from minidyn.evaluation.checkpoints import architecture, checkpoint_in, load_checkpoint

    source_path = checkpoint_in(source)
    source_backend, source_model, source_meta = load_checkpoint(source_path, device)
    theirs, ours = architecture(source_meta), architecture(meta)
    if list(theirs.get("input_shape", [])) != list(ours["input_shape"]) or \
            theirs.get("num_classes") != ours["num_classes"]:
        raise ConfigError(f"--source {source_path} takes inputs {theirs.get('input_shape')} with "
                          f"{theirs.get('num_classes')} classes; the target {path} takes "
                          f"{ours['input_shape']} with {ours['num_classes']}")
    return (source_backend, source_model), source_path


def saved_white_box(path) -> dict | None:
    """The eval.json next to checkpoint `path` (minidyn.files.readers.read_eval), None without one."""
    from minidyn.files.readers import read_eval

    saved = path.parent / "eval.json"
    return read_eval(saved) if saved.exists() or saved.is_symlink() else None


def matching_white_box(path, white_box: dict | None, result, eps: float, seed: int) -> tuple[dict | None, str | None]:
    """(white_box, the eval.json next to checkpoint `path`, when it was evaluated like `result`
    (same eps, n and seed), None; or None and a note saying why black-box vs white-box is not
    checked)."""
    saved = path.parent / "eval.json"
    if white_box and white_box.get("source") is None and white_box.get("n") == result.n \
            and white_box.get("seed") == seed and abs(float(white_box.get("eps", -1)) - eps) < 1e-12:
        return white_box, None
    return None, (f"black-box vs white-box not checked: no matching {saved} (run `minidyn eval "
                  f"{path} --save` with the same --eps, --limit and --seed first)")


def write_eval(result, target) -> None:
    """What --save writes: result.to_dict() as JSON in `target`, atomically."""
    from minidyn.files.fileio import atomic_write

    atomic_write(target, lambda f: json.dump(result.to_dict(), f, indent=2, sort_keys=True))
    click.echo(f"wrote {target}", err=True)


def eval_header(path, meta: dict, data, result, mode: str) -> str:
    """The first line of `minidyn eval`'s table: what was attacked, how, with which settings."""
    examples = f"first {result.n}" if result.n < len(data) else f"all {result.n}"
    return (f"{path}: {meta.get('model')} ({meta.get('method') or 'method unknown'}) on the "
            f"{examples} {data.name} test examples, eps {result.eps:g}, {mode}, "
            f"{result.restarts} restart{'s' if result.restarts > 1 else ''}, seed {result.seed}")


def echo_sanity(result, flags: list[str], note: str | None, white_box: bool) -> None:
    """The lines after the table: the note, then the sanity flags or the checks that passed."""
    from minidyn.evaluation.evaluate import checks_applied

    if note:
        click.echo(note)
    if flags:
        click.echo("sanity flags:")
        for flag in flags:
            click.echo(f"  ! {flag}")
        return
    done = checks_applied(result, white_box)
    click.echo("sanity checks passed:" if done else "sanity checks: none applies to these attacks")
    for line in done:
        click.echo(f"  {line}")


COST = "grad_evals_per_example"
COLUMNS = (*DEFAULT_ATTACKS, WORST, COST)  # compare evaluates runs without an eval.json with DEFAULT_ATTACKS
HEADERS = {**{name: ATTACKS[name].label for name in DEFAULT_ATTACKS},
           "clean": "Clean",  # a table heading, capitalised
           WORST: WORST_LABEL, COST: "grad evals / example"}
COST_NOTE = ("grad evals / example: the training attacks' input-gradient evaluations (metrics.jsonl "
             "grad_evals) summed over all epochs, per training example; SGD's weight gradient is "
             "not counted.")


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
    from pathlib import Path

    from minidyn.evaluation.checkpoints import checkpoint_in
    from minidyn.errors import CheckpointError

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


def _cell(summary: dict, runs: int, column: str) -> str:
    from minidyn.evaluation.aggregate import format_summary

    return format_summary(summary, runs, digits=1 if column == COST else 2)


def _diff_cell(difference) -> str:
    """An aggregate.Difference as 'mean [low, high] (n=N)'."""
    if not difference.n:
        return "-"
    if difference.low is None:
        return f"{difference.mean:+.2f} (n=1)"
    return f"{difference.mean:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}] (n={difference.n})"


def _by_seed(rows, members, seeds, column) -> dict:
    """{seed: the mean of the group's values of column at that seed} (duplicates averaged)."""
    values = {}
    for member, seed in zip(members, seeds):
        if seed is not None and rows[member].get(column) is not None:
            values.setdefault(seed, []).append(rows[member][column])
    return {seed: sum(v) / len(v) for seed, v in values.items()}


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--limit", type=LIMIT, default=1000, show_default=True,
              help="Test examples for runs without an eval.json.")
@click.option("--batch-size", type=BATCH_SIZE, default=256, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the attacks' random starts.")
@click.option("--apgd-steps", type=APGD_STEPS, default=100, show_default=True,
              help="APGD iterations for runs without an eval.json.")
@click.option("--device", default="auto", show_default=True, help="torch device.")
@click.option("--baseline", metavar="GROUP",
              help="Also show each group's difference to GROUP (a label of the table, e.g. standard), "
                   "paired by seed, with a 95% t interval.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (groups with their runs, seeds and mean/std/n per column, "
                   "eps, n, warnings) instead of the table.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE",
              help="Also write one CSV row per group (COLUMN_mean, COLUMN_std, COLUMN_n) to FILE; "
                   "'-' prints it on stdout instead of the table. (--baseline differences: table and --json.)")
def compare_command(runs, limit, batch_size, seed, apgd_steps, device, baseline, as_json, csv_path):
    """A Markdown table like the paper's Table 1 for several runs, one row per group of runs
    that differ only in seed (mean ± sample std over the seeds, n runs).

    Each RUN is a run directory or checkpoint. Its numbers come from RUN/eval.json (written by
    `minidyn eval RUN --save`) when it exists, otherwise they are computed now (white-box,
    clean, FGSM, PGD-10/20, CW-inf and APGD-CE) on the first --limit test examples. Every RUN
    is checked before anything is evaluated.
    """
    from minidyn.evaluation.aggregate import group_runs, summarize_groups
    from minidyn.evaluation.checkpoints import run_config

    check_outputs(as_json, csv_path)
    found, twice = resolve_runs(runs)
    configs = [run_config(path) or None for _, path in found]
    groups = group_runs(configs, [run for run, _ in found])
    base = baseline_group(groups, baseline)
    plans = plan_runs(found)  # before the first evaluation: a bad checkpoint or dataset fails now
    records = [evaluate_run(run, path, cfg, plan, limit=limit, batch_size=batch_size, seed=seed,
                            apgd_steps=apgd_steps, device=device)
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
    if csv_path is not None:
        write_csv(csv_path, table)
    for warning in warnings if (as_json or csv_path == "-") else ():
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        echo_json(table, eps, n, baseline, warnings)
    elif csv_path != "-":
        click.echo(markdown_table(groups, table, base, diffs, eps, n, warnings, records))


def check_outputs(as_json: bool, csv_path: str | None) -> None:
    """Refuse --json with --csv - (both on stdout) and a --csv FILE in a missing or unwritable
    directory (before any run is evaluated)."""
    from pathlib import Path

    if as_json and csv_path == "-":
        raise click.UsageError("--json and --csv - both print on stdout; give --csv a FILE")
    if csv_path not in (None, "-") and not Path(csv_path).resolve().parent.is_dir():
        raise ConfigError(f"--csv {csv_path}: directory {Path(csv_path).parent} does not exist")
    if csv_path not in (None, "-"):
        check_writable_file(csv_path, "--csv")


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


def baseline_differences(groups, rows, base) -> dict:
    """{index of a group other than base: {column: its paired Difference to base}}."""
    if base is None:
        return {}
    return {k: {c: paired_difference_of(rows, g, base, c) for c in COLUMNS}
            for k, g in enumerate(groups) if g is not base}


def echo_json(table, eps, n, baseline, warnings) -> None:
    """compare --json: the groups with their runs, the columns and the settings, one line."""
    for entry in table:
        del entry["members"]  # indices into the arguments; "runs" names them
    click.echo(json.dumps({"columns": list(COLUMNS), "headers": HEADERS, "eps": eps, "n": n,
                           "baseline": baseline, "groups": table, "warnings": warnings,
                           "units": {"accuracy": "percent (white-box)", COST: COST_NOTE}},
                          sort_keys=True))


def plan_runs(found) -> list[dict]:
    """Per run: its white-box eval.json, or {"eps", "data"} to evaluate it with, read for every
    run before any is evaluated (the checkpoint's meta, its eps and its test set)."""
    from minidyn.evaluation.checkpoints import read_meta, run_config

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


def evaluate_run(run, path, cfg, plan, *, limit, batch_size, seed, apgd_steps, device) -> dict:
    """What compare knows of one run: where its numbers come from, the eval settings, the
    accuracies (evaluated now with DEFAULT_ATTACKS where plan has no eval.json) and its cost."""
    from minidyn.evaluation.aggregate import grad_evals_per_example
    from minidyn.evaluation.checkpoints import load_checkpoint
    from minidyn.evaluation.evaluate import evaluate_attacks

    if "data" in plan:
        backend, model, _ = load_checkpoint(path, device)
        on_batch, close = progress(f"eval {run}", min(limit, len(plan["data"])))
        try:
            result = evaluate_attacks(backend, model, plan["data"], eps=plan["eps"],
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


def paired_difference_of(rows, group, base, column):
    """aggregate.paired_difference of `column` between `group` and `base`, paired by seed."""
    from minidyn.evaluation.aggregate import paired_difference

    return paired_difference(_by_seed(rows, group.members, group.seeds, column),
                             _by_seed(rows, base.members, base.seeds, column))


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


def write_csv(target: str, table: list[dict]) -> None:
    """One row per group (aggregate.flat_row) to the file `target`, or stdout for '-'."""
    import csv
    import io

    from minidyn.evaluation.aggregate import flat_row

    buf = io.StringIO()
    rows = [flat_row(entry, COLUMNS) for entry in table]
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    if target == "-":
        click.echo(buf.getvalue(), nl=False)
        return
    from minidyn.files.fileio import atomic_write

    atomic_write(target, lambda f: f.write(buf.getvalue()))
    click.echo(f"wrote {target}", err=True)


def _seeds(seeds) -> str:
    return ", ".join("?" if s is None else str(s) for s in seeds)


def markdown_table(groups, table, base, diffs, eps, n, warnings, records) -> str:
    """The table compare prints: one row per group, then the baseline table and the notes."""
    head = ["Group", "Seeds"] + [HEADERS[c] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g, entry in zip(groups, table):
        cells = [_cell(entry["columns"][c], len(g.members), c) for c in COLUMNS]
        lines.append(f"| {g.label} | {_seeds(g.seeds)} | " + " | ".join(cells) + " |")
    if base is not None:
        lines += ["", f"Difference to {base.label}, paired by seed: mean [95% t interval] (n seeds).",
                  "| Group | Seeds | " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
                  "|" + "---|" * len(head)]
        for k, g in enumerate(groups):
            if k in diffs:
                cells = [_diff_cell(diffs[k][c]) for c in COLUMNS]
                lines.append(f"| {g.label} | {_seeds(g.seeds)} | " + " | ".join(cells) + " |")
    lines.append("")
    where = f"eps {eps:g}, {n} test examples per run" if eps is not None else "settings differ, see below"
    lines.append(f"White-box accuracy (%), {where}; mean ± sample std over the runs of a group that "
                 "differ only in seed (n runs). Worst case: correct under every attack of the run's "
                 f"evaluation. {COST_NOTE}")
    lines += [f"Warning: {w}" for w in warnings]
    for g in groups:
        for i in g.members:
            r = records[i]
            attacks = ", ".join(r["attacks"] or [k for k in r["accuracy"] if k != "worst-case"])
            how = f"from {r['from']}" if r["from"] != "computed now" else \
                f"computed now (first {r['n']} test examples, attack seed {r['seed_of_attacks']})"
            lines.append(f"  {r['run']} ({g.label}, seed {'?' if r['seed'] is None else r['seed']}): "
                         f"{how}; attacks {attacks}")
    return "\n".join(lines)

