#!/usr/bin/env python
"""PGD throughput: minidyn's `pgd` (torch backend) vs torchattacks' PGD vs the hardware limit.

    python benchmarks/pgd_throughput.py                      # CPU, cnn4 (batch 128) + cnn8 (batch 32), under a minute
    python benchmarks/pgd_throughput.py --batch 128 --repeats 5          # the issue's setting (minutes on 2 cores)
    python benchmarks/pgd_throughput.py --device cuda --models cnn8,wrn-34-10 --batch 512 --amp bf16 \\
        --channels-last --compile

On the same model (random initialisation, eval mode), batch (the first mnist-sample digits for
1x28x28 models, uniform noise for 3x32x32 ones), device and settings it times, in
one process and interleaved (the order rotates every repeat):

    limit            K forward+backward passes of the bare model (autograd.grad w.r.t. the input)
                     at the K points of a PGD trajectory, computed beforehand
    torchattacks     torchattacks.PGD (the `bench` extra; printed as n/a when not installed)
    plain            minidyn pgd, final_stats=False: exactly K gradient evaluations
    fosc_each_step   minidyn pgd, stop_fosc=0.0, final_stats=False: K evaluations, FOSC computed
                     after every step and the stop check made (no example reaches 0)
    final_stats      minidyn pgd, final_stats=True: K+1 evaluations (FOSC and loss at x_adv)

and prints, as median (min-max) of the per-repeat ratios:

    ratio_vs_torchattacks   minidyn time / torchattacks time             (target <= 1.00)
    ratio_vs_limit          minidyn time / (evaluations * one limit pass) (target <= 1.05)
    fosc_overhead           fosc_each_step / plain - 1                    (target <= 3%)

images/s, and the share of the device's measured matmul peak the attack reaches (FLOPs of one
forward+backward counted by torch's FlopCounterMode). The glibc allocator tuning of the CLI is
applied first, as `minidyn train` does (MINIDYN_MALLOC_TUNING=0 turns it off).
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
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from minidyn import get_backend, pgd  # noqa: E402

VARIANTS = ("limit", "torchattacks", "plain", "fosc_each_step", "final_stats")
MINIDYN = ("plain", "fosc_each_step", "final_stats")
# Without --batch: 128 for cnn4, mlp and softmax, 32 for the larger models, so that the default run stays near a minute on
# two CPU cores (one cnn8 forward+backward at batch 128 is ~68 GFLOP, ~0.5-1 s there).
QUICK_BATCH = {"cnn4": 128, "mlp": 128, "softmax": 128}


def input_setup(model: str) -> tuple[tuple[int, int, int], float]:
    """(input shape, eps): MNIST's for cnn4/mlp/softmax (eps 0.3), CIFAR-10's otherwise (8/255)."""
    if model in ("cnn4", "mlp", "softmax"):
        return (1, 28, 28), 0.3
    return (3, 32, 32), 8 / 255


class Bare(nn.Module):
    """The model with the same input layout and autocast as minidyn's backend applies."""

    def __init__(self, model: nn.Module, device: str, amp: bool, channels_last: bool):
        super().__init__()
        self.model, self.device_type, self.amp, self.channels_last = model, torch.device(device).type, amp, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp:
            with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
                return self.model(x).float()
        return self.model(x)


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One gradient evaluation: per-example CE summed, gradient w.r.t. the input only."""
    xi = x.detach().requires_grad_(True)
    losses = F.cross_entropy(model(xi), y, reduction="none")
    (g,) = torch.autograd.grad(losses.sum(), xi)
    return g


def pass_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """FLOPs of one forward+backward (w.r.t. the input), counted by torch; None if unavailable."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            # the counter refuses autograd.grad to a leaf: differentiate w.r.t. a copy of it
            xi = x.detach().requires_grad_(True).clone()
            losses = F.cross_entropy(model(xi), y, reduction="none")
            torch.autograd.grad(losses.sum(), xi)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001  (the counter does not know every op on every version)
        return None


def matmul_peak(device: str, dtype: torch.dtype, time_it, n: int | None = None) -> float:
    """Best FLOP/s of an n x n matmul on the device (the 'measured peak')."""
    n = n or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = min(time_it(lambda: a @ b) for _ in range(3))
    return 2 * n ** 3 / best


