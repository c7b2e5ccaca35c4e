"""Training configuration: the paper's settings by default, chosen per dataset, checked once.

Where the user gives none, the dataset chooses eps, the torch model and the shape of the
epoch-based schedule (`DATASET_DEFAULTS`): MNIST at the paper's 0.3 with cnn4 and the paper's
MNIST schedule; Fashion-MNIST at 0.1 (the budget usual in the literature; 0.3 leaves a
one-epoch model at 49% clean) with the MNIST schedule; CIFAR-10 at 8/255 with cnn8 and the
paper's CIFAR-10 schedule. The schedule is given as fractions of `epochs`, so a short run keeps
the paper's shape and the paper's own epoch counts give exactly its settings:

    lr /10 at epochs 0.4 E and 0.8 E   MNIST, 50 epochs: epochs 20 and 40 (Section 5)
    lr /10 at 0.5 E and 0.83 E         CIFAR-10, 120 epochs: epochs 60 and 100
    T' = 0.8 E (CIFAR-10: 0.83 E)      40 of 50, 100 of 120
    FGSM-PGD: FGSM for E / 6 epochs    Section 3.2: the first 20 of 120 CIFAR-10 epochs (the paper
                                       runs FGSM-PGD on CIFAR-10 only)

Milestones are epoch numbers counted from 1 (schedules.StepLR): epoch 20 of 50 is the first
at lr 0.001, as in the authors' code. `--backend auto` (the default) is torch where it is
installed and numpy otherwise.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources

from minidyn.backend import parse_device
from minidyn.errors import ConfigError
from minidyn.methods import FOSC_REFERENCES  # FOSC from x_0 (the paper) or from the random start
from minidyn.methods import METHODS as RECIPES, STOPS, WEIGHTS, recipe_of

METHODS = tuple(RECIPES)  # the five of the paper, then Dynamic's family (minidyn/methods.py)
PRESETS = ("paper-mnist", "paper-cifar10", "paper-wrn")
BACKENDS = ("auto", "numpy", "cupy", "torch")
# the authors' code as switches, off by default (docs/fosc.md, "The authors' code as switches")
LOSS_WEIGHTS = WEIGHTS                  # none, the authors' sample_weight (ce), GAIRAT's (gairat)
ALL = "all"  # eval_limit: every example of the split the monitor attacks (resolved to None)


@dataclass(frozen=True)
class DatasetDefaults:
    """What a dataset sets where the user gave nothing: eps, the model on the torch backend
    (numpy and cupy build softmax and mlp only: mlp), lr milestones and T' as fractions of
    the epochs."""

    eps: float
    model: str
    milestones: tuple[float, float]
    dynamic: float


_MNIST = DatasetDefaults(0.3, "cnn4", (0.4, 0.8), 0.8)
DATASET_DEFAULTS = {
    "mnist-sample": _MNIST,
    "mnist": _MNIST,
    "fashion-mnist": DatasetDefaults(0.1, "cnn4", (0.4, 0.8), 0.8),
    "cifar10": DatasetDefaults(8 / 255, "cnn8", (0.5, 100 / 120), 100 / 120),
}


def torch_installed() -> bool:
    """Whether torch can be imported (without importing it; a blocked sys.modules entry counts
    as missing)."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


