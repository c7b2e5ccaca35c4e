#!/usr/bin/env python
"""Black-box APGD-CE: the point minidyn transfers against the one torchattacks' APGD gives.

    python benchmarks/transfer_apgd.py TARGET SOURCE [--eps 0.1] [--limit 500] [--steps 100]

TARGET and SOURCE are torch run directories or checkpoints (e.g. two `minidyn train --backend
torch --method unsecured --model mlp` runs with different seeds). APGD-CE is crafted on SOURCE
and the points are classified by TARGET, three ways, on the first --limit test examples:

    minidyn       what `minidyn eval TARGET --source SOURCE` transfers: APGD run to the end,
                  its highest-loss point x_best
    first-found   what it transferred before: APGD stopped at each example's first
                  misclassified iterate (stop_when_misclassified=True)
    torchattacks  torchattacks.APGD(loss="ce", n_restarts=1) on SOURCE: its last misclassified
                  iterate where one was found, the natural example elsewhere

It prints TARGET's accuracy on each (lower is a stronger transfer attack) and, for minidyn
against each other one, a paired comparison: the examples only one of the two breaks. The
random starts differ between minidyn and torchattacks, so they agree only within noise.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

C.early_threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minidyn  # noqa: E402
from minidyn.apgd import apgd  # noqa: E402
from minidyn.cli.params import Eps  # noqa: E402
from minidyn.data import load_dataset  # noqa: E402
from minidyn.evaluation.checkpoints import checkpoint_in, load_checkpoint  # noqa: E402
from minidyn.evaluation.evaluate import craft  # noqa: E402
from minidyn.data.batches import batch_indices, to_backend  # noqa: E402


def transferred(points, B, target, data, idx) -> np.ndarray:
    """(len(idx),) bool: TARGET classifies the transferred points correctly."""
    _, y = to_backend(B, data, idx)
    return B.to_numpy(B.argmax(B.logits(target, points)) == y)


def compare(name: str, a: np.ndarray, b: np.ndarray) -> str:
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    z = (only_a - only_b) / math.sqrt(only_a + only_b) if only_a + only_b else 0.0
    verdict = "beyond noise" if abs(z) > 2 else "within noise (|z| <= 2)"
    return (f"minidyn vs {name}: {only_b} examples broken only by minidyn, {only_a} only by {name}; "
            f"z = {z:+.2f}, {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("source")
    parser.add_argument("--eps", default="0.1")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    eps = Eps().convert(args.eps, None, None)
    APGD, note = C.load_torchattacks("apgd", "APGD")
    B, target, meta = load_checkpoint(args.target, "cpu")
    src_B, source, _ = load_checkpoint(args.source, "cpu")
    if B.name != "torch" or src_B.name != "torch":
        raise SystemExit("error: TARGET and SOURCE must be torch checkpoints (torchattacks needs an nn.Module)")
    data = load_dataset(meta["dataset"], "test")
    n = min(args.limit, len(data))
    ta = APGD(minidyn.load_model(str(checkpoint_in(args.source))), norm="Linf", eps=eps, steps=args.steps, n_restarts=1,
              loss="ce", seed=args.seed) if APGD else None
    correct = {"minidyn": [], "first-found": [], "torchattacks": [], "clean": []}
    for batch, idx in enumerate(batch_indices(np.arange(n), args.batch)):
        x, y = to_backend(src_B, data, idx)
        rng = lambda: src_B.rng(args.seed * 1000 + batch)  # noqa: E731  the same start for both
        points = {"minidyn": craft("apgd-ce", src_B, source, x, y, eps=eps, rng=rng(),
                                   apgd_steps=args.steps, transfer=True),
                  "first-found": apgd(source, x, y, eps=eps, steps=args.steps, rng=rng(),
                                      stop_when_misclassified=True, backend=src_B).x_adv,
                  "clean": x}
        if ta is not None:
            points["torchattacks"] = ta(x, y).detach()
        for name, pts in points.items():
            correct[name].append(transferred(pts, B, target, data, idx))
    acc = {k: np.concatenate(v) for k, v in correct.items() if v}
    print(f"APGD-CE crafted on {args.source}, classified by {args.target}: eps {eps:g}, "
          f"{args.steps} iterations, first {n} {data.name} test examples; {note}")
    for name, ok in acc.items():
        print(f"  {name:<13} target accuracy {100 * ok.mean():6.2f}%  ({int(ok.sum())}/{n})")
    for name in ("first-found", "torchattacks"):
        if name in acc:
            print("  " + compare(name, acc["minidyn"], acc[name]))


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    C.run(main)