def minidyn_variants(model, x, y, eps: float, steps: int, B) -> dict:
    """The three minidyn PGD variants timed (step eps/4, random start from a fixed seed)."""
    def run(stop, final):
        return lambda: pgd(model, x, y, eps=eps, step_size=eps / 4, steps=steps, stop_fosc=stop,
                           final_stats=final, rng=B.rng(0), backend=B)
    return {"plain": run(None, False), "fosc_each_step": run(0.0, False),
            "final_stats": run(None, True)}


def bench_model(name: str, args, ta_cls, time_it, peaks: dict) -> dict:
    shape, eps = input_setup(name)
    eps = args.eps if args.eps is not None else eps
    step = eps / 4
    K = args.steps
    n = args.batch or QUICK_BATCH.get(name, 32)
    B = get_backend("torch", device=args.device, amp="bf16" if args.amp == "bf16" else None,
                    channels_last=args.channels_last)
    model = B.make_model(name, shape, 10, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    if shape == (1, 28, 28) and n <= 8000:  # real digits for the MNIST models
        from minidyn.data import load_dataset

        digits = load_dataset("mnist-sample", "train")
        x = torch.from_numpy(digits.x[:n]).float().div_(255).to(B.device)
        y = torch.from_numpy(digits.y[:n]).to(B.device)
    else:  # uniform noise and random labels
        x = torch.rand((n, *shape), generator=gen).to(B.device)
        y = torch.randint(0, 10, (n,), generator=gen).to(B.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # eval mode everywhere: torchattacks puts a model that was in train mode back into it
    # (every submodule, BatchNorm included) after each attack
    bare = Bare(model, B.device, args.amp == "bf16", args.channels_last).eval()
    if args.compile:
        # the same compiled module serves all three implementations
        bare = torch.compile(bare, mode=args.compile_mode)
    attack_model = bare if args.compile else model

    # The limit evaluates the gradient at the K points a PGD run visits (the values matter a
    # little on the CPU: inputs full of exact zeros run faster), with nothing else around it.
    noise = (torch.rand(x.shape, generator=gen) * 2 - 1).mul_(eps).to(B.device)
    points, xk = [], (x + noise).clamp(0, 1)
    for _ in range(K):
        points.append(xk)
        g = forward_backward(bare, xk, y)
        xk = torch.minimum(torch.maximum(xk + step * g.sign(), x - eps), x + eps).clamp(0, 1)

    def run_limit():
        for point in points:
            forward_backward(bare, point, y)

    atk = ta_cls(bare, eps=eps, alpha=step, steps=K, random_start=True) if ta_cls else None

    fns = {
        "limit": run_limit,
        "torchattacks": (lambda: atk(x, y)) if atk else None,
        **minidyn_variants(attack_model, x, y, eps, K, B),
    }
    names = [v for v in VARIANTS if fns[v] is not None]
    for _ in range(2):  # eager warm-up: kernels, allocator, oneDNN primitives for this shape
        forward_backward(bare, x, y)
    warmup = args.warmup if args.warmup is not None else (1 if args.compile else 0)
    for _ in range(warmup):  # whole attacks (compilation)
        for v in names:
            fns[v]()
    times, last = C.time_rotated({v: fns[v] for v in names}, args.repeats, time_it)
    evals = {v: last[v].grad_evals / n for v in MINIDYN}
    if any(m.training for m in bare.modules()):
        raise RuntimeError("a variant left the model in train mode")

    def per_repeat(a, b, scale=1.0):
        return [ta / (tb * scale) for ta, tb in zip(times[a], times[b])] if b in times else []

    res = {"name": name, "times": times, "evals": evals,
           "vs_ta": {v: per_repeat(v, "torchattacks") for v in MINIDYN},
           "vs_limit": {v: per_repeat(v, "limit", evals[v] / K) for v in MINIDYN},
           "fosc_overhead": per_repeat("fosc_each_step", "plain"),
           "final_overhead": per_repeat("final_stats", "plain")}

    precision = "bf16 autocast" if args.amp == "bf16" else "fp32"
    mode = f"torch.compile({args.compile_mode})" if args.compile else "eager"
    C.say(f"\n== {name}: input {shape}, batch {n}, PGD-{K} eps {eps:.4g} step {step:.4g}, "
          f"device {B.device}, {precision}, {'channels-last, ' if args.channels_last else ''}{mode}")
    C.say(f"seconds per attack of the batch, median (min-max) over {args.repeats} repeats:")
    labels = {"limit": f"limit ({K} fwd+bwd passes)", "torchattacks": "torchattacks PGD",
              "plain": "minidyn plain", "fosc_each_step": "minidyn fosc_each_step",
              "final_stats": "minidyn final_stats"}
    for v in VARIANTS:
        extra = f"   [{evals[v]:g} grad evals/example]" if v in evals else ""
        C.say(f"  {labels[v]:<32} {C.fmt(times[v], 4) if v in times else 'n/a'}{extra}")
    for v in MINIDYN:
        C.say(f"ratio_vs_torchattacks[{v}] = {C.fmt(res['vs_ta'][v])}"
              + ("   (one more grad eval than torchattacks)" if v == "final_stats" else ""))
    for v in MINIDYN:
        C.say(f"ratio_vs_limit[{v}] = {C.fmt(res['vs_limit'][v])}"
              + (f"   (limit scaled to {evals[v]:g} passes)" if evals[v] != K else ""))
    C.say(f"fosc_overhead (fosc_each_step / plain) = {C.fmt(res['fosc_overhead'], pct=True)}")
    C.say(f"final_stats_overhead (final_stats / plain) = {C.fmt(res['final_overhead'], pct=True)}"
          f"   (the extra grad eval alone: {100 / K:+.1f}%)")

    med_plain = C.stats(times["plain"])[0]
    images = n / med_plain
    flops = pass_flops(bare if not args.compile else Bare(model, B.device, args.amp == "bf16",
                                                          args.channels_last).eval(), x, y)
    line = f"throughput: {images:,.0f} images/s (minidyn plain PGD-{K})"
    if flops:
        dtype = torch.bfloat16 if args.amp == "bf16" else torch.float32
        if dtype not in peaks:
            peaks[dtype] = matmul_peak(B.device, dtype, time_it)
        achieved = flops * K / med_plain
        res["peak_share"] = achieved / peaks[dtype]
        line += (f"; {flops / 1e9:.2f} GFLOP per fwd+bwd pass, {achieved / 1e9:,.1f} GFLOP/s = "
                 f"{100 * res['peak_share']:.1f}% of the measured {str(dtype)[6:]} matmul peak "
                 f"{peaks[dtype] / 1e9:,.1f} GFLOP/s")
        if (B.device.startswith("cuda") and dtype == torch.float32 and torch.backends.cudnn.allow_tf32
                and not torch.backends.cuda.matmul.allow_tf32):  # an H200 printed 115-336% here
            line += " (not comparable: cuDNN's convolutions run in TF32, this peak does not; --tf32 makes both TF32)"
    res["images_per_s"] = images
    C.say(line)
    res["own_work"] = bench_overhead(name, n, args, ta_cls, time_it)
    return res


def bench_overhead(name: str, n: int, args, ta_cls, time_it, repeats: int = 40) -> dict | None:
    """Per-step time outside the model, at `name`'s input shape and batch n: both attacks on a
    one-layer linear model (d -> 10), whose forward+backward costs next to nothing next to the
    real model's, so what is left is each library's own work per step (sign, projection,
    autograd set-up, Python). The whole-attack ratios cannot resolve differences this small."""
    if ta_cls is None:
        return None
    shape, eps = input_setup(name)
    eps = args.eps if args.eps is not None else eps
    B = get_backend("torch", device=args.device)
    gen = torch.Generator().manual_seed(0)
    d = shape[0] * shape[1] * shape[2]
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 10)).to(B.device).eval()
    x = torch.rand((n, *shape), generator=gen).to(B.device)
    y = torch.randint(0, 10, (n,), generator=gen).to(B.device)
    K = args.steps
    atk = ta_cls(model, eps=eps, alpha=eps / 4, steps=K, random_start=True)
    variants = minidyn_variants(model, x, y, eps, K, B)
    fns = {"torchattacks": lambda: atk(x, y),
           "plain": variants["plain"], "fosc_each_step": variants["fosc_each_step"]}
    for fn in fns.values():
        fn()
    seconds, _ = C.time_rotated(fns, repeats, time_it)
    times = {v: [t / K * 1e6 for t in ts] for v, ts in seconds.items()}
    C.say(f"per-step work outside the model (a 1-layer linear model on the same input and batch), "
          f"microseconds per step, median (min-max) over {repeats} repeats:")
    for v in fns:
        C.say(f"  {v:<32} {C.fmt(times[v], 1)}")
    res = {v: C.stats(t)[0] for v, t in times.items()}
    C.say(f"own work per step: minidyn plain - torchattacks = {res['plain'] - res['torchattacks']:+.1f} us, "
          f"FOSC and stop check {res['fosc_each_step'] - res['plain']:+.1f} us")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cnn4,cnn8", help="comma-separated (default cnn4,cnn8)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size for every model (default: 128 for cnn4, mlp and softmax, 32 for the larger models)")
    p.add_argument("--steps", type=int, default=10, help="K (default 10)")
    p.add_argument("--eps", type=float, default=None, help="default 0.3 (cnn4) or 8/255")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per variant (default 5)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed whole attacks per variant (default 0 eager, 1 with --compile)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (all variants)")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode; reduce-overhead uses CUDA graphs (default: default)")
    p.add_argument("--tf32", action="store_true",
                   help="CUDA: allow TF32 in float32 matmuls and convolutions (and in the peak)")
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ta_cls, ta_note = C.load_torchattacks("pgd", "PGD")
    C.say(C.machine_line(args.device))
    C.say(f"glibc malloc tuning (as the CLI applies it): {'on' if MALLOC_TUNED else 'off'}; {ta_note}")
    if args.device.startswith("cuda"):
        C.say(f"TF32: matmul {torch.backends.cuda.matmul.allow_tf32}, "
              f"cuDNN convolutions {torch.backends.cudnn.allow_tf32}")
    time_it = C.timer(args.device)
    peaks: dict = {}
    results = [bench_model(m.strip(), args, ta_cls, time_it, peaks) for m in args.models.split(",") if m.strip()]

    def med(values):
        return C.stats(values)[0] if values else float("nan")

    def num(v):
        return "n/a" if v != v else f"{v:.3f}"

    parts, verdicts = [], []
    for r in results:
        ta, lim, fo = med(r["vs_ta"]["plain"]), med(r["vs_limit"]["plain"]), med(r["fosc_overhead"])
        ta_f = med(r["vs_ta"]["fosc_each_step"])
        checks = [("vs_torchattacks", C.verdict(r["vs_ta"]["plain"], 1.00)),
                  ("vs_torchattacks[fosc]", C.verdict(r["vs_ta"]["fosc_each_step"], 1.00)),
                  ("vs_limit", C.verdict(r["vs_limit"]["plain"], 1.05)),
                  ("vs_limit[fosc]", C.verdict(r["vs_limit"]["fosc_each_step"], 1.05)),
                  ("fosc_overhead", C.verdict(r["fosc_overhead"], 1.03))]
        verdicts += [v for _, v in checks]
        parts.append(f"{r['name']}: ratio_vs_torchattacks={num(ta)} ratio_vs_limit={num(lim)} "
                     f"(with FOSC each step {num(ta_f)} / {num(med(r['vs_limit']['fosc_each_step']))}) "
                     f"fosc_overhead={(fo - 1) * 100:+.1f}% images/s={r['images_per_s']:,.0f} "
                     f"[{', '.join(f'{k} {v}' for k, v in checks if v != 'met') or 'all met'}]")
        if r.get("own_work"):
            step_us = med(r["times"]["limit"]) / args.steps * 1e6
            own = r["own_work"]
            parts[-1] += (f" (own work per step vs torchattacks: "
                          f"{100 * (own['plain'] - own['torchattacks']) / step_us:+.2f}% of a step)")
    overall = ("missed" if "missed" in verdicts else "unresolved" if "unresolved" in verdicts
               else "not all checked (n/a: torchattacks is not installed: pip install --no-deps torchattacks)"
               if "n/a" in verdicts else "met")
    C.say("\nSUMMARY pgd_throughput (medians; targets: vs torchattacks <= 1.00, vs limit <= 1.05, "
          "FOSC overhead <= 3%; 'unresolved' = the median misses but the min-max range reaches the "
          "target): " + " | ".join(parts) + f" -> targets {overall}")
    return 0


if __name__ == "__main__":
    C.run(main)
