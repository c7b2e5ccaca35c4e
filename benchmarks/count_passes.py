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

import argparse
import sys
from pathlib import Path

from minidyn.errors import ConfigError
from minidyn.studies.cost import counted_passes, equal_cost_steps  # `study run --dry-run` predicts it


def passes(run: Path) -> dict:
    """The counts of one run directory (minidyn.studies.cost.counted_passes); exits with one
    line when it is not a run directory, has not finished (no summary.json), holds files minidyn did
    not write, or the number of training examples is unknown."""
    if not (run / "config.json").is_file() or not (run / "metrics.jsonl").is_file():
        sys.exit(f"error: {run} is not a run directory (no config.json and metrics.jsonl)")
    if not (run / "summary.json").is_file():
        sys.exit(f"error: {run} has not finished (no summary.json); count it when its training is done")
    try:
        counts = counted_passes(run)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as error:  # a hand-edited or foreign file
        sys.exit(f"error: {run} is not a run directory minidyn wrote ({type(error).__name__}: {error})")
    if counts["epochs"] == 0:
        sys.exit(f"error: {run}: its metrics.jsonl records no epoch")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="a run directory (minidyn train --out)")
    parser.add_argument("--equal-cost", action="store_true",
                        help="print K of the Standard that costs what each run's training attack cost")
    args = parser.parse_args()
    for run in args.runs:
        p = passes(run)
        if args.equal_cost:
            print(f"{run}: equal-cost Standard K = {equal_cost_steps(run)}")
            continue
        parts = ", ".join(f"{k} {p[k] / 1e6:.3f} M" for k in ("attack", "sgd", "monitor", "final"))
        print(f"{run}: {p['total'] / 1e6:.3f} M image forward+backward passes ({parts}); "
              f"{p['epochs']} epochs on {p['train_examples']} training examples, "
              f"{p['seconds']:.0f} s of epochs")


if __name__ == "__main__":
    main()
