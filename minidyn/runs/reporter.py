"""What a training run tells the person who started it, through one object.

The run loop (runs.py) calls a `Reporter` at three kinds of moments; this base class says
nothing, so a library caller passes none and `minidyn train` passes one that prints (the
CLI's progress bar and epoch lines, cli/main.py). Under torchrun the CLI gives a printing
reporter to rank 0 only.
"""
from __future__ import annotations


class Reporter:
    """Progress and notes of a run; override what you want to see.

    In a run's order: `note` says where a resumed run continues (or that it starts over),
    `progress` follows every SGD step, `epoch` gets each finished epoch's metrics record (after
    its files are written), and `note` again gives the warnings about c_t after epoch 1.
    """

    def note(self, line: str) -> None:
        """One line for the user: where a resumed run continues, a warning."""

    def progress(self, t: int, done: int, total: int) -> None:
        """`done` of the `total` training examples of epoch t (from 0) are trained (all ranks')."""

    def epoch(self, record: dict) -> None:
        """Epoch record["epoch"] is finished: its metrics.jsonl line (runs.epoch_record)."""


class Notes(Reporter):
    """A reporter that keeps the notes, in `lines` (for tests and scripts)."""

    def __init__(self):
        self.lines: list[str] = []

    def note(self, line: str) -> None:
        self.lines.append(line)
