"""`minidyn eval CHECKPOINT` and `minidyn compare RUN...`: robustness numbers and Table 1.

`minidyn eval --save` writes eval.json (white-box) or eval-blackbox.json (with --source) next
to the checkpoint; `minidyn compare` reads RUN/eval.json where it exists and evaluates the run
otherwise. Registered on the `minidyn` group at the end of cli/main.py.
"""
from __future__ import annotations

import json
import sys

import click

from minidyn.cli.params import Eps
from minidyn.errors import ConfigError


def progress(label: str, total: int):
    """A stderr progress bar driven by on_batch(done, total) calls; returns (callback, close)."""
    bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=True)
    bar.__enter__()
    state = {"done": 0}

    def on_batch(done, n):
        bar.update(done - state["done"])
        state["done"] = done

    return on_batch, lambda: bar.__exit__(None, None, None)


def test_set(meta: dict, dataset: str | None, data_dir: str | None, checkpoint: str):
    """The test split the checkpoint was trained on (or --dataset/--data-dir)."""
    from minidyn.data import load_dataset
    from minidyn.evaluate import run_config

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
@click.option("--attacks", help="Comma-separated: clean, fgsm, pgd10, pgd20, cw, apgd-ce, apgd-dlr.  "
                                "[default: clean,fgsm,pgd10,pgd20,cw,apgd-ce]")
