#!/usr/bin/env python
"""The work a training run did, in image forward+backward passes, from its run directory.

    python benchmarks/count_passes.py RUN_DIR [RUN_DIR ...]
    python benchmarks/count_passes.py --equal-cost RUN_DIR   # K of the equal-cost Standard

A budget in passes holds on any machine (seconds do not): divide by a machine's passes per
second (e.g. one cnn4 PGD-10 training step's rate) to get its time. Counted, with a forward-only
pass as 1/3 of a forward+backward pass:

    attack   the training attacks' input-gradient evaluations: metrics.jsonl's grad_evals,
             which include the one extra evaluation per example that records FOSC at the final
             point of an example that ran all K steps (--no-record-fosc removes it)
    sgd      one forward+backward per training example and epoch (the SGD step)
    monitor  per epoch, PGD-eval_steps on test_pgd_n test examples (eval_steps passes and one
             forward each) and a clean forward of the whole test set
    final    the final evaluation: a clean forward of the test set and PGD-eval_steps on
             test_pgd_n examples of summary.json (eval_steps passes and one forward each)
"""
from __future__ import annotations

import sys
from pathlib import Path

from minidyn.errors import ConfigError
from minidyn.studies.cost import counted_passes, equal_cost_steps  # `study run --dry-run` predicts it


def passes(run: Path) -> dict:
    """The counts of one run directory (minidyn.studies.cost.counted_passes); exits with its
    message when the number of training examples is unknown."""
    try:
        return counted_passes(run)
    except ConfigError as error:
        sys.exit(str(error))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    if sys.argv[1] == "--equal-cost":
        for name in sys.argv[2:]:
            passes(Path(name))  # its one-line error where the run cannot be counted
            print(f"{name}: equal-cost Standard K = {equal_cost_steps(Path(name))}")
        return
    for name in sys.argv[1:]:
        p = passes(Path(name))
        parts = ", ".join(f"{k} {p[k] / 1e6:.3f} M" for k in ("attack", "sgd", "monitor", "final"))
        print(f"{name}: {p['total'] / 1e6:.3f} M image forward+backward passes ({parts}); "
              f"{p['epochs']} epochs on {p['train_examples']} training examples, "
              f"{p['seconds']:.0f} s of epochs")


if __name__ == "__main__":
    main()
