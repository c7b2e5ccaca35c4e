"""A study spec (TOML): the base training options, the grid to cross, the evaluation, the report.

    [train]                  # minidyn train's options (as `batch_size` or `batch-size`)
    epochs = 10
    val_size = 1000
    [grid]                   # lists to cross; one cell per combination
    method = ["standard", "dynamic"]
    seed = [0, 1, 2]
    step_size = ["eps/4", "eps/8"]   # a step size may be a fraction of the cell's eps
    [[exclude]]              # optional: cells to leave out (every key given must match)
    method = "standard"
    step_size = "eps/8"
    [eval]                   # the study's final evaluation of every cell (minidyn eval's)
    attacks = ["clean", "fgsm", "pgd10", "pgd20", "cw", "apgd-ce"]
    eps = [0.3]              # test eps values (default: the cell's training eps)
    limit = 1000             # test examples (default: all)
    checkpoints = ["last", "best"]      # default: both where [train] has val_size, else last
    surrogate = {method = "standard"}   # black-box: each seed's surrogate (see below)
    [report]
    baseline = "standard"    # the method the paired differences are taken against, or grid
                             # values: {fosc_reference = "natural", loss_weights = "none"}
    [study]
    name = "my-study"        # optional: one folder name (default: the file's stem)

parse_spec checks all of it before any cell exists (its docstring says what).
A cell is named by all its grid values, in the grid's order (`dynamic_seed-0`,
`standard_step-size-eps-over-8_seed-2`; a key with one value names it too): a cell keeps its
name when values are added to the grid, as long as the grid keeps its keys and their order
(`study run` refuses another order where cells were trained: reordered_grid).
The black-box surrogate of a cell is the cell with the surrogate's values and the next seed
of the grid (cyclically), the other values equal: a separately trained model, as the paper's
Table 2 uses (Section 5.1).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from minidyn.files.config import (MAX_BATCH, MAX_EPOCHS, MAX_EXAMPLES, MAX_SEED, MAX_STEPS, Bounds,
                                  TrainConfig, parse_eps)
from minidyn.files.readers import CONFIG_TYPES, MODEL_NAME
from minidyn.errors import ConfigError
from minidyn.evaluation.attack_table import ATTACKS, DEFAULT_ATTACKS
from minidyn.projection import is_eps
from minidyn.studies.cost import SPLIT_SIZES

# TrainConfig's fields that `minidyn train` has options for (so that --dry-run can print a cell)
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"extras", "momentum", "weight_decay", "augment"}
EVAL_KEYS = {"attacks", "eps", "limit", "restarts", "apgd_steps", "batch_size", "seed",
             "checkpoints", "surrogate"}
REPORT_KEYS = {"baseline", "sweep", "fosc_epochs", "primary"}
PRIMARY_KEYS = {"setting", "attack", "checkpoint", "eps", "kind", "baseline"}
KINDS_OF_EVALUATION = ("white-box", "black-box")
CHECKPOINTS = ("last", "best")
MAX_CELLS = 10_000  # a grid larger than this is a typo, not a study
STUDY_KEYS = {"name"}
# a study's name is a folder under studies/: one safe path component, never '.', '..' or a path
STUDY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
# a cell's name is a folder and the stem of NAME.blackbox.lock and its writes' temporary files:
# 200 bytes keeps every one of them under the 255 bytes a file name may have
MAX_CELL_NAME = 200
MAX_RESTARTS = 1000  # minidyn eval --restarts (cli/params.py MAX_RESTARTS)
# [eval]'s numbers take `minidyn eval`'s bounds (cli/evaluate.py's options)
EVAL_BOUNDS = {"limit": Bounds("[eval] limit", int, 1, MAX_EXAMPLES),
               "restarts": Bounds("[eval] restarts", int, 1, MAX_RESTARTS),
               "apgd_steps": Bounds("[eval] apgd_steps", int, 1, MAX_STEPS),
               "batch_size": Bounds("[eval] batch_size", int, 1, MAX_BATCH),
               "seed": Bounds("[eval] seed", int, 0, MAX_SEED)}
FOSC_EPOCH_BOUNDS = Bounds("[report] fosc_epochs", int, 1, MAX_EPOCHS)
# the options TrainConfig.resolved() derives from others where the spec does not give them
DERIVED = ("backend", "model", "eps", "step_size", "dynamic_epochs", "curriculum_epochs",
           "fgsm_epochs", "lr_milestones", "augment")
ARRAY_MODELS = ("softmax", "mlp")  # what the numpy and cupy backends build (torch: MODEL_NAME)


@dataclass(frozen=True)
class Cell:
    """One run of a study: its name, its TrainConfig options (the base plus its grid values)
    and the grid values alone."""

    name: str
    options: dict
    values: dict

    def config(self) -> TrainConfig:
        """The cell's resolved TrainConfig; ConfigError naming the cell when it cannot train."""
        options = dict(self.options)
        if isinstance(options.get("data_dir"), str):  # as minidyn train stores it
            options["data_dir"] = os.path.abspath(options["data_dir"])
        if isinstance(options.get("step_size"), str):  # "eps/4": a fraction of the cell's eps
            eps = TrainConfig(**{k: options[k] for k in ("dataset", "eps") if k in options}).resolved().eps
            options["step_size"] = eps * _eps_fraction(options["step_size"], f"cell {self.name}:")
        try:
            return TrainConfig(**options).resolved()
        except (ConfigError, TypeError) as error:
            raise ConfigError(f"cell {self.name}: {error}") from None

    def changed_option(self, differing: list[str]) -> str:
        """Of the options `differing` between this cell's trained config and its config now,
        the one to name in a refusal: one the spec gives the cell, else one TrainConfig does
        not derive from others (a changed epochs moves T', curriculum_epochs, fgsm_epochs and
        the milestones with it: the user changed epochs)."""
        return min(differing, key=lambda key: (key not in self.options, key in DERIVED))


