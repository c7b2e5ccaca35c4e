#!/usr/bin/env python
"""AutoAttack's targeted and query attacks: minidyn's APGD-T, FAB-T and Square (torch backend)
against torchattacks' APGDT, FAB(multi_targeted=True) and Square, on the same model, batch,
device and settings, timed in one process and interleaved (the order rotates every repeat).

    python benchmarks/attacks_vs_torchattacks.py --threads 1             # CPU, a few minutes
    python benchmarks/attacks_vs_torchattacks.py --steps 100 --queries 5000 --batch 500 --device cuda

Settings: AutoAttack's standard ones (9 target classes, one restart, FAB's alpha_max 0.1, eta
1.05, beta 0.9, Square's p_init 0.8) except the budget, which is --steps iterations per target
for APGD-T and FAB-T (AutoAttack: 100) and --queries for Square (AutoAttack: 5,000), kept small
by default so that a CPU run takes minutes. Square runs the rescaled p schedule on both sides
(torchattacks' default, minidyn's rescale_schedule=True; AutoAttack's standard version, minidyn's
default, passes resc_schedule=False: the same work per query, another p schedule).

The model is the random initialisation (seed 0) of --model in eval mode, the inputs the first
--batch digits of mnist-sample (uniform noise for 3x32x32 models) and the labels the model's own
predictions, so every example is attacked. The default eps (1e-4) breaks none of them: every
attack then spends its whole budget on every example (the worst case, and the same work on both
sides: minidyn's attacks stop an example once it is broken, torchattacks' FAB and APGDT only
between targets). The fooled counts, and on how many examples the two verdicts agree, are
printed beside the times. With --train-steps N the model is first trained naturally for N SGD
steps and the first --batch test digits are attacked with their true labels (a realistic case
for the agreement of the verdicts: e.g. --train-steps 150 --batch 64 --steps 100 --eps 0.1
--attacks fab-t --warmup 0 --repeats 1).

Prints, per attack, seconds per run (median of the repeats), the per-repeat ratio minidyn time /
torchattacks time as median (min-max) (target <= 1.00), and for Square the queries per second
(example-queries: batch x queries / seconds). torchattacks is loaded without its package
__init__ where that needs scipy (`_common.load_torchattacks`).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

C.early_threads()  # --threads: before numpy/torch start their thread pools
MALLOC_TUNED = C.tune_malloc_like_the_cli()  # before torch allocates anything

import torch  # noqa: E402
from torch import nn  # noqa: E402

from minidyn import get_backend  # noqa: E402
from minidyn.apgd import apgd_targeted  # noqa: E402
from minidyn.fab import fab_targeted  # noqa: E402
from minidyn.square import square  # noqa: E402

ATTACKS = ("apgd-t", "fab-t", "square")
TORCHATTACKS = {"apgd-t": ("apgdt", "APGDT"), "fab-t": ("fab", "FAB"), "square": ("square", "Square")}


class Bare(nn.Module):
    """The model as torchattacks sees it: logits of [0, 1] inputs, nothing else."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def batch(name: str, n: int, B, model, trained: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): mnist-sample digits (1x28x28 models) or uniform noise. Labels: the model's own
    predictions (every example attacked), or for a trained model the test digits' true labels."""
    shape = (1, 28, 28) if name in ("cnn4", "mlp", "softmax") else (3, 32, 32)
    if shape == (1, 28, 28):
        from minidyn.data import load_dataset

        digits = load_dataset("mnist-sample", "test" if trained else "train")
        x = torch.from_numpy(digits.x[:n]).float().div_(255).to(B.device)
        if trained:
            return x, torch.from_numpy(digits.y[:n]).long().to(B.device)
    else:
        x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(0)).to(B.device)
    return x, B.argmax(B.logits(model, x))


def train(model: nn.Module, steps: int, device) -> None:
    """`steps` SGD steps (lr 0.05, momentum 0.9, batches of 64 drawn with seed 0) of natural
    training on the mnist-sample training digits, then eval mode."""
    from minidyn.data import load_dataset

    digits = load_dataset("mnist-sample", "train")
    x, y = torch.from_numpy(digits.x).float().div_(255), torch.from_numpy(digits.y).long()
    opt, gen = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def runners(attack: str, args, B, model, bare, x, y, ta_cls) -> dict:
    """{"minidyn": fn, "torchattacks": fn}: each runs the attack once and returns the (B,) bool
    tensor of the examples it broke."""
    eps, steps = args.eps, args.steps
    if attack == "apgd-t":
        mine = lambda: apgd_targeted(model, x, y, eps=eps, steps=steps, n_target_classes=9,  # noqa: E731
                                     rng=B.rng(0), backend=B).found
        ta = ta_cls and ta_cls(bare, eps=eps, steps=steps, n_restarts=1, n_classes=10)
    elif attack == "fab-t":
        mine = lambda: fab_targeted(model, x, y, eps=eps, steps=steps, n_target_classes=9,  # noqa: E731
                                    rng=B.rng(0), backend=B).fooled
        ta = ta_cls and ta_cls(bare, eps=eps, steps=steps, n_restarts=1, multi_targeted=True, n_classes=10)
    else:
        mine = lambda: square(model, x, y, eps=eps, n_queries=args.queries, rng=B.rng(0),  # noqa: E731
                              rescale_schedule=True, backend=B).found
        ta = ta_cls and ta_cls(bare, eps=eps, n_queries=args.queries, n_restarts=1)

    def theirs():
        with torch.no_grad():
            return bare(ta(x, y)).argmax(1) != y

    return {"minidyn": mine, "torchattacks": theirs if ta else None}