def parse_eps(text: str | float) -> float:
    """'0.3' or '8/255' -> float; ConfigError for text that is not a finite number or a fraction
    of two integers (a zero denominator, 'inf', 'nan', an exponent beyond a float's range)."""
    s = str(text).strip()
    try:
        # Fraction(s) of a decimal would build 10**exponent ('1e999999999' never returns);
        # float(s) rounds the same decimal to the same float, so only 'A/B' goes through Fraction
        value = float(Fraction(s)) if "/" in s else float(s)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        reason = "division by zero" if isinstance(exc, ZeroDivisionError) else "not a number or fraction"
        raise ConfigError(f"invalid eps {text!r}: {reason} (write e.g. 0.3 or 8/255)") from None
    if not math.isfinite(value):
        raise ConfigError(f"invalid eps {text!r}: not a finite number (write e.g. 0.3 or 8/255)")
    return value


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting may take: an int or a finite float between lo and hi (None:
    unbounded on that side; *_open: the bound itself is excluded). `label` names the setting in
    messages."""

    label: str
    kind: type = int
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def describe(self, value=None) -> str:
        """'>= 1', '> 0' or 'in (0, 1]' (a float's range); '<= 100000' where `value` is above it."""
        lo = None if self.lo is None else f"{'>' if self.lo_open else '>='} {_show(self.lo)}"
        hi = None if self.hi is None else f"{'<' if self.hi_open else '<='} {_show(self.hi)}"
        if self.kind is float and lo and hi:
            return (f"in {'(' if self.lo_open else '['}{_show(self.lo)}, {_show(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if value is not None and hi and value >= self.hi:
            return hi
        return lo or hi or "a finite number"

    def problem(self, value) -> str | None:
        """Why `value` is not one of these values (a one-line message), None when it is."""
        wanted = "an integer" if self.kind is int else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return f"{self.label} must be {wanted}, got {value!r}"
        if not math.isfinite(value):
            return f"{self.label} must be a finite number {self.describe()}, got {value}"
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)) or \
                self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return f"{self.label} must be {self.describe(value)}, got {value}"
        return None


def _show(bound) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


MAX_EPOCHS = 100_000          # bounds against typos (a hang, not a run), far above any schedule
MAX_STEPS = 100_000           # attack iterations
MAX_BATCH = 2 ** 20
MAX_EXAMPLES = 10 ** 9        # --limit and the like: more than any dataset holds
MAX_SEED = 2 ** 32 - 1        # numpy's SeedSequence and torch's generators take [0, 2**32 - 1] alike

# Every numeric TrainConfig field; the CLI's options take the same bounds (cli/params.py Number).
FIELD_BOUNDS = {
    "epochs": Bounds("epochs", int, 1, MAX_EPOCHS),
    "batch_size": Bounds("batch size", int, 1, MAX_BATCH),
    "eps": Bounds("eps", float, 0, 1, lo_open=True),
    "step_size": Bounds("step size", float, 0, lo_open=True),
    "steps": Bounds("steps", int, 1, MAX_STEPS),
    "c_max": Bounds("c_max", float, 0),
    "dynamic_epochs": Bounds("T' (--dynamic-epochs)", int, 0, MAX_EPOCHS, lo_open=True),
    "curriculum_epochs": Bounds("--curriculum-epochs", int, 0, MAX_EPOCHS, lo_open=True),
    "fgsm_epochs": Bounds("--fgsm-epochs", int, 0, MAX_EPOCHS),
    "lr": Bounds("learning rate", float, 0, lo_open=True),
    "momentum": Bounds("momentum", float, 0, 1),
    "weight_decay": Bounds("weight decay", float, 0),
    "seed": Bounds("seed", int, 0, MAX_SEED),
    "limit": Bounds("--limit", int, 1, MAX_EXAMPLES),
    "eval_limit": Bounds("--eval-limit", int, 1, MAX_EXAMPLES),
    "final_eval_limit": Bounds("--final-eval-limit", int, 1, MAX_EXAMPLES),
    "eval_steps": Bounds("--eval-steps", int, 1, MAX_STEPS),
    "val_size": Bounds("--val-size", int, 1, MAX_EXAMPLES),
    "tau": Bounds("--tau", int, 0, MAX_STEPS),
    "beta": Bounds("--beta", float, 0),
    "gairat_begin": Bounds("--gairat-begin", int, 1, MAX_EPOCHS),
    "gairat_lambda": Bounds("--gairat-lambda", float),
}
MILESTONE_BOUNDS = Bounds("--lr-milestones", int, 1, MAX_EPOCHS)
REQUIRED_NUMBERS = {"epochs", "batch_size", "steps", "c_max", "lr", "momentum", "weight_decay", "seed",
                    "eval_steps", "beta", "gairat_lambda"}