@dataclass(frozen=True)
class Eval:
    """The study's final evaluation of each cell."""

    attacks: tuple = tuple(DEFAULT_ATTACKS)
    eps: tuple | None = None        # None: the cell's training eps
    limit: int | None = None        # None: the whole test set
    restarts: int = 1
    apgd_steps: int = 100
    batch_size: int = 256
    seed: int = 0
    checkpoints: tuple = CHECKPOINTS
    surrogate: dict | None = None   # grid values of each seed's black-box surrogate

    def settings(self, surrogate: str | None = None) -> dict:
        """What an evaluation's results depend on, as JSON gives it back (recorded with them).
        `surrogate`: a black-box evaluation's resolved surrogate (the cell's name), which its
        results depend on; a white-box evaluation's do not depend on [eval] surrogate."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k != "surrogate"}
        if surrogate is not None:
            settings["surrogate"] = surrogate
        return json.loads(json.dumps(settings))


@dataclass(frozen=True)
class Spec:
    name: str
    train: dict
    grid: dict
    exclude: list
    eval: Eval
    report: dict = field(default_factory=dict)
    text: str = ""                  # the TOML as read (copied into the study directory)

    def cells(self) -> list[Cell]:
        """Every combination of the grid, minus the excluded ones, in grid order."""
        return list(self._cells)

    @functools.cached_property
    def _cells(self) -> tuple[Cell, ...]:
        keys = list(self.grid)
        cells = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            if any(all(values.get(k) == v for k, v in ex.items()) for ex in self.exclude):
                continue
            name = cell_name(values) or "run"  # every key: a name that adding values keeps
            # the study evaluates every cell itself ([eval]): no final evaluation in training
            cells.append(Cell(name, {**self.train, **values, "final_eval": False}, values))
        return tuple(cells)

    @functools.cached_property
    def _by_position(self) -> dict[tuple, Cell]:
        """{each cell's grid positions: the cell}: planning looks cells up in linear time."""
        return {self._position(cell.values): cell for cell in self._cells}

    def _position(self, values: dict) -> tuple | None:
        """The index of each of `values` in its grid list, in grid order; None where `values`
        are not one value of every grid key and nothing else."""
        if set(values) != set(self.grid):
            return None
        try:
            return tuple(self.grid[key].index(values[key]) for key in self.grid)
        except ValueError:
            return None

    def cell_with(self, values: dict) -> Cell | None:
        """The cell of exactly these grid values (None: excluded or not in the grid)."""
        position = self._position(values)
        return None if position is None else self._by_position.get(position)

    def surrogate_of(self, cell: Cell) -> Cell | None:
        """The black-box surrogate of `cell` (None without [eval] surrogate): the cell with the
        surrogate's grid values and the next seed of the grid (cyclically). ConfigError where
        that cell is missing or is `cell` itself (a self-transfer is no black-box attack)."""
        if self.eval.surrogate is None:
            return None
        seeds = self.grid.get("seed", [self.train.get("seed", 0)])
        seed = cell.values.get("seed", self.train.get("seed", 0))
        wanted = {**cell.values, **self.eval.surrogate}
        if "seed" in self.grid:
            wanted["seed"] = seeds[(seeds.index(seed) + 1) % len(seeds)]
        other = self.cell_with(wanted)
        if other is None:
            raise ConfigError(f"[eval] surrogate: the study has no cell {cell_name(wanted)} "
                              f"(the surrogate of {cell.name})")
        if other.name == cell.name:
            raise ConfigError(f"[eval] surrogate: cell {cell.name} would be its own surrogate "
                              "(a self-transfer, not a black-box attack); give [grid] seed two or "
                              "more seeds")
        return other


def cell_name(values: dict) -> str:
    """'dynamic_seed-0': each value as key-value ('-' for '_', 'over' for '/'); the method bare."""
    parts = []
    for key, value in values.items():
        text = f"{value:g}" if isinstance(value, float) else (
            ",".join(map(str, value)) if isinstance(value, list) else str(value))
        text = text.replace("/", "-over-")
        parts.append(text if key == "method" else f"{key.replace('_', '-')}-{text}")
    return "_".join(parts)


def load_spec(path: str | Path, name: str | None = None) -> Spec:
    """Read and check a spec file; ConfigError naming the file and the problem. The study's
    name is [study] name, else `name`, else the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such study spec (see `minidyn study list`)")
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path} is not a readable TOML study spec ({error})") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(f"{path} is not a readable TOML study spec (nested too deeply)") from None
    try:
        return parse_spec(raw, name=name or path.stem, text=text)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


SECTIONS = ("study", "train", "grid", "exclude", "eval", "report")


def parse_spec(raw: dict, name: str = "study", text: str = "") -> Spec:
    """A Spec from the parsed TOML `raw`, every section checked before any cell is made
    (docs/studies.md, "What a spec may say"): known sections and keys; [train] and [grid]
    values of TrainConfig's types within `minidyn train`'s bounds; [eval] within `minidyn
    eval`'s; a [study] name that is one safe folder name; [[exclude]] tables and [eval]
    surrogate of grid keys and grid values; every cell a valid run on its dataset's sizes
    with a name that fits a file name; a surrogate that is another cell. ConfigError naming
    the section, the option and the problem."""
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s) {_names(unknown)} (a spec has {', '.join(SECTIONS)})")
    _check_text(raw)
    train = _options(_table(raw, "train"), "[train]")
    grid = _grid(_table(raw, "grid"), train)
    exclude = raw.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, dict) and e for e in exclude):
        raise ConfigError("[[exclude]] must be tables of grid values")
    exclude = [_options(e, f"[[exclude]] {n}") for n, e in enumerate(exclude, 1)]
    for n, values in enumerate(exclude, 1):  # a key or value the grid lacks would exclude nothing
        _check_values(grid, values, f"[[exclude]] {n}", seed=True)
    evaluation = _table(raw, "eval")
    if "checkpoints" not in evaluation:  # the best on validation where there is a validation split
        held_out = "val_size" in train or "val_size" in grid
        evaluation = {**evaluation, "checkpoints": list(CHECKPOINTS if held_out else ("last",))}
    spec = Spec(_study_name(_table(raw, "study"), name), train, grid, exclude,
                _eval(evaluation, grid), _report(_table(raw, "report")), text)
    _check_cells(spec)
    check_report(spec, _table(raw, "report"))
    return spec


def _check_text(raw: dict) -> None:
    """Refuse a control character (a NUL, a newline) in any key or string of the spec: they
    become file names, command lines and one-line messages. Iterative: any nesting depth."""
    stack = [((f"[{k}]",), k, v) for k, v in raw.items()]
    while stack:
        where, key, value = stack.pop()
        for text in (key, value):
            if isinstance(text, str) and any(ord(c) < 32 or ord(c) == 127 for c in text):
                raise ConfigError(f"{' '.join(where)}: {_show(text)} holds a control character")
        if isinstance(value, dict):
            stack += [((*where[:2], _names([str(k)[:40]])), k, v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(where, None, v) for v in value]


def _study_name(table: dict, default: str) -> str:
    """[study] name (checked: one safe folder name), else `default`."""
    unknown = set(table) - STUDY_KEYS
    if unknown:
        raise ConfigError(f"[study] unknown key(s) {_names(unknown)} (it has {', '.join(sorted(STUDY_KEYS))})")
    if "name" not in table:
        return default
    check_study_name(table["name"], "[study] name")
    return table["name"]


def check_study_name(name, where: str) -> None:
    """ConfigError unless `name` can be a study's folder under studies/ (STUDY_NAME)."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
        raise ConfigError(f"{where} must be one folder name of letters, digits, '.', '_' and '-' "
                          f"(at most 100, not starting with '.'; not a path), got {_show(name)}")


def _names(keys) -> str:
    """Keys for a one-line message: odd ones (a newline, a space) as Python literals."""
    return ", ".join(k if k.isidentifier() else repr(k) for k in sorted(map(str, keys)))


def _table(raw: dict, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _grid(table: dict, train: dict) -> dict:
    """[grid]: a non-empty list of distinct TrainConfig values per option, at most MAX_CELLS
    combinations, no option also in [train]."""
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[grid] {_names([key])} must be a non-empty list")
    grid = _options(table, "[grid]", lists=True)
    size = 1
    for key, values in grid.items():
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"[grid] {key} lists a value twice")
        if key in train:
            raise ConfigError(f"{key} is set in both [train] and [grid]")
        size *= len(values)
        if size > MAX_CELLS:
            raise ConfigError(f"the grid crosses into more than {MAX_CELLS:,} cells")
    return grid


def _options(table: dict, where: str, lists: bool = False) -> dict:
    """TrainConfig options by minidyn train's names (batch-size or batch_size), eps as numbers,
    each value (each item of a list where `lists`) of its TrainConfig field's type (a step size
    may be 'eps/K'); ConfigError naming `where` and the option."""
    options = {key.replace("-", "_"): value for key, value in table.items()}
    unknown = set(options) - TRAIN_FIELDS
    if unknown:
        raise ConfigError(f"{where} unknown option(s) {_names(unknown)} "
                          "(use minidyn train's option names)")
    try:
        if isinstance(options.get("eps"), str):
            options["eps"] = parse_eps(options["eps"])
        if isinstance(options.get("eps"), list):
            options["eps"] = [parse_eps(e) if isinstance(e, str) else e for e in options["eps"]]
    except ConfigError as error:
        raise ConfigError(f"{where} {error}") from None
    for key, value in options.items():
        for item in value if lists else [value]:
            if key == "step_size" and isinstance(item, str):
                _eps_fraction(item, where)
            elif not _has_type(item, CONFIG_TYPES[key]):
                raise ConfigError(f"{where} {key} must be {_kind(CONFIG_TYPES[key])}, got {_show(item)}")
    return options


def _has_type(value, hint) -> bool:
    """Whether a TOML value has type `hint` (a TrainConfig field's: int is not bool, float
    accepts int and is finite, list[X], unions), as config.json's reader checks them."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_has_type(v, typing.get_args(hint)[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return hint is not type(None) and isinstance(value, hint)


def _show(value) -> str:
    """A value for a one-line message: at most 40 characters of its repr, a table as 'a table'."""
    if isinstance(value, dict):
        return "a table"
    text = repr(value) if not isinstance(value, list) or len(value) <= 8 else "a list"
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(hint) -> str:
    """'an integer', 'true or false', 'a list of integers', 'a number or a string' for a type."""
    if typing.get_origin(hint) is list:
        return "a list of " + {int: "integers"}.get(typing.get_args(hint)[0], "values")
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return " or ".join(words.get(h, "a value") if typing.get_origin(h) is not list else _kind(h)
                       for h in typing.get_args(hint) or (hint,) if h is not type(None))


def _check_cells(spec: Spec) -> None:
    """Every cell a valid run on its dataset, named by a file name, its surrogate another cell."""
    cells = spec.cells()
    if not cells:
        raise ConfigError("the grid and [[exclude]] leave no cell to run")
    if len({c.name for c in cells}) != len(cells):
        raise ConfigError("two cells get the same name (give the grid values that differ)")
    for cell in cells:
        size = len(cell.name.encode("utf-8"))
        if size > MAX_CELL_NAME or cell.name.startswith("."):
            raise ConfigError(f"cell {cell.name[:40]}...: a name of {size} bytes"
                              + (" starting with '.'" if cell.name.startswith(".") else
                                 f", more than the {MAX_CELL_NAME} a study's file names allow")
                              + " (give the grid shorter values)")
        cfg = cell.config()  # every cell must be a valid run before any is started
        _check_run(cell.name, cfg)
        if "best" in spec.eval.checkpoints and cfg.val_size is None:
            raise ConfigError(f"cell {cell.name}: [eval] checkpoints has 'best' (on validation), "
                              "which needs val_size in [train]")
        spec.surrogate_of(cell)


def _check_run(name: str, cfg: TrainConfig) -> None:
    """What a worker would refuse only once started: a model its backend cannot build, a
    val_size or limit beyond the dataset's training examples (its official files' sizes)."""
    model = str(cfg.model).strip().lower()
    if cfg.backend in ("numpy", "cupy") and cfg.model not in ARRAY_MODELS:
        raise ConfigError(f"cell {name}: unknown model {_show(cfg.model)} for the {cfg.backend} "
                          f"backend, which has {', '.join(ARRAY_MODELS)} (others need backend torch)")
    if not MODEL_NAME.fullmatch(model):
        raise ConfigError(f"cell {name}: unknown model {_show(cfg.model)}; choose one of softmax, "
                          "mlp, cnn4, cnn8, wrn-D-W, preact-resnet18, preact-resnet50")
    n_train = SPLIT_SIZES[cfg.dataset][0]
    if cfg.val_size is not None and cfg.val_size >= n_train:
        raise ConfigError(f"cell {name}: val_size {cfg.val_size} must be at most {n_train - 1:,} "
                          f"(the {n_train:,} training examples of {cfg.dataset} minus one)")
    left = n_train - (cfg.val_size or 0)
    if cfg.limit is not None and cfg.limit > left:
        raise ConfigError(f"cell {name}: limit {cfg.limit} exceeds the {left:,} training examples "
                          f"of {cfg.dataset}" + (" left after val_size" if cfg.val_size else ""))


def _eps_fraction(text: str, where: str) -> float:
    """'eps/4' -> 0.25, 'eps' -> 1."""
    head, _, tail = text.replace(" ", "").partition("/")
    try:
        if head != "eps" or (tail and float(tail) <= 0):
            raise ValueError
        return 1 / float(tail) if tail else 1.0
    except (ValueError, OverflowError):
        raise ConfigError(f"{where} step_size {_show(text)} is neither a number nor 'eps/K'") from None


def _eval(table: dict, grid: dict) -> Eval:
    """[eval], its numbers within `minidyn eval`'s bounds (EVAL_BOUNDS), its surrogate grid
    values other than the seed."""
    unknown = set(table) - EVAL_KEYS
    if unknown:
        raise ConfigError(f"[eval] unknown key(s) {_names(unknown)}")
    values = dict(table)
    attacks = values.get("attacks", list(DEFAULT_ATTACKS))
    if (not isinstance(attacks, list) or not attacks
            or any(not isinstance(a, str) or a not in ATTACKS for a in attacks)):
        raise ConfigError(f"[eval] attacks must be a list of {', '.join(ATTACKS)}")
    values["attacks"] = tuple(attacks)
    if "eps" in values:
        eps = values["eps"] if isinstance(values["eps"], list) else [values["eps"]]
        try:
            values["eps"] = tuple(parse_eps(e) if isinstance(e, str) else e for e in eps)
        except ConfigError as error:
            raise ConfigError(f"[eval] {error}") from None
        if not values["eps"] or not all(_has_type(e, float) and is_eps(e) for e in values["eps"]):
            raise ConfigError("[eval] eps values must be in (0, 1]")
    checkpoints = values.get("checkpoints", list(CHECKPOINTS))
    if (not isinstance(checkpoints, list) or not checkpoints
            or any(not isinstance(c, str) or c not in CHECKPOINTS for c in checkpoints)):
        raise ConfigError(f"[eval] checkpoints must be a list of {', '.join(CHECKPOINTS)}")
    values["checkpoints"] = tuple(checkpoints)
    for key, bounds in EVAL_BOUNDS.items():
        problem = bounds.problem(values[key]) if key in values else None
        if problem:
            raise ConfigError(problem)
    if "surrogate" in values:
        if not isinstance(values["surrogate"], dict) or not values["surrogate"]:
            raise ConfigError("[eval] surrogate must be a table of grid values, e.g. {method = \"standard\"}")
        values["surrogate"] = _options(values["surrogate"], "[eval] surrogate")
        _check_values(grid, values["surrogate"], "[eval] surrogate")
    return Eval(**values)


def _report(table: dict) -> dict:
    """[report] with its defaults: baseline a table of grid values, primary a list of
    {"setting": grid values, "attack", "checkpoint", "eps", "kind"} (None where not given),
    sweep a grid key's name, fosc_epochs a list of epochs counted from 1."""
    unknown = set(table) - REPORT_KEYS
    if unknown:
        raise ConfigError(f"[report] unknown key(s) {_names(unknown)}")
    report = {"baseline": "standard", "primary": [], **table}
    if not isinstance(report["baseline"], (str, dict)):
        raise ConfigError("[report] baseline must be a method or a table of grid values")
    if isinstance(report["baseline"], str):
        report["baseline"] = {"method": report["baseline"]}
    report["baseline"] = _options(report["baseline"], "[report] baseline")
    if "sweep" in report and not isinstance(report["sweep"], str):
        raise ConfigError(f"[report] sweep must be the name of a grid key, got {_show(report['sweep'])}")
    epochs = report.get("fosc_epochs", [1])
    if not isinstance(epochs, list) or not epochs:
        raise ConfigError(f"[report] fosc_epochs must be a list of epochs (from 1), got {_show(epochs)}")
    problem = next(filter(None, map(FOSC_EPOCH_BOUNDS.problem, epochs)), None)
    if problem:
        raise ConfigError(problem)
    if not isinstance(report["primary"], list) or not all(isinstance(p, dict) for p in report["primary"]):
        raise ConfigError("[report] primary must be a list of tables, e.g. "
                          "[{setting = {method = \"dynamic\"}, attack = \"pgd20\", checkpoint = \"best\"}]")
    report["primary"] = [_primary(p, i) for i, p in enumerate(report["primary"], 1)]
    return report


