"""`minidyn eval CHECKPOINT` and `minidyn compare RUN...`: robustness numbers and Table 1.

`minidyn eval --save` writes eval.json (white-box) or eval-blackbox.json (with --source) next
to the checkpoint, the object `eval --json` prints; `minidyn compare` reads RUN/eval.json where
it exists and evaluates the run otherwise, then aggregates runs that differ only in seed: the
planning and aggregation are minidyn.evaluation.compare's, this module holds the options, the
printing and the exit codes. Registered on the `minidyn` group at the end of cli/main.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from minidyn.evaluation.attack_table import ATTACKS, DEFAULT_ATTACKS
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


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--attacks", help=f"Comma-separated: {', '.join(ATTACKS)}. pgd10 and pgd20 take steps "
                                "of eps/4, pgd20-eps-over-2 and pgd20-eps-over-8 twenty steps of eps/2 and eps/8.  "
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
@click.option("--convergence", is_flag=True,
              help="White-box: also check that each iterative attack converged: the FOSC of the points it "
                   "left correct (one gradient evaluation each), flagged when most are far from stationary.")
@click.option("--robustbench-json", "robustbench_json", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write RobustBench's model_info JSON (clean_acc, autoattack_acc, eps, ...) of this "
                   "evaluation to FILE; needs autoattack among --attacks, white-box.")
def eval_command(checkpoint, attacks, eps, dataset, data_dir, limit, batch_size, seed, restarts,
                 apgd_steps, source, device, as_json, save, convergence, robustbench_json):
    """Accuracy of CHECKPOINT (a .pt or .npz file, or a run directory) under several attacks.

    PGD-10/20 use step eps/4 and a random start, CW-inf is 30 such steps on the margin loss,
    APGD-CE/DLR follow Croce & Hein (2020); autoattack is AutoAttack's standard suite (APGD-CE,
    APGD-T, FAB-T, Square, each on the examples still robust; the accuracy after each stage is
    printed below the table). The worst case counts an example as robust only if it survives
    every attack. Sanity flags point at results that look like gradient masking.
    """
    from minidyn import __version__
    from minidyn.evaluation.checkpoints import checkpoint_in, eps_of, load_checkpoint, saved_white_box, test_set
    from minidyn.evaluation.evaluate import evaluate_attacks, format_table, parse_attacks, sanity_flags

    names = parse_attacks(attacks or list(DEFAULT_ATTACKS))
    if robustbench_json is not None:  # before the evaluation, which can take hours
        from minidyn.evaluation.robustbench import check_attacks
        check_attacks(names, source)
        check_writable_file(robustbench_json, "--robustbench-json")
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
                                  on_batch=on_batch, convergence=convergence)
    finally:
        close()
    white_box, note = (None, None) if surrogate is None else matching_white_box(path, saved, result, eps, seed)
    flags = sanity_flags(result, white_box)
    result.meta = {"checkpoint": str(path), "dataset": data.name, "model": meta.get("model"),
                   "method": meta.get("method"), "epoch": meta.get("epoch"), "flags": flags,
                   "version": __version__}
    if save:
        write_eval(result, target)
    if robustbench_json is not None:
        write_robustbench(result, robustbench_json, data.name, meta, flags, __version__)
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


def write_robustbench(result, target, dataset: str, meta: dict, flags: list[str], version: str) -> None:
    """What --robustbench-json writes: RobustBench's model_info object of `result`, atomically."""
    from minidyn.evaluation.robustbench import model_info
    from minidyn.files.fileio import atomic_write

    name = f"{meta.get('method') or 'unknown'} training of {meta.get('model')} (minidyn)"
    info = model_info(result, dataset=dataset, architecture=meta.get("model"), name=name,
                      additional_data=False, flags=flags, version=version)
    atomic_write(target, lambda f: json.dump(info, f, indent=2))
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
    from minidyn.evaluation.compare import compare_runs, csv_text, json_object, markdown_table

    check_outputs(as_json, csv_path)
    found = compare_runs(runs, limit=limit, batch_size=batch_size, seed=seed, apgd_steps=apgd_steps,
                         device=device, baseline=baseline, progress=progress)
    if csv_path is not None:
        write_csv(csv_path, csv_text(found.table))
    for warning in found.warnings if (as_json or csv_path == "-") else ():
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(json_object(found, baseline), sort_keys=True))
    elif csv_path != "-":
        click.echo(markdown_table(found))


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


def write_csv(target: str, text: str) -> None:
    """compare --csv: `text` to the file `target`, or stdout for '-'."""
    if target == "-":
        click.echo(text, nl=False)
        return
    from minidyn.files.fileio import atomic_write

    atomic_write(target, lambda f: f.write(text))
    click.echo(f"wrote {target}", err=True)
