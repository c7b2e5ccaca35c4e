"""`minidyn analyze RUN_DIR`: the paper's FOSC figures redrawn from a run (minidyn.evaluation.analysis)."""
from __future__ import annotations

import math

import click

from minidyn.cli.params import (BATCH_SIZE, LIMIT, MAX_BINS, MAX_TEXT, MAX_TRAJECTORIES, SEED, count,
                                epoch_list)
from minidyn.errors import ConfigError


def _range(ctx, param, value):
    if value is None:
        return None  # the paper's [0, 0.1], or auto if it holds under half the examples
    if value.strip().lower() == "auto":
        return "auto"
    try:
        if len(value) > MAX_TEXT:
            raise ValueError
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value[:MAX_TEXT]!r} is not LO,HI (e.g. 0,0.1)") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise click.BadParameter(f"{value!r}: LO and HI must be finite numbers")
    if not hi > lo:
        raise click.BadParameter(f"{value!r}: LO must be below HI")
    return lo, hi


def _epochs(ctx, param, value):
    epochs = epoch_list(ctx, param, value)
    if epochs and min(epochs) < 1:
        raise click.BadParameter(f"{value!r}: epochs are counted from 1 (epoch 1 is the first, "
                                 "as in the training log)")
    return epochs


def _eps_list(ctx, param, value):
    if value is None:
        return None
    from minidyn.files.config import parse_eps
    from minidyn.projection import is_eps

    if len(value) > MAX_TEXT:
        raise click.BadParameter(f"{value[:20]!r}... ({len(value)} characters) is not a list of eps")
    try:
        grid = [parse_eps(v) for v in value.split(",") if v.strip()]
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    if not grid or not all(is_eps(e) for e in grid):
        raise click.BadParameter(f"{value!r}: every eps must be in (0, 1]")
    return sorted(grid)


@click.command("analyze")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--limit", type=LIMIT, default=1000, show_default=True, help="Test examples attacked (Figs 1a, 4a).")
@click.option("--epochs", callback=_epochs, help="Epochs of the FOSC KDE, counted from 1 as in the training log, e.g. 1,10,20.  [default: first, middle, last]")
@click.option("--bins", type=count("--bins", MAX_BINS), default=20, show_default=True, help="FOSC bins of Fig 1a.")
@click.option("--fosc-range", callback=_range, help="LO,HI: FOSC range of Fig 1a's bins and of the share of training examples in range; "
                   "'auto': [0, 95th percentile of the test FOSC].  [default: the paper's 0,0.1; auto for "
                   "Fig 1a when under half the test examples lie in it]")
@click.option("--fosc-bounds", type=click.Choice(["ball", "clipped"]), default="ball", show_default=True,
              help="FOSC of Figs 1a/1b: the paper's (max over the eps-ball) or the max over the feasible "
                   "set PGD searches, the eps-ball intersected with the pixel box [0, 1]^d ('clipped').")
@click.option("--eps-grid", callback=_eps_list, help="Test eps of Fig 4a, e.g. 0.1,0.2,0.3.  [default: 5 from eps/4 to eps]")
@click.option("--trajectories", "traj_n", type=count("--trajectories", MAX_TRAJECTORIES), default=20, show_default=True, help="Examples in Fig 1b.")
@click.option("--trajectory-steps", "traj_steps", type=count("--trajectory-steps", MAX_TRAJECTORIES), default=20, show_default=True, help="PGD steps in Fig 1b.")
@click.option("--batch-size", type=BATCH_SIZE, default=256, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="torch device.")
@click.option("--out", type=click.Path(file_okay=False), help="Output directory.  [default: RUN_DIR/analysis]")
@click.option("--no-plots", is_flag=True, help="Write only the numbers (CSV/JSON), no PNGs.")
def analyze_command(run_dir, limit, epochs, bins, fosc_range, fosc_bounds, eps_grid, traj_n,
                    traj_steps, batch_size, seed, device, out, no_plots):
    """Redraw the paper's FOSC figures for the run in RUN_DIR.

    Fig 1a (accuracy and loss of PGD-10 test examples per FOSC bin), Fig 1b (FOSC and loss
    along the PGD steps), the FOSC distributions of the training examples (Figs 2, 3, 5) and
    PGD-10 accuracy against the test eps (Fig 4a). Numbers go to CSV and analysis.json, figures
    to PNG (with matplotlib).
    """
    from minidyn.evaluation.analysis import FIG_ATTACK
    from minidyn.evaluation.analysis_files import analyze_run
    from minidyn.cli.evaluate import progress

    summary = analyze_run(run_dir, out, limit=limit, epochs=epochs, bins=bins, fosc_range=fosc_range,
                          eps_grid=eps_grid, traj_n=traj_n, traj_steps=traj_steps,
                          batch_size=batch_size, seed=seed, device=device, plots=not no_plots,
                          fosc_bounds=fosc_bounds, log=lambda line: click.echo(line), progress=progress)
    click.echo(f"{summary['run']}: {summary['model']} ({summary['method']}), {summary['dataset']}, "
               f"eps {summary['eps']:g}, "
               + ("FOSC over the eps-ball (the paper's)" if fosc_bounds == "ball"
                  else "FOSC over the eps-ball intersected with the pixel box [0, 1]^d in Figs 1a/1b"))
    _echo_fig1a(summary["fig1a"])
    fig1b = summary["fig1b"]
    click.echo(f"Fig 1b  {len(fig1b['indices'])} examples, PGD-{fig1b['steps']}: median FOSC "
               f"{fig1b['median_fosc'][0]:.4g} at step 0 -> {fig1b['median_fosc'][-1]:.4g} at step "
               f"{fig1b['steps']}; median loss {fig1b['median_loss'][0]:.3f} -> {fig1b['median_loss'][-1]:.3f}")
    _echo_distributions(summary["fosc_distributions"])
    fig4a = summary["fig4a"]
    click.echo(f"Fig 4a  {FIG_ATTACK.label} accuracy by test eps ({fig4a['n']} examples): "
               + "  ".join(f"{e:.4g}: {a:.1f}%" for e, a in zip(fig4a["eps"], fig4a["accuracy"])))
    if summary["flags"]:
        click.echo("sanity flags:")
        for flag in summary["flags"]:
            click.echo(f"  ! {flag}")
    click.echo("wrote " + ", ".join(summary["files"]))


