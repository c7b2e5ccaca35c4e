#!/usr/bin/env python
"""One training epoch of Dynamic vs Standard adversarial training: does compaction pay?

    python benchmarks/dynamic_vs_standard.py                 # torch CPU, cnn4, 2048 mnist-sample digits

Both epochs run `minidyn.runs.standalone_epoch` (Algorithm 1, `minidyn.train.train_epoch`) from the same weights (a model first trained
naturally for --pretrain-epochs, so that FOSC values are those of a model in training), the same
data order and the same random starts; they differ only in the attack plan:

    standard   PGD-K (step eps/4, random start), every example K steps
    dynamic    the same PGD with Algorithm 1's stop: an example stops once FOSC <= c_t

c_t (--c-t auto, the default) is the median FOSC of a probe batch of test digits after K/2 PGD
steps, so that a good fraction of the examples stops early. The epochs are interleaved (the
order alternates); each repeat gives

    grad-eval saving    1 - dynamic grad evals / standard grad evals   (identical every repeat)
    wall-time saving    1 - dynamic seconds / standard seconds         (that repeat's pair)
    realised            wall-time saving / grad-eval saving            (target >= 0.80)

printed as median (min-max) over the repeats. Both sides record FOSC at the final point
(`record_fosc`, as `minidyn train` does by default; --no-record-fosc turns it off).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

C.early_threads()  # --threads: before numpy/torch start their thread pools
MALLOC_TUNED = C.tune_malloc_like_the_cli()  # before torch allocates anything

import numpy as np  # noqa: E402

from minidyn import get_backend, pgd  # noqa: E402
from minidyn.files.config import TrainConfig  # noqa: E402
from minidyn.data import load_dataset  # noqa: E402
from minidyn.methods import AttackPlan  # noqa: E402
from minidyn.data.batches import to_backend  # noqa: E402
from minidyn.runs import standalone_epoch as train_epoch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn4")
    p.add_argument("--n", type=int, default=2048, help="training examples (default 2048)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="K (default 10)")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--c-t", default="auto", help="FOSC stopping target, or auto (default)")
    p.add_argument("--pretrain-epochs", type=int, default=1, help="natural epochs first (default 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-record-fosc", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    C.say(C.machine_line(args.device))
    C.say(f"glibc malloc tuning (as the CLI applies it): {'on' if MALLOC_TUNED else 'off'}")

    B = get_backend("torch", device=args.device)
    train = load_dataset("mnist-sample", "train").subset(args.n)
    test = load_dataset("mnist-sample", "test")
    cfg = TrainConfig(backend="torch", device=args.device, model=args.model, method="dynamic",
                      epochs=max(1, args.pretrain_epochs + 1), batch_size=args.batch, eps=args.eps,
                      steps=args.steps, limit=args.n, record_fosc=not args.no_record_fosc).resolved()
    model = B.make_model(args.model, (1, 28, 28), 10, seed=cfg.seed)
    opt = B.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    start = time.perf_counter()
    for e in range(args.pretrain_epochs):
        train_epoch(B, model, opt, train, cfg, e, plan=None)
    params = B.get_params(model)
    K, step = args.steps, args.eps / 4

    if args.c_t == "auto":
        x, y = to_backend(B, test, np.arange(min(args.batch, len(test))))
        probe = pgd(model, x, y, eps=args.eps, step_size=step, steps=K, trace=True, rng=B.rng(1), backend=B)
        c_t = float(np.nanmedian(probe.trace.fosc[K // 2]))
        how = f"auto: median FOSC of {len(y)} test digits after {K // 2} of {K} PGD steps"
    else:
        c_t, how = float(args.c_t), "given"
    C.say(f"model {args.model}, {args.n} mnist-sample digits, batch {args.batch}, PGD-{K} eps {args.eps} "
          f"step {step:g}, record_fosc {cfg.record_fosc}, {args.pretrain_epochs} natural pre-training "
          f"epoch(s) ({time.perf_counter() - start:.1f} s); c_t = {c_t:.4g} ({how})")

    plans = {"standard": AttackPlan(K, step, random_start=True),
             "dynamic": AttackPlan(K, step, random_start=True, stop_fosc=c_t)}

    def epoch(name: str, data=train):
        B.set_params(model, params)  # weights and BatchNorm statistics
        optimizer = B.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        t0 = time.perf_counter()
        stats = train_epoch(B, model, optimizer, data, cfg, args.pretrain_epochs, plans[name])
        if args.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return time.perf_counter() - t0, stats

    for name in plans:  # warm-up on two batches
        epoch(name, train.subset(min(len(train), 2 * args.batch)))
    seconds = {name: [] for name in plans}
    evals, steps = {}, {}
    for r in range(args.repeats):
        for name in (("standard", "dynamic") if r % 2 == 0 else ("dynamic", "standard")):
            dt, stats = epoch(name)
            seconds[name].append(dt)
            evals[name], steps[name] = stats.grad_evals / args.n, stats.steps
    for name in plans:
        s = steps[name]
        C.say(f"  {name:<9} {evals[name]:6.3f} grad evals/example, PGD steps mean {s.mean():.2f} "
              f"(stopped before K: {100 * np.mean(s < K):.0f}%), epoch seconds {C.fmt(seconds[name], 2)}")
    e_std, e_dyn = evals["standard"], evals["dynamic"]
    eval_saving = 1 - e_dyn / e_std
    wall_saving = [1 - d / s for d, s in zip(seconds["dynamic"], seconds["standard"])]
    realised = [w / eval_saving for w in wall_saving] if eval_saving > 0 else []
    # the SGD step (one forward+backward with parameter gradients per example) is paid by both
    # sides and is not a grad eval: counting it as one shows how much of the gap it explains
    saving_sgd = 1 - (e_dyn + 1) / (e_std + 1)
    realised_sgd = [w / saving_sgd for w in wall_saving] if saving_sgd > 0 else []
    C.say(f"grad-eval saving   = {100 * eval_saving:.1f}%  ({e_std:.3f} -> {e_dyn:.3f} per example)")
    C.say(f"wall-time saving   = {C.fmt([100 * w for w in wall_saving], 1)} %")
    C.say(f"realised = wall-time saving / grad-eval saving = {C.fmt(realised)}   (target >= 0.80)")
    C.say(f"realised, counting the SGD step as one more evaluation on both sides = {C.fmt(realised_sgd)}")
    med = C.stats(realised)[0] if realised else float("nan")
    C.say(f"\nSUMMARY dynamic_vs_standard: grad evals/example {e_std:.2f} -> {e_dyn:.2f} "
          f"(-{100 * eval_saving:.1f}%), wall time -{100 * C.stats(wall_saving)[0]:.1f}%, "
          f"realised={med:.3f} -> target {C.verdict(realised, 0.80, at_most=False)} (>= 0.80)")
    return 0


if __name__ == "__main__":
    C.run(main)