def _primary(item: dict, number: int) -> dict:
    """One [report] primary comparison, its types checked (check_report checks its values)."""
    where = f"[report] primary {number}"
    unknown = set(item) - PRIMARY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (give {', '.join(sorted(PRIMARY_KEYS))})")
    if not isinstance(item.get("setting"), dict) or not item["setting"] or not isinstance(item.get("attack"), str):
        raise ConfigError(f"{where} needs setting (a table of grid values) and attack (a name)")
    kind = item.get("kind", "white-box")
    if kind not in KINDS_OF_EVALUATION:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS_OF_EVALUATION)}, not {kind!r}")
    if item.get("checkpoint") is not None and item["checkpoint"] not in CHECKPOINTS:
        raise ConfigError(f"{where}: checkpoint must be one of {', '.join(CHECKPOINTS)}")
    if "baseline" in item and (not isinstance(item["baseline"], dict) or not item["baseline"]):
        raise ConfigError(f"{where}: baseline must be a table of grid values (it replaces [report] baseline's "
                          "values for this comparison)")
    eps = item.get("eps")
    return {"setting": _options(item["setting"], f"{where} setting"), "attack": item["attack"],
            "checkpoint": item.get("checkpoint"), "kind": kind,
            "eps": None if eps is None else parse_eps(eps) if isinstance(eps, str) else eps,
            "baseline": _options(item["baseline"], f"{where} baseline") if "baseline" in item else None}


