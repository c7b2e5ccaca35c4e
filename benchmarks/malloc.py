#!/usr/bin/env python
"""PGD-K with and without the CLI's glibc malloc tuning (minidyn/runs/malloc.py), each in a fresh process.

    python benchmarks/malloc.py

mallopt must be set before the buffers it is meant for are allocated, so every measurement runs
in its own subprocess: `MINIDYN_MALLOC_TUNING=1` (the CLI's default: M_MMAP_MAX=0,
M_TRIM_THRESHOLD=-1, M_TOP_PAD=256 MiB) or `=0` (glibc's stock behaviour). A child attacks one
model only: glibc's stock allocator adapts its mmap threshold to the blocks freed before (up to
32 MiB), so a cnn8 run would change what a later cnn4 run in the same process measures. The two
settings alternate (tuned first in even repeats, stock first in odd ones); each child times
--runs PGD-K attacks after one warm-up and reports its median time and the minor page faults per
attack. Printed per model, as median (min-max) over the repeats:

    ratio tuned/stock   the tuned child's time / the paired stock child's time
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def child(args) -> None:
    """One process: tune (or not) first, then time PGD-K on each model."""
    C.early_threads()
    tuned = C.tune_malloc_like_the_cli()
    import resource
    import statistics
    import time

    import torch

    from minidyn import get_backend, pgd

    C.set_threads(args.threads)
    B = get_backend("torch", device="cpu")
    gen = torch.Generator().manual_seed(0)
    setups = {}
    for name in args.models.split(","):
        shape, eps = ((1, 28, 28), 0.3) if name in ("cnn4", "mlp", "softmax") else ((3, 32, 32), 8 / 255)
        model = B.make_model(name, shape, 10, seed=0).eval()
        x = torch.rand((args.batch, *shape), generator=gen)
        y = torch.randint(0, 10, (args.batch,), generator=gen)
        setups[name] = (model, x, y, eps)

    def attack(name):
        model, x, y, eps = setups[name]
        pgd(model, x, y, eps=eps, step_size=eps / 4, steps=args.steps, final_stats=False,
            rng=B.rng(0), backend=B)

    out = {name: {"seconds": [], "faults": []} for name in setups}
    for name in setups:
        attack(name)  # warm-up
    for _ in range(args.runs):
        for name in setups:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            attack(name)
            out[name]["seconds"].append(time.perf_counter() - t0)
            out[name]["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    result = {name: {"seconds": statistics.median(v["seconds"]), "faults": statistics.median(v["faults"])}
              for name, v in out.items()}
    print("RESULT " + json.dumps({"tuned": tuned, "models": result}), flush=True)


def run_child(tuned: bool, model: str, args) -> dict:
    env = dict(os.environ, MINIDYN_MALLOC_TUNING="1" if tuned else "0")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--models", model,
           "--batch", str(args.batch), "--steps", str(args.steps), "--runs", str(args.runs)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"child failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    data = json.loads(lines[-1][7:])
    if data["tuned"] != tuned:
        sys.exit(f"the child's malloc tuning is {data['tuned']}, expected {tuned} (not Linux/glibc?)")
    return data["models"][model]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cnn4,cnn8")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="pairs of child processes (default 3)")
    p.add_argument("--runs", type=int, default=2, help="timed attacks per model in a child (default 2)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import torch

    C.set_threads(args.threads)
    C.say(C.machine_line("cpu"))
    C.say(f"PGD-{args.steps}, batch {args.batch}, {args.repeats} pairs of fresh processes per model, "
          f"median of {args.runs} attacks in each")
    del torch
    models = [m for m in args.models.split(",") if m]
    res = {(m, tuned): [] for m in models for tuned in (True, False)}
    for r in range(args.repeats):
        for m in models:
            for tuned in ((True, False) if r % 2 == 0 else (False, True)):
                res[m, tuned].append(run_child(tuned, m, args))
    parts = []
    for m in models:
        t_on = [d["seconds"] for d in res[m, True]]
        t_off = [d["seconds"] for d in res[m, False]]
        f_on = [d["faults"] for d in res[m, True]]
        f_off = [d["faults"] for d in res[m, False]]
        ratio = [a / b for a, b in zip(t_on, t_off)]
        C.say(f"  {m}: stock {C.fmt(t_off, 4)} s, {C.stats(f_off)[0]:,.0f} page faults per attack; "
              f"tuned {C.fmt(t_on, 4)} s, {C.stats(f_on)[0]:,.0f} page faults per attack")
        C.say(f"  {m}: ratio tuned/stock = {C.fmt(ratio)}")
        parts.append(f"{m} tuned/stock={C.stats(ratio)[0]:.3f}")
    C.say("\nSUMMARY malloc: PGD-%d time with the CLI's mallopt tuning / without: %s (lower is better)"
          % (args.steps, " | ".join(parts)))
    return 0


if __name__ == "__main__":
    C.run(main)
