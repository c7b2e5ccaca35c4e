#!/usr/bin/env python
"""Dynamic's family, one training epoch each: minidyn against a plain PyTorch loop doing the same work.

    python benchmarks/family_speed.py --threads 1      # torch CPU, cnn4, 1024 mnist-sample digits

For each method (standard, fat, trades, mart, gairat, fgsm-rs, dynamic, trades+fosc) one epoch
runs twice from the same weights (a model first trained naturally for --pretrain-epochs, as
benchmarks/dynamic_vs_standard.py does), over the same batches in the same order:

    minidyn   `minidyn.runs.standalone_epoch` with the plan a run uses: a TrainConfig naming the
              method (trades+fosc: method trades, stop fosc), `runs.method_of` and
              `methods.attack_plan` at the timed epoch t; the loss plan and the per-example
              weights are what `recorded_steps` derives from the config, as in a run.
    plain     the same epoch written directly with torch autograd in the authors' style
              (the functions below): per batch model.eval(), the method's attack, model.train(),
              the method's loss, backward, optimizer.step(), and the batch loss and number
              correct read back as a training loop reports them.

What the plain loop writes per method (the authors' repositories as docs/methods.md names them):
    standard  PGD-K from x + U(-eps, eps), step alpha, clamps into the ball and [0, 1]; CE
    fat       FAT's `earlystop`: per step the forward's prediction, `control` (tau), the batch
              shrunk to the examples that go on, N(0, omega^2) noise per step; CE
    trades    TRADES' KL inner loop from x + 0.001 N(0, 1), `trades_loss`: CE(f(x)) + beta KL
    mart      PGD on CE from x + 0.001 N(0, 1), `mart_loss` (boosted CE + beta KL (1 - p_y))
    gairat    `GA_PGD`'s Kappa from each step's forward; GAIR.py's tanh weights, normalised
    fgsm-rs   fast_adversarial's MNIST FGSM: delta ~ U(-eps, eps), one step of 1.25 eps
    dynamic   PGD with FOSC (Eq. 4) of the active examples at every step k >= 1, the batch
              shrunk to the examples that go on (as minidyn's active set; the authors' masked
              loop evaluates every example K + 1 times, which is not the same work)
    trades+fosc  TRADES' inner loop with the same FOSC check and shrinking, on the KL's gradient

How the same work is ensured. Both sides evaluate the gradient at the same number of points: for
the methods without a stop, K per example (FGSM-RS 1); for FAT, Dynamic and FOSC-TRADES the
plain loop makes each example take exactly the steps minidyn's epoch recorded for it
(`EpochStats.steps` of the first repeat, in which minidyn runs first; identical in every repeat:
same seed, weights and data order, and the script warns if not), while still
computing the rule's own check at every step on the active rows (earlystop's prediction and
control for FAT, FOSC for the other two), so it pays for the check too; an example stopped at x^k
costs k + 1 gradient evaluations on both sides (the gradient at x^k decides the stop). The script
counts the plain loop's evaluations and gives no ratio (n/a) for a method whose count differs
from minidyn's `grad_evals`. The random starts differ (each side draws from its own generator), which
changes no amount of work. Deviations from the authors' code that would add work on the plain
side are left out, so the plain side is never slower for that reason: TRADES' clean logits for the
KL are computed once per batch (trades.py recomputes model(x_natural) at each of the K steps) and
trades_loss's natural forward once (the authors run it twice). record_fosc is off on both sides
(the plain loop does not record FOSC).

Printed, as median (min-max) over the repeats (the order of the methods rotates and the two
sides of each method alternate, each repeat; ratios are per repeat, so a slow phase of the
shared machine hits both sides of a ratio):

    (a) ratio = minidyn seconds / plain seconds, per method            (target <= 1.05)
    (b) for fat, dynamic (against standard) and trades+fosc (against trades), in minidyn:
        grad-eval saving = 1 - evals / evals without the stop          (identical every repeat)
        time saving      = 1 - seconds / seconds without the stop      (that repeat's pair)
        realised         = time saving / grad-eval saving              (target >= 0.80)

both in wall-clock seconds (the targets' measure, as the other scripts) and in the process's CPU
seconds (time.process_time): with --threads 1 the process runs one thread, so its CPU time is the
work done and leaves out the time spent waiting for a core on a loaded machine, which makes the
CPU-time ratios far steadier there (caches shared with other processes still slow both sides).

c_t of dynamic and trades+fosc (--c-t auto): the median FOSC of a probe batch of test digits at
one point of that attack, so that about half the examples stop early: after K/2 of K steps for
Dynamic (CE from a uniform start, whose FOSC is nearly flat after the first step), after the
first step for trades+fosc (the KL's FOSC grows along the whole attack from TRADES' small start,
so the rule decides at x^1: an example stops there or runs all K steps; the median at K/2 would
stop every example at x^1). The TrainConfig's c_max is set so that the timed epoch's c_t
(DynamicSchedule) is that value. FAT runs at --tau (default 0, the first phase of its
schedule). GAIRAT's weights are on in the timed epoch (gairat_begin 1).
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
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minidyn import get_backend, pgd  # noqa: E402
from minidyn.data import load_dataset  # noqa: E402
from minidyn.data.batches import batch_indices, to_backend  # noqa: E402
from minidyn.errors import ConfigError  # noqa: E402
from minidyn.files.config import TrainConfig  # noqa: E402
from minidyn.methods import FGSM_RS_STEP, attack_plan  # noqa: E402
from minidyn.runs import method_of, standalone_epoch  # noqa: E402
from minidyn.runs.epoch_state import epoch_order  # noqa: E402
from minidyn.schedules import DynamicSchedule  # noqa: E402

METHODS = ("standard", "fat", "trades", "mart", "gairat", "fgsm-rs", "dynamic", "trades+fosc")
STOPPING = {"fat": "standard", "dynamic": "standard", "trades+fosc": "trades"}  # method: without its stop
CONFIG = {"trades+fosc": dict(method="trades", stop="fosc")}  # the rest: dict(method=name)


# --- the plain PyTorch loop ------------------------------------------------------------------------
class Work:
    """Per-batch settings of the plain loop, and its count of gradient evaluations."""

    def __init__(self, eps, alpha, K, beta, tau, omega, lam, c_t, gen):
        self.eps, self.alpha, self.K, self.beta, self.tau, self.omega, self.lam = eps, alpha, K, beta, tau, omega, lam
        self.c_t = c_t
        self.gen, self.evals = gen, 0
        self.steps = None  # (b,) int64 tensor: the steps minidyn recorded for this batch's examples


def clamp_ball(x_adv, x, eps):
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def kl_rows(z, p_nat):
    """KL(p_nat || softmax(z)) per example (nn.KLDivLoss(size_average=False) over a row)."""
    return F.kl_div(F.log_softmax(z, dim=1), p_nat, reduction="none").sum(dim=1)


def pgd_ce(model, x, y, w: Work, start: str):
    """Madry's PGD (standard) or MART's inner loop (start 'normal': x + 0.001 N(0, 1))."""
    if start == "normal":
        x_adv = x + 0.001 * torch.randn(x.shape, generator=w.gen)
    else:
        x_adv = (x + torch.empty_like(x).uniform_(-w.eps, w.eps, generator=w.gen)).clamp(0.0, 1.0)
    for _ in range(w.K):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, [x_adv])
        w.evals += len(x)
        x_adv = clamp_ball(x_adv.detach() + w.alpha * torch.sign(g), x, w.eps)
    return x_adv


def ga_pgd(model, x, y, w: Work):
    """GAIRAT's GA_PGD ('Madry'): PGD from a uniform start, Kappa += 1 where x^k is classified right."""
    kappa = torch.zeros(len(x))
    x_adv = (x + torch.empty_like(x).uniform_(-w.eps, w.eps, generator=w.gen)).clamp(0.0, 1.0)
    for _ in range(w.K):
        x_adv.requires_grad_(True)
        z = model(x_adv)
        kappa += (z.detach().argmax(dim=1) == y).float()
        (g,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), [x_adv])
        w.evals += len(x)
        x_adv = clamp_ball(x_adv.detach() + w.alpha * torch.sign(g), x, w.eps)
    return x_adv, kappa


