"""The `minidyn` command line: train, and the data, eval and analysis commands.

Exit codes: 0 success; 1 a problem with the input, data or environment (one line on stderr,
starting `Error:`); 2 a usage error (unknown option, bad value); 3 training diverged (NaN/inf).
"""
from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

import click

from minidyn import __version__
from minidyn.cli.analyze import analyze_command
from minidyn.cli.evaluate import compare_command, eval_command
from minidyn.runs.malloc import tune_glibc_malloc
from minidyn.cli.params import CMax, CountOrAll, Eps, Number, check_writable_dir, count, epoch_list
from minidyn.cli.study import study_command
from minidyn.cli.course import course_command
from minidyn.files.config import (BACKENDS, FOSC_REFERENCES, LOSS_WEIGHTS, MAX_EXAMPLES, METHODS, PRESETS,
                            TrainConfig, load_preset)
from minidyn.methods import METHODS as RECIPES, STOPS
from minidyn.errors import ConfigError, MinidynError, NumericalError
from minidyn.runs.rundir import BEST_NAMES
from minidyn.studies.console import ConsoleReporter


class UserError(click.ClickException):
    """A MinidynError shown as click shows errors: one line, its own exit code."""

    def __init__(self, error: MinidynError):
        super().__init__(str(error))
        self.exit_code = error.exit_code