@click.option("--eps", type=Eps(), help="L_inf budget, e.g. 0.3 or 8/255.  [default: the checkpoint's]")
@click.option("--dataset", help="Test set to use.  [default: the checkpoint's]")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the dataset files are.  [default: the run's]")
@click.option("--limit", type=int, help="Evaluate the first N test examples.  [default: all]")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Examples per batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random starts.")
@click.option("--restarts", type=int, default=1, show_default=True,
              help="Random starts per iterative attack; robust only if every one fails.")
@click.option("--apgd-steps", type=int, default=100, show_default=True, help="APGD iterations.")
@click.option("--source", type=click.Path(), help="Black-box: craft the attacks on this surrogate checkpoint.")
@click.option("--device", default="auto", show_default=True, help="torch device (auto, cpu, cuda, cuda:N).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {attack: accuracy %} and nothing else.")
@click.option("--save", is_flag=True, help="Also write eval.json (eval-blackbox.json with --source) next to the checkpoint.")
def eval_command(checkpoint, attacks, eps, dataset, data_dir, limit, batch_size, seed, restarts,
                 apgd_steps, source, device, as_json, save):
    """Accuracy of CHECKPOINT (a .pt or .npz file, or a run directory) under several attacks.

    PGD-10/20 use step eps/4 and a random start, CW-inf is 30 such steps on the margin loss,
    APGD-CE/DLR follow Croce & Hein (2020). The worst case counts an example as robust only if
    it survives every attack. Sanity flags point at results that look like gradient masking.
    """
    from minidyn import __version__
    from minidyn.evaluate import (DEFAULT_ATTACKS, checkpoint_in, checks_applied, evaluate_attacks,
                                  format_table, load_checkpoint, parse_attacks, sanity_flags)

    names = parse_attacks(attacks or list(DEFAULT_ATTACKS))
    path = checkpoint_in(checkpoint)
    B, model, meta = load_checkpoint(path, device)
    eps = eps_of(meta, eps, str(path))
    data = test_set(meta, dataset, data_dir, str(path))
    src, src_path = None, None
    if source is not None:
        src_path = checkpoint_in(source)
        sB, smodel, smeta = load_checkpoint(src_path, device)
        src_arch = {**smeta, **(smeta.get("arch") or {})}
        arch = {**meta, **(meta.get("arch") or {})}
        if list(src_arch.get("input_shape", [])) != list(arch["input_shape"]) or \
                src_arch.get("num_classes") != arch["num_classes"]:
            raise ConfigError(f"--source {src_path} takes inputs {src_arch.get('input_shape')} with "
                              f"{src_arch.get('num_classes')} classes; the target {path} takes "
                              f"{arch['input_shape']} with {arch['num_classes']}")
        src = (sB, smodel)
    n = len(data) if limit is None else min(limit, len(data))
    on_batch, close = progress("eval", n)
    try:
        result = evaluate_attacks(B, model, data, eps=eps, attacks=names, batch_size=batch_size,
                                  seed=seed, restarts=restarts, limit=limit, apgd_steps=apgd_steps,
                                  source=src, source_name=str(src_path) if src_path else None,
                                  on_batch=on_batch)
    finally:
        close()
    white_box, note = None, None
    if src is not None:
        saved = path.parent / "eval.json"
        try:
            wb = json.loads(saved.read_text()) if saved.is_file() else None
        except ValueError:
            wb = None
        if wb and wb.get("source") is None and wb.get("n") == result.n and wb.get("seed") == seed \
                and abs(float(wb.get("eps", -1)) - eps) < 1e-12:
            white_box = wb
        else:
            note = (f"black-box vs white-box not checked: no matching {saved} (run `minidyn eval "
                    f"{path} --save` with the same --eps, --limit and --seed first)")
    flags = sanity_flags(result, white_box)
    acc = result.accuracy()
    if save:
        from minidyn.fileio import atomic_write

        result.meta = {"checkpoint": str(path), "dataset": data.name, "model": meta.get("model"),
                       "method": meta.get("method"), "epoch": meta.get("epoch"), "flags": flags,
                       "version": __version__}
        target = path.parent / ("eval-blackbox.json" if src is not None else "eval.json")
        atomic_write(target, lambda f: json.dump(result.to_dict(), f, indent=2, sort_keys=True))
        click.echo(f"wrote {target}", err=True)
    if as_json:
        click.echo(json.dumps(acc))
        return
    mode = f"black-box, crafted on {src_path}" if src is not None else "white-box"
    header = (f"{path}: {meta.get('model')} ({meta.get('method') or 'method unknown'}) on the "
              f"{'first ' + str(result.n) if result.n < len(data) else 'all ' + str(result.n)} "
              f"{data.name} test examples, eps {eps:g}, {mode}, "
              f"{restarts} restart{'s' if restarts > 1 else ''}, seed {seed}")
    click.echo(format_table(result, header))
    if note:
        click.echo(note)
    if flags:
        click.echo("sanity flags:")
        for flag in flags:
            click.echo(f"  ! {flag}")
    else:
        done = checks_applied(result, white_box is not None)
        click.echo("sanity checks passed (differences beyond noise would be flagged): " + "; ".join(done)
                   if done else "sanity checks: none applies to these attacks")


PAPER_COLUMNS = ("clean", "fgsm", "pgd10", "pgd20", "cw")


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--limit", type=int, default=1000, show_default=True,
              help="Test examples for runs without an eval.json.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="torch device.")
def compare_command(runs, limit, batch_size, seed, device):
    """A Markdown table like the paper's Table 1 for several runs.

    Each run's numbers come from RUN/eval.json (written by `minidyn eval RUN --save`) when it
    exists, otherwise they are computed now on the first --limit test examples (white-box).
    """
    from minidyn.evaluate import LABELS, checkpoint_in, evaluate_attacks, load_checkpoint, run_config

    rows, notes, settings = [], [], set()
    for run in runs:
        path = checkpoint_in(run)
        saved = path.parent / "eval.json"
        method = run_config(path).get("method")
        ev = None
        if saved.is_file():
            try:
                ev = json.loads(saved.read_text())
            except ValueError:
                ev = None
        if ev is not None and ev.get("source") is None and "accuracy" in ev:
            acc, n, eps = ev["accuracy"], ev.get("n"), ev.get("eps")
            method = method or ev.get("method")
            notes.append(f"{run}: from {saved}")
        else:
            B, model, meta = load_checkpoint(path, device)
            eps = eps_of(meta, None, str(path))
            data = test_set(meta, None, None, str(path))
            n = min(limit, len(data))
            on_batch, close = progress(f"eval {run}", n)
            try:
                res = evaluate_attacks(B, model, data, eps=eps, attacks=PAPER_COLUMNS,
                                       batch_size=batch_size, seed=seed, limit=limit, on_batch=on_batch)
            finally:
                close()
            acc = res.accuracy()
            method = method or meta.get("method")
            notes.append(f"{run}: computed now (first {n} test examples, seed {seed})")
        settings.add((eps, n))
        cells = [f"{acc[c]:.2f}" if acc.get(c) is not None else "-" for c in PAPER_COLUMNS]
        rows.append(f"| {run} | {method or '?'} | " + " | ".join(cells) + " |")
    head = "| Run | Method | " + " | ".join(LABELS[c] if c != "clean" else "Clean" for c in PAPER_COLUMNS) + " |"
    click.echo(head)
    click.echo("|" + "---|" * (len(PAPER_COLUMNS) + 2))
    for row in rows:
        click.echo(row)
    click.echo("")
    if len(settings) == 1:
        eps, n = next(iter(settings))
        click.echo(f"White-box accuracy (%), eps {eps:g}, {n} test examples per run.")
    else:
        click.echo("White-box accuracy (%). Warning: the runs were evaluated with different eps or "
                   "numbers of examples: " + ", ".join(f"eps {e:g} n {k}" for e, k in sorted(settings)))
    for note in notes:
        click.echo(f"  {note}")