def fgsm_rs(model, x, y, w: Work):
    """fast_adversarial's MNIST step: delta ~ U(-eps, eps), gradient at x + delta unprojected."""
    delta = torch.empty_like(x).uniform_(-w.eps, w.eps, generator=w.gen).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), [delta])
    w.evals += len(x)
    delta = (delta.detach() + FGSM_RS_STEP * w.eps * torch.sign(g)).clamp(-w.eps, w.eps)
    return x + torch.max(torch.min(1 - x, delta), -x)


def shrinking_pgd(model, x, y, w: Work, check: str, objective: str):
    """PGD whose examples stop early, on the shrinking batch of those that go on.

    check 'tau': earlystop's rule (prediction and control, FAT); 'fosc': FOSC (Eq. 4) at k >= 1.
    objective 'ce' (uniform start, FAT's omega noise) or 'kl' (TRADES' start and KL). Which rows
    stop is w.steps (minidyn's record): a row with s steps is evaluated at x^0 .. x^min(s, K-1)."""
    n = len(x)
    out, rows = torch.empty_like(x), torch.arange(n)
    if objective == "kl":
        x_k = x + 0.001 * torch.randn(x.shape, generator=w.gen)
        with torch.no_grad():
            p_nat = F.softmax(model(x), dim=1)
    else:
        x_k = (x + torch.empty_like(x).uniform_(-w.eps, w.eps, generator=w.gen)).clamp(0.0, 1.0)
    x0, yk, control = x, y, torch.full((n,), int(w.tau))
    for k in range(w.K):
        x_k.requires_grad_(True)
        z = model(x_k)
        loss = kl_rows(z, p_nat).sum() if objective == "kl" else F.cross_entropy(z, yk, reduction="sum")
        (g,) = torch.autograd.grad(loss, [x_k])
        x_k = x_k.detach()
        w.evals += len(rows)
        if check == "tau":  # earlystop lines 50-59
            wrong = z.detach().argmax(dim=1) != yk
            control = torch.where(wrong & (control > 0), control - 1, control)
        elif k > 0:  # Algorithm 1's FOSC of the active rows and its test (paid for, not obeyed)
            fosc = w.eps * g.abs().flatten(1).sum(1) - ((x_k - x0) * g).flatten(1).sum(1)
            torch.nonzero(fosc > w.c_t)
        go = w.steps[rows] > k  # minidyn's record decides who stops (the same work)
        if not bool(go.all()):
            out[rows[~go]] = x_k[~go]
            keep = go.nonzero().squeeze(1)
            rows, x_k, x0, yk, g, control = rows[keep], x_k[keep], x0[keep], yk[keep], g[keep], control[keep]
            if objective == "kl":
                p_nat = p_nat[keep]
            x = x[keep]
            if len(rows) == 0:
                return out
        x_k = x_k + w.alpha * torch.sign(g)
        if check == "tau" and w.omega:
            x_k = x_k + w.omega * torch.randn(x_k.shape, generator=w.gen)
        x_k = clamp_ball(x_k, x0, w.eps)
    out[rows] = x_k
    return out


