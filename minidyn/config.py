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
import sys
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources

from minidyn.errors import ConfigError

METHODS = ("unsecured", "standard", "curriculum", "fgsm-pgd", "dynamic")
PRESETS = ("paper-mnist", "paper-cifar10", "paper-wrn")
BACKENDS = ("auto", "numpy", "cupy", "torch")
# the authors' code as switches, off by default (docs/fosc.md, "The authors' code as switches")
FOSC_REFERENCES = ("natural", "start")  # FOSC from x_0 (the paper) or from the random start
LOSS_WEIGHTS = ("none", "ce")           # unweighted mean CE, or the authors' sample_weight


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
    """'0.3' or '8/255' -> float; malformed or zero denominators raise ConfigError."""
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError) as exc:
        reason = "division by zero" if isinstance(exc, ZeroDivisionError) else "not a number or fraction"
        raise ConfigError(f"invalid eps {text!r}: {reason} (write e.g. 0.3 or 8/255)") from None
    return value


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
    eval_limit: int | None = 500        # test examples attacked after each epoch (None: all)
    final_eval_limit: int | None = None  # test examples attacked at the end (None: all, as the paper)
    final_eval: bool = True             # False: no final test evaluation (a study evaluates itself)
    val_size: int | None = None         # hold out N training examples; the monitor attacks them
    eval_steps: int = 20                # PGD steps of the per-epoch and final robust accuracy
    augment: bool | None = None         # random crop + flip; None: on for cifar10 only
    record_fosc: bool = True            # write fosc/epoch_NNN.npy (one extra grad eval per example)
    attack_mode: str = "eval"           # model mode while attacking (torch backend)
    fosc_reference: str = "natural"     # FOSC's x_0: "natural" (paper) | "start" (authors' code)
    loss_weights: str = "none"          # "ce": authors' per-example CE weights from epoch 2 on
    extras: dict = field(default_factory=dict)  # backend options (amp, channels_last, ...)

    def resolved(self) -> "TrainConfig":
        """A copy with every derived default filled in, validated; raises ConfigError."""
        c = dataclasses.replace(self, extras=dict(self.extras))
        if c.backend == "auto":
            c.backend = "torch" if torch_installed() else "numpy"
        d = self.dataset_defaults()
        c.eps = c.eps if c.eps is not None else d.eps
        c.model = c.model or (d.model if c.backend == "torch" else "mlp")
        c.step_size = c.step_size if c.step_size is not None else c.eps / 4
        c.dynamic_epochs = c.dynamic_epochs if c.dynamic_epochs is not None else max(1, round(d.dynamic * c.epochs))
        c.curriculum_epochs = c.curriculum_epochs if c.curriculum_epochs is not None else c.dynamic_epochs
        c.augment = c.augment if c.augment is not None else c.dataset == "cifar10"
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
        checks = [
            (self.method in METHODS, f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}"),
            (self.backend in BACKENDS, f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"),
            (self.backend == "torch" or self.device in ("auto", "cpu")
             or (self.backend == "cupy" and cuda_index(self.device) is not None),
             f"--device {self.device} is for --backend torch (or cuda[:N] with --backend cupy); "
             f"the {self.backend} backend runs on the {'GPU' if self.backend == 'cupy' else 'CPU'}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.eps is None or 0 < self.eps <= 1, f"eps must be in (0, 1], got {self.eps}"),
            (self.step_size is None or self.step_size > 0, f"step size must be > 0, got {self.step_size}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.c_max == "auto" or (isinstance(self.c_max, (int, float)) and self.c_max >= 0),
             f"c_max must be >= 0 or 'auto', got {self.c_max}"),
            (self.dynamic_epochs is None or self.dynamic_epochs > 0,
             f"T' (--dynamic-epochs) must be > 0, got {self.dynamic_epochs}"),
            (self.curriculum_epochs is None or self.curriculum_epochs > 0,
             f"--curriculum-epochs must be > 0, got {self.curriculum_epochs}"),
            (self.fgsm_epochs is None or self.fgsm_epochs >= 0, f"--fgsm-epochs must be >= 0, got {self.fgsm_epochs}"),
            (self.lr_milestones is None or all(m >= 1 for m in self.lr_milestones),
             f"--lr-milestones must be epoch numbers >= 1 (counted from 1), got {self.lr_milestones}"),
            (self.eval_steps >= 1, f"--eval-steps must be >= 1, got {self.eval_steps}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.limit is None or self.limit >= 1, f"--limit must be >= 1, got {self.limit}"),
            (self.eval_limit is None or self.eval_limit >= 1, f"--eval-limit must be >= 1, got {self.eval_limit}"),
            (self.val_size is None or self.val_size >= 1, f"--val-size must be >= 1, got {self.val_size}"),
            (self.final_eval_limit is None or self.final_eval_limit >= 1,
             f"--final-eval-limit must be >= 1, got {self.final_eval_limit}"),
            (self.attack_mode in ("eval", "train"), f"attack mode must be eval or train, got {self.attack_mode!r}"),
            (self.fosc_reference in FOSC_REFERENCES,
             f"--fosc-reference must be one of {', '.join(FOSC_REFERENCES)}, got {self.fosc_reference!r}"),
            (self.loss_weights in LOSS_WEIGHTS,
             f"--loss-weights must be one of {', '.join(LOSS_WEIGHTS)}, got {self.loss_weights!r}"),
            (self.backend == "torch" or not self.extras,
             f"--{next(iter(self.extras), '').replace('_', '-')} needs --backend torch (the {self.backend} backend has no such option)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cuda_index(device: str) -> int | None:
    """0 for "cuda", N for "cuda:N", None for anything else."""
    name, _, index = str(device).partition(":")
    if name != "cuda":
        return None
    return int(index) if index.isdigit() else (0 if not index else None)


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