def _echo_fig1a(fig1a: dict) -> None:
    """The Fig 1a lines of analysis.json's "fig1a", with a note when the range misses most examples."""
    from minidyn.evaluation.analysis import FIG_ATTACK, describe_corr

    lo, hi = fig1a["fosc_range"]
    inside = fig1a["n"] - fig1a["n_below"] - fig1a["n_above"] - fig1a["n_nan"]
    q10, q50, q90 = fig1a["fosc_quantiles"]
    plo, phi = fig1a["paper_range"]
    click.echo(f"Fig 1a  {FIG_ATTACK.label} on {fig1a['n']} test examples ({fig1a['accuracy_all']:.1f}% correct): "
               f"FOSC median {q50:.4g} (10%: {q10:.4g}, 90%: {q90:.4g})")
    if fig1a["range_source"] == "fallback":
        click.echo(f"        note: only {fig1a['n_in_paper_range']} of {fig1a['n']} lie in the paper's [{plo:g}, {phi:g}] "
                   "(its range is for CIFAR-10 at 8/255; FOSC scales with eps and the input size), so Fig 1a "
                   f"uses --fosc-range auto, [{lo:g}, {hi:g}]; --fosc-range {plo:g},{phi:g} forces the paper's")
    click.echo(f"        {inside} of {fig1a['n']} in [{lo:g}, {hi:g}] ({fig1a['n_below']} below, {fig1a['n_above']} above), "
               f"{fig1a['bins']} bins, {int((fig1a['counts'] > 0).sum())} non-empty")
    click.echo(f"        Pearson r(bin FOSC, accuracy) = {describe_corr(fig1a, 'accuracy')}, "
               f"r(bin FOSC, loss) = {describe_corr(fig1a, 'loss')}")
    if fig1a["range_source"] == "given" and inside < fig1a["n"] / 2:
        click.echo(f"        note: most examples lie outside [{lo:g}, {hi:g}] (FOSC scales with eps and the "
                   "input size; the paper's range is for CIFAR-10 at 8/255): try --fosc-range auto")


def _echo_distributions(dist: dict) -> None:
    """The lines of the training FOSC distributions (epochs counted from 1)."""
    if not dist["share"]:
        click.echo("FOSC    no fosc/epoch_NNN.npy in the run (trained with --no-record-fosc?)")
        return
    lo_s, hi_s = dist["share_range"]
    shares = "  ".join(f"{e}: {100 * v:.1f}%" for e, v in dist["share"].items())
    click.echo(f"FOSC    training examples with FOSC in [{lo_s:g}, {hi_s:g}] by epoch: {shares}")
    for e in dist["epochs"]:
        q = dist["quantiles"][e]
        click.echo(f"        epoch {e}: KDE of {dist['n'][e]} values, bandwidth {dist['bandwidth'][e]:.3g}, "
                   f"median {q[1]:.4g}, 99th percentile {q[2]:.4g}")