class Group(click.Group):
    """A click group that turns MinidynError into a one-line message and a non-zero exit, and
    so an OSError that no up-front check found (`Error: <file>: <OS reason>`, exit 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MinidynError as error:
            raise UserError(error) from None
        except OSError as error:
            if error.errno == errno.EPIPE:  # stdout closed early (| head): click's own quiet exit
                raise
            where = f"{error.filename}: " if error.filename is not None else ""
            raise click.ClickException(f"{where}{error.strerror or error}") from None


# The quickstart's budget (README, "Choices made for the quickstart"), used when neither --epochs
# nor --preset is given; with --epochs E the schedule takes the paper's fractions of E.
QUICKSTART = {"epochs": 10, "lr_milestones": [7, 10], "eval_limit": 200}


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minidyn")
def main():
    """FOSC and Dynamic Adversarial Training (Wang et al., ICML 2019).

    Start with `minidyn train` (the torch backend where torch is installed, numpy otherwise).
    """
    tune_glibc_malloc()


@main.command()
@click.option("--preset", type=click.Choice(PRESETS), help="Load the paper's Section 5 settings; other options override it.")
@click.option("--backend", type=click.Choice(BACKENDS), help="Array backend; auto is torch where it is installed, numpy otherwise.  [default: auto]")
@click.option("--device", help="torch device: auto, cpu, cuda or cuda:N (cupy: cuda[:N]).  [default: auto]")
@click.option("--dataset", help="mnist-sample (embedded), mnist, fashion-mnist or cifar10.  [default: mnist-sample]")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the dataset files are.")
@click.option("--model", help="Model name (softmax, mlp; torch also cnn4, cnn8, wrn-D-W, preact-resnet18/50).  [default: torch: cnn4, cifar10 cnn8; numpy/cupy: mlp]")
@click.option("--method", type=click.Choice(METHODS), help="Training method: " + "; ".join(f"{name}: {recipe.paper}" for name, recipe in RECIPES.items()) + " (docs/methods.md).  [default: dynamic]")
@click.option("--epochs", type=Number.field("epochs"), help="Training epochs; without it (and --preset), the quickstart: 10 epochs, lr /10 at epochs 7 and 10, monitor on 200 test examples.  [default: 10]")
@click.option("--batch-size", type=Number.field("batch_size"), help="Mini-batch size.  [default: 32]")
@click.option("--eps", type=Eps(), help="L_inf budget, e.g. 0.3 or 8/255.  [default: mnist 0.3, fashion-mnist 0.1, cifar10 8/255]")
@click.option("--step-size", type=Number.field("step_size"), help="PGD step size.  [default: eps/4]")
@click.option("--steps", type=Number.field("steps"), help="PGD steps K while training.  [default: 10]")
@click.option("--c-max", type=CMax(), help="Dynamic: FOSC target at epoch 0, or 'auto'.  [default: 0.5]")
@click.option("--dynamic-epochs", type=Number.field("dynamic_epochs"), help="Dynamic: T', epoch from which c_t = 0.  [default: 0.8 * epochs; cifar10 100/120]")
@click.option("--curriculum-epochs", type=Number.field("curriculum_epochs"), help="Curriculum: epochs to ramp PGD steps from 0 (clean) to K.  [default: T']")
@click.option("--fgsm-epochs", type=Number.field("fgsm_epochs"), help="FGSM-PGD: epochs trained with FGSM first.  [default: epochs / 6, the paper's 20 of 120]")
@click.option("--lr", type=Number.field("lr"), help="Initial learning rate (SGD, momentum 0.9, weight decay 1e-4).  [default: 0.01]")
@click.option("--lr-milestones", callback=epoch_list, help="Epochs (counted from 1) from which lr /= 10, e.g. 20,40.  [default: with --epochs, 0.4 and 0.8 * epochs (cifar10: 60 and 100 of 120); the quickstart: 7,10]")
@click.option("--seed", type=Number.field("seed"), help="Seed of every random choice.  [default: 0]")
@click.option("--limit", type=Number.field("limit"), help="Train on the first N training examples.")
@click.option("--eval-limit", type=CountOrAll.field("eval_limit"), help="Examples the per-epoch monitor attacks (test examples; validation ones with --val-size), or all: the whole split (best-val.pt then chooses on all of it).  [default: 500; the quickstart: 200]")
@click.option("--final-eval-limit", type=Number.field("final_eval_limit"), help="Test examples attacked by the final evaluation.  [default: all]")
@click.option("--val-size", type=Number.field("val_size"), help="Hold out N training examples (stratified, drawn from the seed); the per-epoch monitor attacks them instead of the test set, and best-val.npz/.pt keeps the epoch with the best validation PGD accuracy.")
@click.option("--no-final-eval", "final_eval", flag_value=False, default=None, help="Skip the final test evaluation (a study evaluates its runs itself).")
@click.option("--eval-steps", type=Number.field("eval_steps"), help="PGD steps of the test accuracy after each epoch and at the end.  [default: 20]")
@click.option("--attack-mode", type=click.Choice(["eval", "train"]), help="Model mode while attacking (BatchNorm).  [default: eval]")
@click.option("--fosc-reference", type=click.Choice(FOSC_REFERENCES), help="FOSC's reference point in the training attack: the natural example (the paper) or the random start, as the authors' code does (YisenWang/dynamic_adv_training pgd_attack.py lines 62 and 85-88; docs/fosc.md).  [default: natural]")
@click.option("--loss-weights", type=click.Choice(LOSS_WEIGHTS), help="ce: from the second epoch on, weight each example's training loss by its own cross-entropy at the adversarial point, the authors' sample_weight (YisenWang/dynamic_adv_training train_models.py lines 116-117 and 124-127; docs/fosc.md); gairat: GAIRAT's weights (--method gairat's own) on another method's attack.  [default: none; gairat for --method gairat]")
@click.option("--stop", type=click.Choice(STOPS), help="The attack's stop rule instead of the method's: none (K steps), fosc (FOSC <= c_t, Dynamic's), tau (tau steps after misclassification, FAT's); e.g. --method trades --stop fosc.")
@click.option("--tau", type=Number.field("tau"), help="FAT: a fixed tau.  [default: FAT's schedule: 0, then 1 after 50/120 of the epochs, 2 after 90/120]")
@click.option("--beta", type=Number.field("beta"), help="TRADES, MART: weight of the KL term.  [default: 6.0]")
@click.option("--gairat-begin", type=Number.field("gairat_begin"), help="GAIRAT: the first epoch (from 1) whose loss is weighted.  [default: epochs / 2, GAIRAT's 60 of 120]")
@click.option("--gairat-lambda", type=Number.field("gairat_lambda"), help="GAIRAT: Lambda of its weights (tanh(Lambda + 5 (1 - 2 kappa / K)) + 1) / 2.  [default: -1.0]")
@click.option("--amp", type=click.Choice(["bf16"]), help="torch: bf16 autocast.")
@click.option("--channels-last", is_flag=True, default=None, help="torch: channels-last memory format.")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch: torch.compile the attack (falls back to eager if unsupported).")
@click.option("--no-record-fosc", "record_fosc", flag_value=False, default=None, help="Do not write fosc/epoch_NNN.npy (saves one gradient evaluation per example).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory.  [default: runs/<time>-<method>-<model>]")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (exactly; starts it if nothing was saved yet).")
@click.option("--checkpoint-every", type=count("--checkpoint-every", MAX_EXAMPLES), help="Also checkpoint every N SGD steps (a checkpoint is always written after every epoch).")
def train(preset, out, resume, checkpoint_every, amp, channels_last, compile_, **options):
    """Train a model with one of the ten methods and write a run directory.

    Defaults are the paper's MNIST settings (eps 0.3, cnn4, PGD-10 with step eps/4, SGD lr
    0.01, c_max 0.5), on the embedded 10,000-digit MNIST sample, with the quickstart's budget
    when --epochs is not given (10 epochs, lr /10 at epochs 7 and 10, the per-epoch test
    monitor on 200 examples; README, "Choices made for the quickstart"). Another
    --dataset brings its own eps, model and schedule where none is given (fashion-mnist: eps
    0.1; cifar10: 8/255, cnn8 and the paper's CIFAR-10 schedule); the first line says which.
    """
    from minidyn.runs import train_run

    extras = {k: v for k, v in (("amp", amp), ("channels_last", channels_last), ("compile", compile_)) if v}
    given = given_config(preset, options, extras)
    cfg = given.resolved()
    if out is None:
        out = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.method}-{cfg.model}"
    check_out(out)
    rank = os.environ.get("RANK", "0")
    if rank != "0":  # torchrun: rank 0 reports for everyone
        try:
            train_run(cfg, out, resume=resume, checkpoint_every=checkpoint_every)
        except NumericalError:
            # Found on every rank at the same batch. Rank 0 reports it and exits 3; a non-zero
            # exit here could make torchrun stop rank 0 before it has said why.
            sys.exit(0)
        except MinidynError as error:  # this rank's own problem
            raise type(error)(f"rank {rank}: {error}") from None
        return
    click.echo(first_line(given, cfg, out))
    console = ConsoleReporter(cfg)
    try:
        summary = train_run(cfg, out, resume=resume, checkpoint_every=checkpoint_every, reporter=console)
    finally:
        console.close()  # an error message then starts on a line of its own
    if "best_val" in summary:
        best = summary["best_val"]
        click.echo(f"best on validation: epoch {best['epoch']}, PGD-{cfg.eval_steps} {best['val_pgd_acc']:.2f}% "
                   f"on {best['val_n']} validation examples (kept in {Path(out) / BEST_NAMES[cfg.backend]})")
    if cfg.final_eval:
        pgd_key, n_pgd = f"test_pgd{cfg.eval_steps}_acc", summary["test_pgd_n"]
        click.echo(f"test accuracy: clean {summary['test_clean_acc']:.2f}% on "
                   f"{summary['test_n']} examples, PGD-{cfg.eval_steps} {summary[pgd_key]:.2f}% on "
                   f"{'all ' if n_pgd == summary['test_n'] else 'the first '}{n_pgd} (eps {cfg.eps:g})")
    click.echo(f"run directory: {out}")


def given_config(preset: str | None, options: dict, extras: dict) -> TrainConfig:
    """The TrainConfig of `minidyn train`'s options (None: not given): the quickstart's budget
    without --epochs and --preset, then the preset, then the options given."""
    values = dict(QUICKSTART) if preset is None and options.get("epochs") is None else {}
    values.update(load_preset(preset) if preset else {})
    values.update({k: v for k, v in options.items() if v is not None})
    if values.get("data_dir") is not None:  # config.json must name it from any working directory
        values["data_dir"] = os.path.abspath(values["data_dir"])
    return TrainConfig(**values, extras=extras)


def check_out(out) -> None:
    """ConfigError before any work when the run directory `out` cannot be created or written,
    or one of its files (config.json, metrics.jsonl, summary.json, the checkpoint) is a directory."""
    from minidyn.runs.rundir import CHECKPOINT_NAMES, RunDir

    check_writable_dir(out, "--out")
    files = RunDir(out)
    for path in (files.config, files.metrics, files.summary, *(files.path / n for n in CHECKPOINT_NAMES.values())):
        if path.is_dir():
            raise ConfigError(f"--out {out}: {path.name} is a directory, not a file")


def first_line(given: TrainConfig, cfg: TrainConfig, out) -> str:
    """What the run is, and where each choice the user did not make came from."""
    notes = []
    if given.backend == "auto":
        notes.append("torch is installed" if cfg.backend == "torch" else "torch is not installed")
    chosen = given.from_dataset() if cfg.backend == "torch" else [n for n in given.from_dataset() if n == "eps"]
    if chosen:
        notes.append(f"{' and '.join(chosen)}: {cfg.dataset}'s default{'s' * (len(chosen) > 1)}")
    why = f" ({'; '.join(notes)})" if notes else ""
    return (f"minidyn {__version__}: {cfg.method} training of {cfg.model} on {cfg.dataset} with the "
            f"{cfg.backend} backend, eps {cfg.eps:g}, {cfg.epochs} epoch{'s' * (cfg.epochs != 1)}{why} -> {out}")


@main.group()
def data():
    """Datasets: download the official files."""


@data.command("download")
@click.argument("name", type=click.Choice(["mnist", "fashion-mnist", "cifar10"]))
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Where to put the files.  [default: ~/.cache/minidyn/NAME]")
def data_download(name, data_dir):
    """Fetch NAME's official files, verified by SHA-256, into --data-dir.

    mnist-sample needs no download: it ships inside minidyn.
    """
    from minidyn.data.download import download

    paths = download(name, data_dir, log=lambda line: click.echo(line, err=True))
    for path in paths:
        click.echo(str(path))


main.add_command(eval_command, "eval")
main.add_command(compare_command, "compare")
main.add_command(analyze_command, "analyze")
main.add_command(study_command, "study")
main.add_command(course_command, "course")

if __name__ == "__main__":
    main()