def bench(attack: str, args, B, model, bare, x, y, time_it) -> dict:
    ta_cls, note = C.load_torchattacks(*TORCHATTACKS[attack])
    fns = {k: v for k, v in runners(attack, args, B, model, bare, x, y, ta_cls).items() if v}
    for _ in range(args.warmup):  # kernels, allocator, oneDNN primitives for these shapes
        for fn in fns.values():
            fn()
    times, last = C.time_rotated(fns, args.repeats, time_it)
    ratios = [m / t for m, t in zip(times["minidyn"], times.get("torchattacks", []))]
    agree = int((last["minidyn"] == last["torchattacks"]).sum()) if "torchattacks" in last else None
    return {"attack": attack, "note": note, "times": times, "ratios": ratios,
            "fooled": {k: int(v.sum()) for k, v in last.items()}, "agree": agree}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cnn4", help="minidyn model name (default cnn4)")
    p.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset of " + ", ".join(ATTACKS))
    p.add_argument("--batch", type=int, default=32, help="examples (default 32)")
    p.add_argument("--steps", type=int, default=10, help="APGD-T and FAB-T iterations per target (default 10; AutoAttack 100)")
    p.add_argument("--queries", type=int, default=300, help="Square's queries (default 300; AutoAttack 5000)")
    p.add_argument("--eps", type=float, default=1e-4, help="L_inf budget (default 1e-4: nothing is broken, whole budgets run)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per implementation (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each attack first (default 1)")
    p.add_argument("--train-steps", type=int, default=0,
                   help="train the model naturally for this many SGD steps first and attack test digits "
                        "with their true labels (1x28x28 models; default 0: random init, own labels)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        sys.exit(f"error: unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
    B = get_backend("torch", device=args.device)
    shape = (1, 28, 28) if args.model in ("cnn4", "mlp", "softmax") else (3, 32, 32)
    model = B.make_model(args.model, shape, 10, seed=0).eval()
    if args.train_steps > 0:
        if shape != (1, 28, 28):
            sys.exit("error: --train-steps needs a 1x28x28 model (cnn4, mlp, softmax)")
        train(model, args.train_steps, B.device)
    bare = Bare(model).eval()
    x, y = batch(args.model, args.batch, B, model, args.train_steps > 0)
    C.say(C.machine_line(args.device))
    with torch.no_grad():
        clean = int((bare(x).argmax(1) == y).sum())
    init = f"{args.train_steps} SGD steps" if args.train_steps else "random init"
    C.say(f"model {args.model} ({init}, eval; clean {clean} of {args.batch}), batch {args.batch}, eps {args.eps}, "
          f"{args.steps} iterations per target (9 targets), Square {args.queries} queries, "
          f"{args.repeats} repeats; glibc malloc tuning {'on' if MALLOC_TUNED else 'off'}")
    time_it, parts = C.timer(args.device), []
    for attack in attacks:
        r = bench(attack, args, B, model, bare, x, y, time_it)
        t = {k: C.stats(v)[0] for k, v in r["times"].items()}
        C.say(f"\n{attack}: {r['note']}")
        for k, v in t.items():
            extra = f", {args.batch * args.queries / v:,.0f} example-queries/s" if attack == "square" else ""
            C.say(f"  {k:13s} {v:8.3f} s per run{extra}; fooled {r['fooled'][k]} of {args.batch}")
        if r["agree"] is not None:
            C.say(f"  verdicts agree on {r['agree']} of {args.batch} examples")
        C.say(f"  ratio minidyn / torchattacks = {C.fmt(r['ratios'])}")
        parts.append(f"{attack} {C.fmt(r['ratios'])} [{C.verdict(r['ratios'], 1.00)}]")
    C.say("\nSUMMARY attacks_vs_torchattacks (minidyn time / torchattacks time, median (min-max) "
          "of the repeats; target <= 1.00): " + " | ".join(parts))
    return 0


if __name__ == "__main__":
    C.run(main)