def trades_pgd(model, x, w: Work):
    """trades_loss lines 27-41: the KL inner loop from x + 0.001 N(0, 1) (clean forward once)."""
    with torch.no_grad():
        p_nat = F.softmax(model(x), dim=1)
    x_adv = x + 0.001 * torch.randn(x.shape, generator=w.gen)
    for _ in range(w.K):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(kl_rows(model(x_adv), p_nat).sum(), [x_adv])
        w.evals += len(x)
        x_adv = clamp_ball(x_adv.detach() + w.alpha * torch.sign(g), x, w.eps)
    return x_adv


def ce_loss(model, x, x_adv, y, w):
    z = model(x_adv)
    rows = F.cross_entropy(z, y, reduction="none")
    return rows.mean(), z, rows


def trades_loss(model, x, x_adv, y, w):
    z_nat, z = model(x), model(x_adv)
    kl = kl_rows(z, F.softmax(z_nat, dim=1))
    rows = F.cross_entropy(z_nat, y, reduction="none") + w.beta * kl
    return rows.mean(), z, rows


def mart_loss(model, x, x_adv, y, w):
    """mart.py lines 38-56."""
    z_nat, z = model(x), model(x_adv)
    adv_probs = F.softmax(z, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(z, y, reduction="none") + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y,
                                                                     reduction="none")
    nat_probs = F.softmax(z_nat, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1).long()).squeeze()
    kl = torch.sum(F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none"), dim=1)
    rows = loss_adv + w.beta * kl * (1.0000001 - true_probs)
    return rows.mean(), z, rows


def plain_attack(name, model, x, y, w: Work):
    """(x_adv, extra) of method `name` for the batch; extra: GAIRAT's kappa, else None."""
    if name == "standard":
        return pgd_ce(model, x, y, w, "uniform"), None
    if name == "mart":
        return pgd_ce(model, x, y, w, "normal"), None
    if name == "trades":
        return trades_pgd(model, x, w), None
    if name == "gairat":
        return ga_pgd(model, x, y, w)
    if name == "fgsm-rs":
        return fgsm_rs(model, x, y, w), None
    if name == "fat":
        return shrinking_pgd(model, x, y, w, "tau", "ce"), None
    if name == "dynamic":
        return shrinking_pgd(model, x, y, w, "fosc", "ce"), None
    return shrinking_pgd(model, x, y, w, "fosc", "kl"), None  # trades+fosc


def plain_loss(name, model, x, x_adv, y, extra, w: Work):
    """The SGD step's scalar loss, the adversarial logits and the per-example losses."""
    if name in ("trades", "trades+fosc"):
        return trades_loss(model, x, x_adv, y, w)
    if name == "mart":
        return mart_loss(model, x, x_adv, y, w)
    loss, z, rows = ce_loss(model, x, x_adv, y, w)
    if name == "gairat":  # GAIR.py lines 5-9 ('Tanh'), GAIRAT.py lines 143-146
        h = int(w.K / 2)
        r = (torch.tanh(w.lam + 5 * (h - extra) / h) + 1) / 2
        loss = (rows * (r * len(r) / r.sum())).mean()
    return loss, z, rows


def plain_epoch(name, model, opt, data, order, batch, w: Work, steps=None):
    """One epoch of the plain loop over `order`; returns (loss sum, correct)."""
    total, correct = 0.0, 0
    for idx in batch_indices(order, batch):
        x = torch.from_numpy(data.x[idx]).float() / 255.0
        y = torch.from_numpy(data.y[idx]).long()
        w.steps = None if steps is None else torch.from_numpy(steps[idx])
        model.eval()
        x_adv, extra = plain_attack(name, model, x, y, w)
        model.train()
        opt.zero_grad(set_to_none=True)
        loss, z, rows = plain_loss(name, model, x, x_adv.detach(), y, extra, w)
        loss.backward()
        opt.step()
        total += float(rows.detach().sum().item())
        correct += int((z.detach().argmax(dim=1) == y).sum().item())
    return total, correct


# --- the benchmark ------------------------------------------------------------------------------
def probe_c_t(B, model, test, args, loss: str, start: str, k: int) -> float:
    """The median FOSC of a probe batch of test digits after k of K PGD steps of the attack."""
    x, y = to_backend(B, test, np.arange(min(args.batch, len(test))))
    K = args.steps
    probe = pgd(model, x, y, eps=args.eps, step_size=args.eps / 4, steps=K, trace=True, rng=B.rng(1),
                loss=loss, start=start, backend=B)
    return float(np.nanmedian(probe.trace.fosc[k]))


def configs(args, t: int, c_t: dict) -> dict:
    """The TrainConfig of each method, as a run would build it; c_max such that c_t(t) = c_t."""
    base = dict(backend="torch", device=args.device, model=args.model, epochs=t + 1, batch_size=args.batch,
                eps=args.eps, steps=args.steps, limit=args.n, record_fosc=False,
                dynamic_epochs=t + 1, tau=args.tau, beta=args.beta, gairat_begin=1)
    factor = DynamicSchedule(1.0, t + 1).c_t(t)
    out = {}
    for name in METHODS:
        parts = CONFIG.get(name, dict(method=name))
        c_max = c_t[name] / factor if name in c_t else 0.5
        out[name] = TrainConfig(**base, **parts, c_max=c_max).resolved()
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn4")
    p.add_argument("--n", type=int, default=1024, help="training examples (default 1024)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="K (default 10)")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--tau", type=int, default=0, help="FAT's tau (default 0)")
    p.add_argument("--beta", type=float, default=6.0, help="TRADES' and MART's beta (default 6)")
    p.add_argument("--c-t", default="auto", help="FOSC target of dynamic and trades+fosc: auto, or two "
                   "numbers DYNAMIC,TRADES")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--pretrain-epochs", type=int, default=1, help="natural epochs first (default 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    args.device = "cpu"
    if args.c_t != "auto":
        try:
            args.c_t = tuple(float(v) for v in args.c_t.split(","))
        except ValueError:
            args.c_t = ()
        if len(args.c_t) != 2 or min(args.c_t) < 0:
            raise ConfigError("--c-t takes auto or two numbers >= 0, DYNAMIC,TRADES (e.g. 0.9,0.009)")
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    for m in [m for m in args.methods if m in STOPPING]:
        if STOPPING[m] not in args.methods:
            args.methods.insert(0, STOPPING[m])
    return args


def main(argv=None) -> int:
    args = parse(argv)
    C.set_threads(args.threads)
    C.say(C.machine_line(args.device))
    C.say(f"glibc malloc tuning (as the CLI applies it): {'on' if MALLOC_TUNED else 'off'}")
    B = get_backend("torch", device=args.device)
    train = load_dataset("mnist-sample", "train").subset(args.n)
    test = load_dataset("mnist-sample", "test")
    t = args.pretrain_epochs
    natural = TrainConfig(backend="torch", device="cpu", model=args.model, method="unsecured", epochs=t + 1,
                          batch_size=args.batch, eps=args.eps, steps=args.steps, limit=args.n).resolved()
    model = B.make_model(args.model, (1, 28, 28), 10, seed=natural.seed)
    opt = B.make_optimizer(model, natural.lr, natural.momentum, natural.weight_decay)
    start = time.perf_counter()
    for e in range(t):
        standalone_epoch(B, model, opt, train, natural, e, plan=None)
    params = B.get_params(model)

    if args.c_t == "auto":
        c_t = {"dynamic": probe_c_t(B, model, test, args, "ce", "uniform", args.steps // 2),
               "trades+fosc": probe_c_t(B, model, test, args, "kl", "normal", 1)}
        how = (f"auto: median FOSC of {min(args.batch, len(test))} test digits after {args.steps // 2} of "
               f"{args.steps} steps (CE), after 1 step (KL)")
    else:
        c_t, how = dict(zip(("dynamic", "trades+fosc"), args.c_t)), "given"
    cfgs = configs(args, t, c_t)
    plans = {m: attack_plan(method_of(cfgs[m]), t) for m in args.methods}
    C.say(f"model {args.model}, {args.n} mnist-sample digits, batch {args.batch}, K {args.steps}, eps {args.eps}, "
          f"step {args.eps / 4:g}, beta {args.beta:g}, FAT tau {args.tau}, record_fosc off, {t} natural "
          f"pre-training epoch(s) ({time.perf_counter() - start:.1f} s); "
          f"c_t dynamic {c_t['dynamic']:.4g}, trades+fosc {c_t['trades+fosc']:.4g} ({how})")

    order = epoch_order(natural.seed, t, len(train))

    def minidyn(name, data=train):
        B.set_params(model, params)  # weights and BatchNorm statistics
        cfg = cfgs[name]
        optimizer = B.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        return standalone_epoch(B, model, optimizer, data, cfg, t, plans[name])

    def plain(name, recorded=None, n=None):
        B.set_params(model, params)
        cfg = cfgs[name]
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
        w = Work(cfg.eps, cfg.step_size, cfg.steps, cfg.beta, args.tau, plans[name].omega, cfg.gairat_lambda,
                 plans[name].stop_fosc or 0.0, torch.Generator().manual_seed(1000 + t))
        plain_epoch(name, model, optimizer, train, order if n is None else order[:n], args.batch, w, recorded)
        return w.evals

    # warm-up: two batches each (the plain loop's stopping methods without a stop)
    small = train.subset(min(len(train), 2 * args.batch))
    no_stop = np.full(len(train), args.steps, dtype=np.int64)
    for name in args.methods:
        minidyn(name, small)
        plain(name, no_stop if name in STOPPING else None, n=2 * args.batch)
    C.say(f"pre-training, probes and warm-up: {time.perf_counter() - start:.1f} s")

    seconds = {(name, side): [] for name in args.methods for side in ("minidyn", "plain")}
    cpu = {key: [] for key in seconds}
    recorded, evals, plain_evals, steps = {}, {}, {}, {}
    for r in range(args.repeats):
        k = r % len(args.methods)
        for name in args.methods[k:] + args.methods[:k]:
            for side in (("minidyn", "plain") if r % 2 == 0 else ("plain", "minidyn")):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                if side == "minidyn":
                    s = minidyn(name)
                else:
                    plain_evals[name] = plain(name, recorded.get(name))
                seconds[(name, side)].append(time.perf_counter() - wall0)
                cpu[(name, side)].append(time.process_time() - cpu0)
                if side == "plain":
                    continue
                evals[name], steps[name] = s.grad_evals, s.steps
                if name in STOPPING and name not in recorded:  # repeat 0: minidyn runs first
                    recorded[name] = s.steps.astype(np.int64)
                elif name in recorded and not np.array_equal(s.steps, recorded[name]):
                    C.warn(f"{name}: minidyn's steps per example changed between epochs")
    C.say(f"\n(a) one epoch, minidyn vs a plain PyTorch loop doing the same work ({args.repeats} repeats, "
          f"{time.perf_counter() - start:.0f} s in all)")
    wall = report(args, "wall-clock", seconds, evals, plain_evals, steps)
    own = report(args, "process CPU", cpu, evals, plain_evals, steps)
    C.say(f"\nSUMMARY family_speed: wall-clock: {wall}\nSUMMARY family_speed: process CPU time: {own}")
    return 0


def report(args, clock: str, seconds, evals, plain_evals, steps) -> str:
    """Print (a) and (b) for one clock; return the summary's verdicts."""
    n, K = args.n, args.steps
    C.say(f"\n  {clock} seconds")
    C.say(f"  {'method':<12} {'evals/ex':>8} {'steps':>5} {'stopped':>7}  {'minidyn s':<20} {'plain s':<20} "
          f"ratio minidyn/plain (target <= 1.05)")
    ratios, verdicts = {}, []
    for name in args.methods:
        s = steps[name]
        same = evals[name] == plain_evals[name]
        ratios[name] = [a / b for a, b in zip(seconds[(name, "minidyn")], seconds[(name, "plain")])] if same else []
        verdict = C.verdict(ratios[name], 1.05) if same else "n/a (evals differ)"
        C.say(f"  {name:<12} {evals[name] / n:8.3f} {s.mean():5.2f} {100 * np.mean(s < K):6.0f}%  "
              f"{C.fmt(seconds[(name, 'minidyn')], 2):<20} {C.fmt(seconds[(name, 'plain')], 2):<20} "
              f"{C.fmt(ratios[name])}  {verdict}" + ("" if same else
              f"  [plain evals {plain_evals[name]} != minidyn {evals[name]}]"))
        verdicts.append(f"{name}={C.stats(ratios[name])[0]:.3f} {verdict}")
    C.say("  (evals/ex: gradient evaluations per example, both sides; steps: mean PGD steps; stopped: before K)")
    C.say(f"  (b) saved gradient evaluations realised in {clock} time (minidyn; the plain loop's in brackets)")
    realised = {}
    for name, base in STOPPING.items():
        if name not in args.methods:
            continue
        saving = 1 - evals[name] / evals[base]
        rows = {}
        for side in ("minidyn", "plain"):
            wall = [1 - a / b for a, b in zip(seconds[(name, side)], seconds[(base, side)])]
            rows[side] = (wall, [x / saving for x in wall] if saving > 0 else [])
        realised[name] = rows["minidyn"][1]
        C.say(f"  {name:<12} vs {base:<9} grad-eval saving {100 * saving:5.1f}%  time saving "
              f"{C.fmt([100 * x for x in rows['minidyn'][0]], 1)} %  realised {C.fmt(realised[name])} "
              f"{C.verdict(realised[name], 0.80, at_most=False)}   [plain: realised {C.fmt(rows['plain'][1])}]")
    return (f"ratio minidyn/plain (target <= 1.05): {', '.join(verdicts)}; realised (target >= 0.80): "
            + ", ".join(f"{k}={C.stats(v)[0]:.3f} {C.verdict(v, 0.80, at_most=False)}" for k, v in realised.items()))


if __name__ == "__main__":
    C.run(main)
