#!/usr/bin/env python
"""The NumPy backend vs torch on the CPU: PGD-K on the same MLP with the same weights.

    python benchmarks/numpy_vs_torch.py

The NumPy backend's `mlp` (hand-written forward/backward) and the torch backend's `mlp` have the
same parameter names and layouts; the torch model gets the NumPy model's weights through
get_params/set_params. Both attack the same batch of mnist-sample digits with minidyn's `pgd`
(plain, final_stats=False), interleaved, and the script prints

    ratio numpy/torch   NumPy seconds / torch seconds per repeat, median (min-max)  (target <= 2)

plus, as a check that the two compute the same thing, the largest difference between their
per-example losses and input gradients at the clean batch.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

C.early_threads()  # --threads: before numpy/torch start their thread pools
MALLOC_TUNED = C.tune_malloc_like_the_cli()  # before torch allocates anything

import numpy as np  # noqa: E402

from minidyn import get_backend, pgd  # noqa: E402
from minidyn.data import load_dataset  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlp", help="mlp (default) or softmax")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None, help="torch and BLAS (OpenMP/OpenBLAS/MKL) threads")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    C.say(C.machine_line("cpu"))
    C.say(f"glibc malloc tuning (as the CLI applies it): {'on' if MALLOC_TUNED else 'off'}; "
          f"numpy {np.__version__}")
    NB, TB = get_backend("numpy"), get_backend("torch", device="cpu")
    shape = (1, 28, 28)
    np_model = NB.make_model(args.model, shape, 10, seed=0)
    th_model = TB.make_model(args.model, shape, 10, seed=0)
    TB.set_params(th_model, NB.get_params(np_model))
    digits = load_dataset("mnist-sample", "train")
    x_np = NB.asarray(digits.x[:args.batch], dtype="float") / 255.0
    y_np = NB.asarray(digits.y[:args.batch])
    x_th, y_th = TB.asarray(x_np), TB.asarray(y_np)

    l_np, g_np = NB.loss_and_grad(np_model, x_np, y_np)
    l_th, g_th = TB.loss_and_grad(th_model, x_th, y_th)
    dl = float(np.max(np.abs(l_np - TB.to_numpy(l_th))))
    dg = float(np.max(np.abs(g_np - TB.to_numpy(g_th))) / max(np.max(np.abs(g_np)), 1e-30))
    K, step = args.steps, args.eps / 4
    fns = {
        "numpy": lambda: pgd(np_model, x_np, y_np, eps=args.eps, step_size=step, steps=K,
                             final_stats=False, rng=NB.rng(0), backend=NB),
        "torch": lambda: pgd(th_model, x_th, y_th, eps=args.eps, step_size=step, steps=K,
                             final_stats=False, rng=TB.rng(0), backend=TB),
    }
    time_it = C.timer("cpu")
    for f in fns.values():
        f()
    times, _ = C.time_rotated(fns, args.repeats, time_it)
    ratio = [a / b for a, b in zip(times["numpy"], times["torch"])]
    C.say(f"model {args.model} (same weights), batch {args.batch}, PGD-{K} eps {args.eps}, "
          f"{args.repeats} repeats; same point: max |loss diff| {dl:.2e}, max |grad diff| / max |grad| {dg:.2e}")
    for k in fns:
        C.say(f"  {k:<6} seconds per PGD-{K} {C.fmt(times[k], 5)}")
    C.say(f"ratio numpy/torch = {C.fmt(ratio)}   (target <= 2.00)")
    med = C.stats(ratio)[0]
    C.say(f"\nSUMMARY numpy_vs_torch: {args.model} PGD-{K} numpy/torch time ratio={med:.3f} "
          f"-> target {C.verdict(ratio, 2.0)} (<= 2.00)")
    return 0


if __name__ == "__main__":
    C.run(main)
