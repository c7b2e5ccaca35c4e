#!/usr/bin/env python
"""The work a training run did, in image forward+backward passes, from its run directory.

    python benchmarks/count_passes.py RUN_DIR [RUN_DIR ...]

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

import json
import sys
from pathlib import Path

import numpy as np

FORWARD = 1 / 3


def passes(run: Path) -> dict:
    cfg = json.loads((run / "config.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run / "summary.json").read_text())
    files = sorted((run / "fosc").glob("epoch_*.npy"))  # one FOSC per training example
    n_train = len(np.load(files[0])) if files else cfg["limit"]
    if n_train is None:
        sys.exit(f"{run}: no fosc/ files and no --limit: the number of training examples is unknown")
    steps = cfg["eval_steps"]
    work = {
        "attack": sum(e["grad_evals"] for e in epochs),
        "sgd": n_train * len(epochs),
        # the monitor attacks the validation split with --val-size, the test set otherwise
        "monitor": sum(e.get("test_pgd_n", e.get("val_pgd_n", 0)) * (steps + FORWARD)
                       + e.get("test_clean_n", e.get("val_clean_n", summary.get("test_n", 0))) * FORWARD
                       for e in epochs),
        # none with --no-final-eval (a study evaluates its cells itself)
        "final": (summary.get("test_pgd_n", summary["test_n"]) * (steps + FORWARD) + summary["test_n"] * FORWARD
                  if "test_n" in summary else 0),
    }
    return {**work, "total": sum(work.values()), "epochs": len(epochs), "train_examples": n_train,
            "seconds": sum(e["seconds"] for e in epochs)}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    for name in sys.argv[1:]:
        p = passes(Path(name))
        parts = ", ".join(f"{k} {p[k] / 1e6:.3f} M" for k in ("attack", "sgd", "monitor", "final"))
        print(f"{name}: {p['total'] / 1e6:.3f} M image forward+backward passes ({parts}); "
              f"{p['epochs']} epochs on {p['train_examples']} training examples, "
              f"{p['seconds']:.0f} s of epochs")


if __name__ == "__main__":
    main()
