#!/usr/bin/env python
"""AutoAttack's standard suite, minidyn's against torchattacks', on the same model and points.

    python benchmarks/autoattack_vs_torchattacks.py RUN [--limit 500] [--threads 1]
    python benchmarks/autoattack_vs_torchattacks.py RUN --side minidyn --out DIR   # the two sides
    python benchmarks/autoattack_vs_torchattacks.py RUN --side torchattacks --out DIR  # in parallel
    python benchmarks/autoattack_vs_torchattacks.py RUN --out DIR                  # then compare
    python benchmarks/autoattack_vs_torchattacks.py RUN --out DIR --reference      # + the 100-step budget

RUN is a torch run directory or checkpoint (docs/evaluation.md: a 2-epoch Standard cnn4 run on
Fashion-MNIST). Two sides on the first --limit test examples of the run's dataset, at the run's
eps (or --eps):

    minidyn       the command a user runs, `minidyn eval CHECKPOINT --attacks autoattack
                  --limit N --json` (APGD-CE, APGD-T, FAB-T, Square, each on the examples still
                  robust; its own sanity checks included), its "stages" read from the JSON
    torchattacks  torchattacks' `AutoAttack(norm="Linf", version="standard", n_classes=10,
                  seed=--seed)` on the same examples in one batch of --limit, its cascade
                  (`MultiAttack`) keeping the count of examples still robust after each attack
    torchattacks-reference  (with --reference) the same cascade with its attacks at fra31/auto-attack's
                  standard budget: torchattacks' AutoAttack builds APGD, APGDT and FAB with their
                  default 10 iterations (the reference: 100) and Square with the rescaled p
                  schedule (the reference: resc_schedule=False); here they get 100 and False

Both start from the natural examples, so the first stage's count includes the examples the model
gets wrong without an attack. Printed: the robust accuracy after each stage on both sides, their
difference in points and the issue's tolerance (1.5 points for the final accuracy, 2 for each
stage), and each side's seconds. The random starts differ (minidyn's generator, torchattacks'
torch.manual_seed), so the sides agree within noise, not example by example. With --out DIR each side writes DIR/<side>.json and a run without
--side reads what is there and runs only the side that is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

C.early_threads()
MALLOC_TUNED = C.tune_malloc_like_the_cli()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minidyn  # noqa: E402
from minidyn.cli.params import Eps  # noqa: E402
from minidyn.evaluation.checkpoints import checkpoint_in, read_meta, test_set  # noqa: E402

STAGES = ("clean", "apgd-ce", "apgd-t", "fab-t", "square")
TOLERANCE = {"square": 1.5}  # points; the final accuracy (after Square) 1.5, every other stage 2
STAGE_TOLERANCE = 2.0
# torchattacks 3.5.1's AutoAttack(version="standard") builds APGD, APGDT and FAB with their default
# steps=10, and Square with resc_schedule=True; fra31/auto-attack's standard version
# (autoattack/autoattack.py, AutoAttack.__init__ at a392200) runs n_iter=100 for APGD-CE, APGD-T and
# FAB-T and Square with resc_schedule=False, as `minidyn eval --attacks autoattack` does.
REFERENCE_ITERATIONS = 100
SIDES = ("minidyn", "torchattacks", "torchattacks-reference")


def minidyn_side(checkpoint: Path, eps: float, limit: int, seed: int, threads: int | None) -> dict:
    """Robust accuracy (%) after each stage of `minidyn eval --attacks autoattack`."""
    cmd = [sys.executable, "-m", "minidyn", "eval", str(checkpoint), "--attacks", "autoattack",
           "--limit", str(limit), "--eps", repr(eps), "--seed", str(seed), "--device", "cpu", "--json"]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: minidyn eval failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout)
    stages = result["stages"]["autoattack"]
    return {"accuracy": {s: float(stages[s]) for s in STAGES}, "n": result["n"], "seconds": seconds,
            "command": "minidyn " + " ".join(cmd[3:]), "flags": result.get("flags", [])}


def torchattacks_side(checkpoint: Path, eps: float, limit: int, seed: int, reference: bool = False) -> dict:
    """Robust accuracy (%) after each stage of torchattacks' AutoAttack(version="standard"); with
    `reference`, its four attacks set to fra31/auto-attack's standard budget (see REFERENCE)."""
    AutoAttack, note = C.load_torchattacks("autoattack", "AutoAttack")
    if AutoAttack is None:
        raise SystemExit(f"error: {note}")
    meta = read_meta(checkpoint)
    data = test_set(meta, None, None, str(checkpoint))
    n = min(limit, len(data))
    model = minidyn.load_model(str(checkpoint))
    x = torch.from_numpy(data.x[:n].astype(np.float32) / 255.0)  # (n, C, H, W) in [0, 1]
    y = torch.from_numpy(data.y[:n])
    atk = AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
    cascade = atk._autoattack  # MultiAttack: counts the examples still robust after each attack
    if reference:
        for attack in cascade.attacks[:3]:  # APGD, APGDT, FAB: 100 iterations, not their default 10
            attack.steps = REFERENCE_ITERATIONS
        cascade.attacks[3].rescale_schedule = False  # Square: AutoAttack's resc_schedule=False
    cascade._accumulate_multi_atk_records = True
    cascade._multi_atk_records = [0.0] * (len(cascade.attacks) + 1)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item() * 100
    start = time.perf_counter()
    adv = atk(x, y)
    seconds = time.perf_counter() - start
    records = [int(r) for r in cascade._multi_atk_records]
    records += [records[-1]] * (len(cascade.attacks) + 1 - len(records))  # it stops when none is left
    with torch.no_grad():
        recount = (model(adv).argmax(1) == y).float().mean().item() * 100
    accuracy = {"clean": clean, **{s: 100 * r / n for s, r in zip(STAGES[1:], records[1:])}}
    return {"accuracy": accuracy, "n": n, "seconds": seconds, "recount": recount, "torchattacks": note}


