"""A study's work in image forward+backward passes, before it runs and after, and its wall time.

    work = study_work(spec)                 # {cell name: Work} predicted from the spec
    counted_passes(Path("runs/x"))          # what a finished run did (benchmarks/count_passes.py)
    rate = measure_rate(cell.config())      # passes per second on this machine, ~1 s of steps

A pass is one example through the model forward and backward; a forward-only pass counts 1/3
(FORWARD). A budget in passes holds on any machine, seconds do not: divide by a machine's
measured passes/s for its time. The parts (per cell):

    attack    the training attacks' input-gradient evaluations (metrics.jsonl's grad_evals):
              K per example and epoch, + 1 with record_fosc (FOSC at the final point of an
              example that ran all K steps), FGSM 1 (+ 1), none in a clean epoch; TRADES' KL
              attack a clean forward more. Dynamic's and FAT's examples stop early, so before a
              run this is an upper bound ("at most"). Curriculum's steps per epoch are fixed by
              its schedule: exact.
    sgd       one pass per training example and epoch (the SGD step); two for TRADES and MART,
              whose loss also takes the natural example forward and backward
    monitor   per epoch, PGD-eval_steps on eval_limit examples of the validation split (of the
              test set without val_size), eval_steps passes and one forward each, and a clean
              forward of the whole split
    final     the run's own final evaluation (none in a study: [eval] evaluates the cells)
    eval      the study's [eval] of the cell, per checkpoint and eps: per attack its gradient
              evaluations (FGSM 1, PGD-K K, CW 30, APGD N + 1 and up to N + 1 forwards for CE),
              times restarts, on `limit` test examples, + a verdict and a recount forward each;
              + the gradient check (1 pass per example) and the eps-0 check (50 examples).
              Restarts attack only the survivors and white-box APGD stops at a misclassified
              point, so with either this is an upper bound.
    blackbox  the same attacks crafted on the surrogate, at the cell's training eps

Not counted (as count_passes does not): `--c-max auto`'s one FGSM batch, `--loss-weights ce`'s
forward pass per example, loading and checkpointing.
"""
from __future__ import annotations

import json
import os
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minidyn.files.config import TrainConfig
from minidyn.errors import ConfigError, MinidynError

FORWARD = 1 / 3  # a forward-only pass, in forward+backward passes
# (training, test) examples of each dataset's official files
SPLIT_SIZES = {"mnist-sample": (8000, 2000), "mnist": (60000, 10000),
               "fashion-mnist": (60000, 10000), "cifar10": (50000, 10000)}
TRAINING_PARTS = ("attack", "sgd", "monitor", "final")
PARTS = (*TRAINING_PARTS, "eval", "blackbox")
EPS0_EXAMPLES = 50  # minidyn.evaluation.evaluate's eps-0 check
FAB_STEPS = 100  # FAB-T's iterations per target (AutoAttack's standard version)
MEANING = {"attack": "the training attacks", "sgd": "the SGD steps",
           "monitor": "the per-epoch PGD on validation (test without val_size)",
           "final": "the run's final test evaluation", "eval": "the study's [eval]",
           "blackbox": "[eval] crafted on the surrogates"}


@dataclass
class Work:
    """Passes by part (PARTS); `bounds`: the parts that are upper bounds, not exact."""

    parts: dict = field(default_factory=dict)
    bounds: set = field(default_factory=set)

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    def add(self, part: str, passes: float, bound: bool = False) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + passes
        if bound and passes:
            self.bounds.add(part)


