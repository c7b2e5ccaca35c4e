"""What a training run prints: on the console of `minidyn train`, and into a study worker's log
(`python -m minidyn.studies.worker`, whose stdout and stderr are the task's log file). One class,
so that a cell's log reads like the `minidyn train` it stands for."""
from __future__ import annotations

import sys

import click

from minidyn.files.config import TrainConfig
from minidyn.runs.reporter import Reporter


class ConsoleReporter(Reporter):
    """What `minidyn train` prints: the notes and one summary line per epoch (stdout), and a
    progress bar over each epoch's examples (stderr, only on a terminal: a log file gets the
    epoch lines, not a bar's label)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg, self.bar, self.shown = cfg, None, 0

    def note(self, line: str) -> None:
        click.echo(line)

    def progress(self, t: int, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:  # the epoch's first step (after a resume: its first since then)
            self.bar = click.progressbar(length=total, label=f"epoch {t + 1}/{self.cfg.epochs}",
                                         file=sys.stderr, show_pos=True)
            self.bar.__enter__()
            self.shown = 0
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def epoch(self, record: dict) -> None:
        self.close()
        c_t = f"c_t {record['c_t']:.3f}  " if record["c_t"] is not None else ""
        fosc = f"fosc {record['fosc_mean']:.3f}  " if record["fosc_mean"] is not None else ""
        on = "val" if "val_pgd_acc" in record else "test"
        click.echo(f"epoch {record['epoch'] + 1:>3}/{self.cfg.epochs}  {c_t}"
                   f"steps {record['pgd_steps_mean']:.2f}/{record['pgd_steps']}  {fosc}"
                   f"loss {record['train_loss']:.3f}  acc {record['train_acc']:.1f}%  "
                   f"{on} clean {record[f'{on}_clean_acc']:.1f}% (n={record[f'{on}_clean_n']})  "
                   f"pgd{self.cfg.eval_steps} {record[f'{on}_pgd_acc']:.1f}% (n={record[f'{on}_pgd_n']})  "
                   f"{record['seconds']:.1f}s")