def compare(mine: dict, theirs: dict, name: str = "torchattacks") -> bool:
    """Print the stage table of minidyn against one torchattacks side; True when every stage is
    within its tolerance."""
    ok = True
    print(f"{'after':<9}{'minidyn':>10}{name:>24}{'difference':>12}   tolerance")
    for s in STAGES:
        a, b = mine["accuracy"][s], theirs["accuracy"][s]
        tol = TOLERANCE.get(s, STAGE_TOLERANCE)
        within = abs(a - b) <= tol
        ok &= within
        print(f"{s:<9}{a:>9.2f}%{b:>23.2f}%{a - b:>+11.2f}   {tol:g} points: {'within' if within else 'OUTSIDE'}")
    print(f"seconds: minidyn {mine['seconds']:.0f} (the whole `minidyn eval`, its checks included), "
          f"{name} {theirs['seconds']:.0f}; the points {name} returned, classified again: {theirs['recount']:.2f}%")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--eps", default=None, help="default: the run's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", choices=SIDES)
    parser.add_argument("--reference", action="store_true",
                        help="also the torchattacks-reference side: its attacks at AutoAttack's standard budget")
    parser.add_argument("--out", type=Path, help="keep each side's result here (DIR/<side>.json)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    C.set_threads(args.threads)
    checkpoint = checkpoint_in(args.run)
    meta = read_meta(checkpoint)
    eps = Eps().convert(args.eps, None, None) if args.eps else float(meta["eps"])
    sides = [args.side] if args.side else list(SIDES if args.reference else SIDES[:2])
    results = {}
    for side in sides:
        path = args.out / f"{side}.json" if args.out else None
        if path is not None and path.exists() and args.side is None:
            results[side] = json.loads(path.read_text())
            continue
        if side == "minidyn":
            results[side] = minidyn_side(checkpoint, eps, args.limit, args.seed, args.threads)
        else:
            results[side] = torchattacks_side(checkpoint, eps, args.limit, args.seed,
                                              reference=side == "torchattacks-reference")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results[side], indent=1) + "\n")
    if args.side:
        print(json.dumps(results[args.side], indent=1))
        return 0
    print(f"AutoAttack (standard) on {checkpoint}: eps {eps:g}, the first {results['minidyn']['n']} "
          f"{meta.get('dataset')} test examples; {results['torchattacks']['torchattacks']}")
    print(f"  minidyn side: {results['minidyn']['command']}")
    for flag in results["minidyn"]["flags"]:
        print(f"  minidyn eval flag: {flag}")
    ok = True
    for name in sides[1:]:
        print()
        ok &= compare(results["minidyn"], results[name], name)
    return 0 if ok else 1


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    C.run(main)