def check_report(spec: Spec, given: dict) -> None:
    """Refuse a [report] baseline (where `given`, the spec's [report] table, names one), a sweep,
    FOSC epochs or a primary comparison whose values the grid and [eval] do not have: a typo
    would silently drop the comparisons (or, for the sweep, fail only when the report is
    drawn). ConfigError naming the value and what the spec has."""
    if "baseline" in given:
        _check_values(spec.grid, spec.report["baseline"], "[report] baseline")
    if "sweep" in given and given["sweep"] not in spec.grid:
        raise ConfigError(f"[report] sweep {given['sweep']!r} is not a grid key "
                          f"(the grid's keys: {', '.join(spec.grid) or 'none'})")
    last = max(cell.config().epochs for cell in spec.cells()) if "fosc_epochs" in given else None
    if last is not None and max(given["fosc_epochs"]) > last:
        raise ConfigError(f"[report] fosc_epochs: epoch {max(given['fosc_epochs'])} is past every "
                          f"cell's training (at most {last} epochs)")
    for number, item in enumerate(spec.report["primary"], 1):
        _check_primary(spec, item, f"[report] primary {number}")


def _check_values(grid: dict, values: dict, where: str, seed: bool = False) -> None:
    """ConfigError unless every key of `values` is a grid key (the seed only where `seed`)
    and every value one of that key's grid values."""
    for key, value in values.items():
        if (key == "seed" and not seed) or key not in grid:
            keys = [k for k in grid if seed or k != "seed"]
            raise ConfigError(f"{where}: {key} is not a grid key{'' if seed else ' the seeds are compared across'} "
                              f"(the grid's: {', '.join(keys) or 'none'})")
        if value not in grid[key]:
            raise ConfigError(f"{where}: {key} = {value!r} matches no grid value (the grid's {key} "
                              f"values: {', '.join(repr(v) for v in grid[key])})")