@dataclass
class TrainConfig:
    backend: str = "auto"               # torch where installed, else numpy
    device: str = "auto"
    dataset: str = "mnist-sample"
    data_dir: str | None = None
    model: str | None = None            # None: the dataset's (cnn4, cnn8) on torch, mlp on numpy/cupy
    method: str = "dynamic"
    epochs: int = 50
    batch_size: int = 32                # the paper gives none; see README (quickstart)
    eps: float | None = None            # None: the dataset's (0.3, 0.1, 8/255)
    step_size: float | None = None      # None: eps / 4
    steps: int = 10                     # K, PGD steps while training
    c_max: float | str = 0.5            # or "auto": mean FOSC of FGSM examples on a batch
    dynamic_epochs: int | None = None   # T'; None: the dataset's fraction of epochs (0.8)
    curriculum_epochs: int | None = None  # epochs of the curriculum ramp; None: T'
    fgsm_epochs: int | None = None      # FGSM-PGD switch; None: round(epochs / 6), the paper's 20/120
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: list[int] | None = None  # 1-based epochs; None: the dataset's fractions (0.4, 0.8)
    seed: int = 0
    limit: int | None = None            # first N training examples
    eval_limit: int | str | None = 500  # examples the per-epoch monitor attacks ("all" or None: all)
    final_eval_limit: int | None = None  # test examples attacked at the end (None: all, as the paper)
    final_eval: bool = True             # False: no final test evaluation (a study evaluates itself)
    val_size: int | None = None         # hold out N training examples; the monitor attacks them
    eval_steps: int = 20                # PGD steps of the per-epoch and final robust accuracy
    augment: bool | None = None         # random crop + flip; None: on for cifar10 only
    record_fosc: bool = True            # write fosc/epoch_NNN.npy (one extra grad eval per example)
    attack_mode: str = "eval"           # model mode while attacking (torch backend)
    fosc_reference: str = "natural"     # FOSC's x_0: "natural" (paper) | "start" (authors' code)
    loss_weights: str = "none"          # "ce": authors' per-example CE weights from epoch 2 on;
    #                                     "gairat": GAIRAT's (the method's own, or added to another)
    stop: str | None = None             # the attack's stop rule where it replaces the method's:
    #                                     none | fosc (c_t, Dynamic's) | tau (FAT's)
    tau: int | None = None              # FAT: a fixed tau; None: FAT's 0, 1, 2 over the epochs
    beta: float = 6.0                   # TRADES, MART: the weight of the KL term
    gairat_begin: int | None = None     # GAIRAT: first weighted epoch (from 1); None: epochs / 2
    gairat_lambda: float = -1.0         # GAIRAT: Lambda of its tanh weights
    extras: dict = field(default_factory=dict)  # backend options (amp, channels_last, ...)

    def resolved(self) -> "TrainConfig":
        """A copy with every derived default filled in, validated; raises ConfigError."""
        c = dataclasses.replace(self, extras=dict(self.extras))
        _raise_first(self.number_checks())  # the defaults below are computed from these
        if c.backend == "auto":
            c.backend = "torch" if torch_installed() else "numpy"
        d = self.dataset_defaults()
        c.eps = c.eps if c.eps is not None else d.eps
        c.model = c.model or (d.model if c.backend == "torch" else "mlp")
        c.step_size = c.step_size if c.step_size is not None else c.eps / 4
        c.dynamic_epochs = c.dynamic_epochs if c.dynamic_epochs is not None else max(1, round(d.dynamic * c.epochs))
        c.curriculum_epochs = c.curriculum_epochs if c.curriculum_epochs is not None else c.dynamic_epochs
        c.augment = c.augment if c.augment is not None else c.dataset == "cifar10"
        c.eval_limit = None if c.eval_limit == ALL else c.eval_limit  # the whole split
        c.fgsm_epochs = c.fgsm_epochs if c.fgsm_epochs is not None else round(c.epochs / 6)
        if c.lr_milestones is None:
            # epoch 1 is never decayed: a milestone m <= 1 would lower the lr from the start
            c.lr_milestones = [max(2, round(f * c.epochs)) for f in d.milestones]
        c.validate()
        return c

    def dataset_defaults(self) -> DatasetDefaults:
        """The defaults of self.dataset; ConfigError for an unknown dataset."""
        if self.dataset not in DATASET_DEFAULTS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASET_DEFAULTS)}")
        return DATASET_DEFAULTS[self.dataset]

    def from_dataset(self) -> list[str]:
        """The options of this (unresolved) config that its dataset sets: "eps", "model"."""
        return [name for name in ("eps", "model") if getattr(self, name) is None]

    def validate(self) -> None:
        """ConfigError naming the first setting that is out of place: a known method, backend,
        device and attack mode; every numeric field of the type and within the bounds of
        FIELD_BOUNDS (finite floats, ints in range; None only where a default is derived), the
        lr milestones epochs >= 1; backend options only on torch."""
        checks = [
            (self.method in METHODS, f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}"),
            (self.backend in BACKENDS, f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"),
            (self.backend == "torch" or self.device in ("auto", "cpu")
             or (self.backend == "cupy" and cuda_index(self.device) is not None),
             f"--device {self.device} is for --backend torch (or cuda[:N] with --backend cupy); "
             f"the {self.backend} backend runs on the {'GPU' if self.backend == 'cupy' else 'CPU'}"),
            *self.number_checks(),
            (self.attack_mode in ("eval", "train"), f"attack mode must be eval or train, got {self.attack_mode!r}"),
            (self.fosc_reference in FOSC_REFERENCES,
             f"--fosc-reference must be one of {', '.join(FOSC_REFERENCES)}, got {self.fosc_reference!r}"),
            (self.loss_weights in LOSS_WEIGHTS,
             f"--loss-weights must be one of {', '.join(LOSS_WEIGHTS)}, got {self.loss_weights!r}"),
            (self.stop is None or self.stop in STOPS,
             f"--stop must be one of {', '.join(STOPS)}, got {self.stop!r}"),
            _parts_check(self.method, self.stop, self.loss_weights),
            (self.backend == "torch" or not self.extras,
             f"--{next(iter(self.extras), '').replace('_', '-')} needs --backend torch (the {self.backend} backend has no such option)"),
        ]
        _raise_first(checks)

    def number_checks(self) -> list[tuple[bool, str]]:
        """(ok, message) for every numeric field (FIELD_BOUNDS; None where a default is derived
        later) and every lr milestone."""
        checks = []
        for name, bounds in FIELD_BOUNDS.items():
            value = getattr(self, name)
            optional = value is None and name not in REQUIRED_NUMBERS
            word = {"c_max": "auto", "eval_limit": ALL}.get(name)  # the word a number may be instead
            problem = None if optional or (word is not None and value == word) else bounds.problem(value)
            if problem and name == "eval_limit":
                problem = f"{problem} (or {ALL!r}: every example)"
            checks.append((problem is None, problem))
        milestones = self.lr_milestones
        if milestones is not None and not isinstance(milestones, (list, tuple)):
            return checks + [(False, f"--lr-milestones must be a list of epochs, got {milestones!r}")]
        problems = [MILESTONE_BOUNDS.problem(m) for m in milestones or ()]
        problem = next((p for p in problems if p), None)
        return checks + [(problem is None, f"{problem} (epoch numbers >= 1, counted from 1)")]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _raise_first(checks: list[tuple[bool, str]]) -> None:
    """ConfigError with the message of the first failed (ok, message) check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def cuda_index(device: str) -> int | None:
    """0 for "cuda", N for "cuda:N", None for anything else (`minidyn.backend.parse_device`)."""
    try:
        kind, index = parse_device(device)
    except ConfigError:
        return None
    return (index or 0) if kind == "cuda" else None


def load_preset(name: str) -> dict:
    """The settings of a shipped preset (minidyn/presets/NAME.toml) as TrainConfig fields."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("minidyn").joinpath(f"presets/{name}.toml").read_text()
    values = tomllib.loads(text)
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ConfigError(f"preset {name} sets unknown options: {', '.join(sorted(unknown))}")
    if isinstance(values.get("eps"), str):
        values["eps"] = parse_eps(values["eps"])
    return values


def _parts_check(method: str, stop: str | None, loss_weights: str) -> tuple[bool, str]:
    """(ok, message) for the method's parts with the run's --stop and --loss-weights (a known
    method, stop rule and weighting are checked before this one)."""
    if method not in METHODS or (stop is not None and stop not in STOPS) or loss_weights not in LOSS_WEIGHTS:
        return True, ""
    try:
        recipe_of(method, stop, loss_weights)
    except ConfigError as error:
        return False, str(error)
    return True, ""