# --- a finished run ------------------------------------------------------------------------------
def counted_passes(run: Path) -> dict:
    """{attack, sgd, monitor, final, total, epochs, train_examples, seconds} of the run directory
    `run`, from config.json, metrics.jsonl, summary.json and fosc/ (module docstring).
    ConfigError when the number of training examples cannot be known."""
    run = Path(run)
    cfg = json.loads((run / "config.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run / "summary.json").read_text())
    files = sorted((run / "fosc").glob("epoch_*.npy"))  # one FOSC per training example
    n_train = len(np.load(files[0])) if files else cfg["limit"]
    if n_train is None:
        raise ConfigError(f"{run}: no fosc/ files and no --limit: the number of training examples is unknown")
    steps, recipe = cfg["eval_steps"], _recipe_of(cfg)
    work = {
        # TRADES' KL attack also takes the clean logits: a forward per example and attacked epoch
        "attack": sum(e["grad_evals"] + (n_train * FORWARD if e["pgd_steps"] and recipe.inner == "kl" else 0)
                      for e in epochs),
        "sgd": n_train * len(epochs) * sgd_passes(recipe.outer),
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


def sgd_passes(outer: str) -> int:
    """Passes per example of one SGD step on the outer loss: 1 for the cross-entropy at the
    training point; 2 for TRADES and MART (a forward and backward at the natural example too)."""
    return 1 if outer == "ce" else 2


def _recipe_of(cfg: dict):
    """The method's parts (methods.Recipe) of a run's config.json; a run before Dynamic's family
    trained one of the paper's methods, whose attack is on the cross-entropy and loss ce."""
    from minidyn.methods import METHODS

    return METHODS.get(cfg.get("method"), METHODS["standard"])


def equal_cost_steps(run: Path) -> int:
    """K of the equal-cost Standard for a finished run: the PGD steps per example and epoch
    whose gradient evaluations match the run's training attacks, K = round(grad_evals per
    example-epoch) - 1 with record_fosc (the FOSC evaluation every Standard example also
    costs), at least 1. Give it to Standard with --steps K and --step-size 2.5 eps / K (Madry et
    al.'s rule, which Standard's PGD-10 at eps/4 follows). docs/methods.md, "Equal cost"."""
    counted = counted_passes(run)
    cfg = json.loads((Path(run) / "config.json").read_text())
    per_epoch = counted["attack"] / (counted["train_examples"] * counted["epochs"])
    return max(1, round(per_epoch) - int(cfg.get("record_fosc", True)))


# --- predicted from a config -----------------------------------------------------------------
def split_sizes(cfg: TrainConfig) -> tuple[int, int | None, int]:
    """(training examples trained on, validation examples or None, test examples) of the
    resolved `cfg`: the dataset's official sizes, val_size held out first, then --limit."""
    n_train, n_test = SPLIT_SIZES[cfg.dataset]
    if cfg.val_size is not None:
        n_train -= cfg.val_size
    return (min(cfg.limit, n_train) if cfg.limit is not None else n_train), cfg.val_size, n_test


def training_work(cfg: TrainConfig) -> Work:
    """The passes a run of the resolved `cfg` will take (attack, sgd, monitor, final); the
    attack part is an upper bound when an epoch stops examples early (Dynamic)."""
    from minidyn.methods import attack_plan, loss_plan
    from minidyn.runs.loop import method_of

    n_train, n_val, n_test = split_sizes(cfg)
    work = Work()
    method = method_of(cfg, 1.0 if cfg.c_max == "auto" else None)  # any c_max: only the steps matter
    for t in range(cfg.epochs):
        plan = attack_plan(method, t)
        per_example = 0 if plan is None else plan.steps + int(cfg.record_fosc) + FORWARD * (plan.loss == "kl")
        stops_early = plan is not None and (plan.stop_fosc is not None or plan.stop_tau is not None)
        work.add("attack", n_train * per_example, bound=stops_early)
        work.add("sgd", n_train * sgd_passes(loss_plan(method, t).outer))
    watched = n_val if n_val is not None else n_test  # what the per-epoch monitor attacks
    attacked = watched if cfg.eval_limit is None else min(cfg.eval_limit, watched)
    work.add("monitor", cfg.epochs * (attacked * (cfg.eval_steps + FORWARD) + watched * FORWARD))
    final = n_test if cfg.final_eval_limit is None else min(cfg.final_eval_limit, n_test)
    work.add("final", (final * (cfg.eval_steps + FORWARD) + n_test * FORWARD) if cfg.final_eval else 0)
    return work


def attack_passes(name: str, apgd_steps: int, transfer: bool) -> tuple[float, bool]:
    """(passes per example of one run of attack `name`, whether that is an upper bound)."""
    from minidyn.evaluation.attack_table import ATTACKS

    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}")
    if name == "apgd-t":  # per target N + 1 gradients, each pass's logits deciding its verdict
        from minidyn.evaluation.attack_table import APGD_T_TARGETS
        return APGD_T_TARGETS * (apgd_steps + 1), True
    if name.startswith("apgd"):  # N + 1 gradients; CE: a forward where its loss cannot decide
        forwards = (apgd_steps + 1) * FORWARD if name == "apgd-ce" else 0
        return apgd_steps + 1 + forwards, not (transfer and name == "apgd-dlr")  # white-box stops
    if name == "fab-t":  # per target and iteration a logit-difference gradient and a forward
        from minidyn.evaluation.attack_table import FAB_T_TARGETS
        return FAB_T_TARGETS * (FAB_STEPS + 1) * (1 + FORWARD), True
    if name == "autoattack":  # the stages in turn, each at most on every example
        from minidyn.evaluation.attack_table import ATTACKS
        return sum(attack_passes(stage, apgd_steps, transfer)[0] for stage in ATTACKS[name].stages), True
    if name == "square":  # forward-only queries: the start's and at most N_QUERIES more
        from minidyn.square import N_QUERIES
        return (N_QUERIES + 1) * FORWARD, True
    return {"clean": 0, "fgsm": 1, "pgd10": 10, "pgd20": 20, "cw": 30,
            "pgd20-eps-over-2": 20, "pgd20-eps-over-8": 20}[name], False


def evaluation_work(attacks, n: int, restarts: int, apgd_steps: int, transfer: bool) -> tuple[float, bool]:
    """(passes, upper bound?) of minidyn.evaluation.evaluate_attacks on n examples at one eps."""
    from minidyn.evaluation.attack_table import ATTACKS

    m = min(n, EPS0_EXAMPLES)
    passes, bound = n + m * FORWARD, False  # the gradient check; the eps-0 check's clean forward
    for name in attacks:
        craft, inexact = attack_passes(name, apgd_steps, transfer)
        runs = restarts if ATTACKS[name].random_start else 1
        passes += m * (craft + FORWARD)  # the eps-0 check
        passes += runs * n * (craft + 2 * FORWARD)  # craft, count, recount
        bound = bound or inexact or runs > 1
    return passes, bound


def cell_work(spec, cell) -> Work:
    """The predicted passes of one study cell: its training and its [eval] (and black-box)."""
    cfg, ev = cell.config(), spec.eval
    work = training_work(cfg)
    n_test = SPLIT_SIZES[cfg.dataset][1]
    n = n_test if ev.limit is None else min(ev.limit, n_test)
    settings = (ev.attacks, n, ev.restarts, ev.apgd_steps)
    passes, bound = evaluation_work(*settings, transfer=False)
    work.add("eval", passes * len(ev.checkpoints) * len(ev.eps or (cfg.eps,)), bound)
    if spec.surrogate_of(cell) is not None:  # crafted on the surrogate, at the training eps
        passes, bound = evaluation_work(*settings, transfer=True)
        work.add("blackbox", passes * len(ev.checkpoints), bound)
    return work


def study_work(spec) -> dict:
    """{cell name: Work} of every cell of `spec`."""
    return {cell.name: cell_work(spec, cell) for cell in spec.cells()}


# --- time ----------------------------------------------------------------------------------------
def rate_key(cfg: TrainConfig) -> tuple:
    """What a measured throughput is of: (backend, device, model, dataset, batch size)."""
    return cfg.backend, cfg.device, cfg.model, cfg.dataset, cfg.batch_size


def measure_rate(cfg: TrainConfig, seconds: float = 1.0) -> float:
    """Passes per second of training steps of the resolved `cfg`'s backend, device, model and
    batch size on this machine: an attack's input gradient and an SGD step (2 x batch size
    passes), on random inputs of the dataset's shape, timed one by one for about `seconds`
    after a warm-up step. The fastest step gives the rate: other work on the machine only
    slows steps down, so this is the rate of the machine itself. MinidynError (or ImportError)
    where the backend cannot run here (no torch, no GPU)."""
    from minidyn.data import input_shape
    from minidyn.runs.loop import backend_from_config

    backend = backend_from_config(cfg)
    shape, rng = input_shape(cfg.dataset), np.random.default_rng(0)
    model = backend.make_model(cfg.model, shape, 10, cfg.seed)
    optimizer = backend.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    x = backend.asarray(rng.uniform(0, 1, (cfg.batch_size, *shape)).astype(np.float32))
    y = backend.asarray(rng.integers(0, 10, cfg.batch_size))

    def step() -> float:
        started = time.perf_counter()
        _, grad = backend.loss_and_grad(model, x, y)
        backend.train_step(model, optimizer, x, y, cfg.batch_size)
        backend.to_numpy(grad)  # waits for a GPU's queued work
        return time.perf_counter() - started

    step()  # warm-up: lazy initialisation, caches
    times, started = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < seconds:
        times.append(step())
    return 2 * cfg.batch_size / min(times)


def work_lines(spec, measure: bool = True, seconds: float = 1.0) -> list[str]:
    """What `study run --dry-run` says of the study's work: passes per cell and part (the parts
    that are zero in every cell left out), the total, and (measure) the throughput of each
    distinct rate_key measured here with the wall time it gives."""
    cells = {cell.name: cell for cell in spec.cells()}
    work = study_work(spec)
    total = Work()
    for w in work.values():
        for part, passes in w.parts.items():
            total.add(part, passes, part in w.bounds)
    parts = [part for part in PARTS if total.parts.get(part)]
    rates = _rates(cells.values(), seconds) if measure else {}
    seconds_of = {name: w.total / rates[rate_key(cells[name].config())] for name, w in work.items()
                  if isinstance(rates.get(rate_key(cells[name].config())), float)}
    rows = [["cell", *parts, "total"] + (["time"] if seconds_of else [])]
    for name, w in [*work.items(), (f"total ({len(work)} cells)", total)]:
        row = [name, *(_millions(w.parts.get(part, 0.0), part in w.bounds) for part in parts),
               _millions(w.total, bool(w.bounds))]
        time_of = sum(seconds_of.values()) if w is total else seconds_of.get(name)
        rows.append(row + ([_hours(time_of) if time_of is not None else "?"] if seconds_of else []))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["The study's work in image forward+backward passes, millions (a forward-only pass counts",
             "1/3, as benchmarks/count_passes.py counts a finished run; <= marks an upper bound):"]
    lines += [row[0].ljust(widths[0]) + "".join(c.rjust(w + 2) for c, w in zip(row[1:], widths[1:]))
              for row in rows]
    lines += textwrap.wrap("; ".join(f"{part}: {MEANING[part]}" for part in parts) + ".", 92)
    if total.bounds:
        lines += ["<= at most: Dynamic's examples stop early (K + 1 gradient evaluations each per epoch",
                  "is the most); [eval] restarts attack only the survivors, APGD stops at a misclassified point."]
    return lines + _time_lines(rates, seconds_of, work, total)


def _millions(passes: float, bound: bool) -> str:
    return f"{'<=' if bound else ''}{passes / 1e6:.3f}"


def _rates(cells, seconds: float) -> dict:
    """{rate_key: passes/s, or the reason it could not be measured here}."""
    rates = {}
    for cell in cells:
        cfg = cell.config()
        if rate_key(cfg) not in rates:
            try:
                rates[rate_key(cfg)] = measure_rate(cfg, seconds)
            except (MinidynError, ImportError, RuntimeError) as error:
                rates[rate_key(cfg)] = str(error).splitlines()[0] if str(error) else type(error).__name__
    return rates


def _hours(seconds: float) -> str:
    if seconds < 60:
        return "under 1 min"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _time_lines(rates: dict, seconds_of: dict, work: dict, total: Work) -> list[str]:
    if not rates:
        return ["Wall time not estimated (--no-measure)."]
    lines = []
    for (backend, device, model, dataset, batch), rate in rates.items():
        what = f"{backend} {model} on {dataset} (device {device}), batch {batch}"
        lines.append(f"Measured here: {what}: {rate:,.0f} passes/s (the fastest of ~1 s of training steps)."
                     if isinstance(rate, float) else f"Not measured here: {what}: {rate}.")
    load, cores = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0, os.cpu_count() or 1
    if load > cores / 2:
        lines.append(f"This machine is busy (load {load:.1f} on {cores} cores): the rate may be low.")
    if seconds_of:
        done = sum(work[name].total for name in seconds_of)
        what = "the study" if len(seconds_of) == len(work) else \
            f"{len(seconds_of)} of {len(work)} cells ({100 * done / total.total:.0f}% of the work)"
        lines += [f"Wall time at that rate: {'at most ' if total.bounds else ''}about "
                  f"{_hours(sum(seconds_of.values()))} for {what}, one task at a time on this machine",
                  "(--jobs shares its cores: about the same in total; [eval]'s larger batches usually run faster)."]
    return lines