def _check_primary(spec: Spec, item: dict, where: str) -> None:
    _check_values(spec.grid, item["setting"], where)
    if item["baseline"] is not None:
        _check_values(spec.grid, item["baseline"], f"{where} baseline")
    attacks = [*spec.eval.attacks, "worst-case"]
    if item["attack"] not in attacks:
        raise ConfigError(f"{where}: attack {item['attack']!r} is not one of [eval] attacks ({', '.join(attacks)})")
    if item["kind"] == "black-box" and (spec.eval.surrogate is None or item["attack"] == "clean"):
        raise ConfigError(f"{where}: a black-box comparison needs [eval] surrogate and an attack other than clean")
    checkpoint = item["checkpoint"]
    if checkpoint is None and len(spec.eval.checkpoints) > 1:
        raise ConfigError(f"{where}: give checkpoint ({' or '.join(spec.eval.checkpoints)})")
    if checkpoint is not None and checkpoint not in spec.eval.checkpoints:
        raise ConfigError(f"{where}: checkpoint {checkpoint!r} is not one of [eval] checkpoints")
    eps, test_eps = item["eps"], spec.eval.eps or ()
    if eps is not None and (item["kind"] == "black-box" or eps not in test_eps):
        raise ConfigError(f"{where}: eps {eps!r} is not one of [eval] eps ({', '.join(map(str, test_eps)) or 'not given'})"
                          + ("; a black-box comparison is at the training eps" if item["kind"] == "black-box" else ""))
    if eps is None and item["kind"] == "white-box" and len(test_eps) > 1:
        raise ConfigError(f"{where}: give eps (one of [eval] eps: {', '.join(map(str, test_eps))})")
    baseline = primary_baseline(spec, item)
    compared = [c.values for c in spec.cells() if all(c.values.get(k) == x for k, x in item["setting"].items())
                and {**c.values, **baseline} != c.values and spec.cell_with({**c.values, **baseline})]
    if not compared:
        raise ConfigError(f"{where}: no cell with {item['setting']} has a baseline cell "
                          f"({', '.join(f'{k} {v}' for k, v in baseline.items())}) to be compared with")


def primary_baseline(spec: Spec, item: dict) -> dict:
    """The grid values a primary comparison's setting is compared with: [report] baseline's,
    with the comparison's own `baseline` values over them (e.g. the equal-cost Standard)."""
    return {**spec.report["baseline"], **(item.get("baseline") or {})}


def reordered_grid(previous: str, spec: Spec) -> tuple[list, list] | None:
    """(their order before, their order now) of the grid keys that both the spec text
    `previous` (a study's study.toml) and `spec` have, where `spec` orders them otherwise:
    cells are named in grid order, so a reordered grid renames every cell. None where the
    order is kept, or `previous` is no readable spec (the study's own checks refuse that)."""
    try:
        old = tomllib.loads(previous).get("grid", {})
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    if not isinstance(old, dict):
        return None
    before = [k for k in dict.fromkeys(str(k).replace("-", "_") for k in old) if k in spec.grid]
    now = [k for k in spec.grid if k in before]
    return (before, now) if before != now else None
