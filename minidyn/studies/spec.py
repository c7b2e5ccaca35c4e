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

A cell is named by all its grid values, in the grid's order (`dynamic_seed-0`,
`standard_step-size-eps-over-8_seed-2`; a key with one value names it too): a cell keeps its
name when values are added to the grid, as long as the grid keeps its keys and their order.
The black-box surrogate of a cell is the cell with the surrogate's values and the next seed
of the grid (cyclically), the other values equal: a separately trained model, as the paper's
Table 2 uses (Section 5.1).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from minidyn.files.config import TrainConfig, parse_eps
from minidyn.errors import ConfigError
from minidyn.evaluation.attack_table import ATTACKS, DEFAULT_ATTACKS

# TrainConfig's fields that `minidyn train` has options for (so that --dry-run can print a cell)
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"extras", "momentum", "weight_decay", "augment"}
EVAL_KEYS = {"attacks", "eps", "limit", "restarts", "apgd_steps", "batch_size", "seed",
             "checkpoints", "surrogate"}
REPORT_KEYS = {"baseline", "sweep", "fosc_epochs", "primary"}
PRIMARY_KEYS = {"setting", "attack", "checkpoint", "eps", "kind"}
KINDS_OF_EVALUATION = ("white-box", "black-box")
CHECKPOINTS = ("last", "best")
MAX_CELLS = 10_000  # a grid larger than this is a typo, not a study  # the last epoch's weights; the best on validation (--val-size)


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
            options["step_size"] = eps * _eps_fraction(options["step_size"], self.name)
        try:
            return TrainConfig(**options).resolved()
        except (ConfigError, TypeError) as error:
            raise ConfigError(f"cell {self.name}: {error}") from None


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
        keys = list(self.grid)
        cells = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            if any(all(values.get(k) == v for k, v in ex.items()) for ex in self.exclude):
                continue
            name = cell_name(values) or "run"  # every key: a name that adding values keeps
            # the study evaluates every cell itself ([eval]): no final evaluation in training
            cells.append(Cell(name, {**self.train, **values, "final_eval": False}, values))
        return cells

    def surrogate_of(self, cell: Cell) -> Cell | None:
        """The black-box surrogate of `cell` (None without [eval] surrogate): the cell with the
        surrogate's grid values and the next seed of the grid (cyclically)."""
        if self.eval.surrogate is None:
            return None
        seeds = self.grid.get("seed", [self.train.get("seed", 0)])
        seed = cell.values.get("seed", self.train.get("seed", 0))
        wanted = {**cell.values, **self.eval.surrogate}
        if "seed" in self.grid:
            wanted["seed"] = seeds[(seeds.index(seed) + 1) % len(seeds)]
        for other in self.cells():
            if other.values == wanted:
                return other
        raise ConfigError(f"[eval] surrogate: the study has no cell {cell_name(wanted)} "
                          f"(the surrogate of {cell.name})")


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
    try:
        return parse_spec(raw, name=name or path.stem, text=text)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def parse_spec(raw: dict, name: str = "study", text: str = "") -> Spec:
    """A Spec from the parsed TOML `raw`; ConfigError on unknown sections, keys or values."""
    unknown = set(raw) - {"study", "train", "grid", "exclude", "eval", "report"}
    if unknown:
        raise ConfigError(f"unknown section(s) {_names(unknown)}")
    train = _options(_table(raw, "train"), "train")
    grid = _options(_table(raw, "grid"), "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[grid] {key} must be a non-empty list")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"[grid] {key} lists a value twice")
        if key in train:
            raise ConfigError(f"{key} is set in both [train] and [grid]")
    exclude = raw.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, dict) for e in exclude):
        raise ConfigError("[[exclude]] must be tables of grid values")
    exclude = [_options(e, "exclude") for e in exclude]
    size = 1
    for values in grid.values():
        size *= len(values)
        if size > MAX_CELLS:
            raise ConfigError(f"the grid crosses into more than {MAX_CELLS:,} cells")
    evaluation = _table(raw, "eval")
    if "checkpoints" not in evaluation:  # the best on validation where there is a validation split
        held_out = "val_size" in train or "val_size" in grid
        evaluation = {**evaluation, "checkpoints": list(CHECKPOINTS if held_out else ("last",))}
    spec = Spec(str(_table(raw, "study").get("name", name)), train, grid, exclude,
                _eval(evaluation), _report(_table(raw, "report")), text)
    cells = spec.cells()
    if not cells:
        raise ConfigError("the grid and [[exclude]] leave no cell to run")
    if len({c.name for c in cells}) != len(cells):
        raise ConfigError("two cells get the same name (give the grid values that differ)")
    for cell in cells:
        cfg = cell.config()  # every cell must be a valid run before any is started
        if "best" in spec.eval.checkpoints and cfg.val_size is None:
            raise ConfigError(f"cell {cell.name}: [eval] checkpoints has 'best' (on validation), "
                              "which needs val_size in [train]")
        spec.surrogate_of(cell)
    check_report(spec, _table(raw, "report"))
    return spec


def _names(keys) -> str:
    """Keys for a one-line message: odd ones (a newline, a space) as Python literals."""
    return ", ".join(k if k.isidentifier() else repr(k) for k in sorted(keys))


def _table(raw: dict, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _options(table: dict, section: str) -> dict:
    """TrainConfig options by minidyn train's names (batch-size or batch_size)."""
    options = {key.replace("-", "_"): value for key, value in table.items()}
    unknown = set(options) - TRAIN_FIELDS
    if unknown:
        raise ConfigError(f"[{section}] unknown option(s) {_names(unknown)} "
                          "(use minidyn train's option names)")
    if isinstance(options.get("eps"), str):
        options["eps"] = parse_eps(options["eps"])
    if isinstance(options.get("eps"), list):
        options["eps"] = [parse_eps(e) if isinstance(e, str) else e for e in options["eps"]]
    return options


def _eps_fraction(text: str, where: str) -> float:
    """'eps/4' -> 0.25, 'eps' -> 1."""
    head, _, tail = text.replace(" ", "").partition("/")
    try:
        if head != "eps" or (tail and float(tail) <= 0):
            raise ValueError
        return 1 / float(tail) if tail else 1.0
    except ValueError:
        raise ConfigError(f"cell {where}: step_size {text!r} is neither a number nor 'eps/K'") from None


def _eval(table: dict) -> Eval:
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
        values["eps"] = tuple(parse_eps(e) for e in eps)
        if not values["eps"] or not all(0 < e <= 1 for e in values["eps"]):
            raise ConfigError("[eval] eps values must be in (0, 1]")
    checkpoints = values.get("checkpoints", list(CHECKPOINTS))
    if (not isinstance(checkpoints, list) or not checkpoints
            or any(not isinstance(c, str) or c not in CHECKPOINTS for c in checkpoints)):
        raise ConfigError(f"[eval] checkpoints must be a list of {', '.join(CHECKPOINTS)}")
    values["checkpoints"] = tuple(checkpoints)
    for key, low in (("limit", 1), ("restarts", 1), ("apgd_steps", 1), ("batch_size", 1), ("seed", 0)):
        if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool)
                              or values[key] < low):
            raise ConfigError(f"[eval] {key} must be an integer >= {low}")
    if "surrogate" in values and not isinstance(values["surrogate"], dict):
        raise ConfigError("[eval] surrogate must be a table of grid values, e.g. {method = \"standard\"}")
    return Eval(**values)


def _report(table: dict) -> dict:
    """[report] with its defaults: baseline a table of grid values, primary a list of
    {"setting": grid values, "attack", "checkpoint", "eps", "kind"} (None where not given)."""
    unknown = set(table) - REPORT_KEYS
    if unknown:
        raise ConfigError(f"[report] unknown key(s) {', '.join(sorted(unknown))}")
    report = {"baseline": "standard", "primary": [], **table}
    if not isinstance(report["baseline"], (str, dict)):
        raise ConfigError("[report] baseline must be a method or a table of grid values")
    if isinstance(report["baseline"], str):
        report["baseline"] = {"method": report["baseline"]}
    report["baseline"] = _options(report["baseline"], "report] [baseline")
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
    eps = item.get("eps")
    return {"setting": _options(item["setting"], f"report] [primary {number} setting"), "attack": item["attack"],
            "checkpoint": item.get("checkpoint"), "kind": kind,
            "eps": None if eps is None else parse_eps(eps) if isinstance(eps, str) else eps}


def check_report(spec: Spec, given: dict) -> None:
    """Refuse a [report] baseline (where `given`, the spec's [report] table, names one), a sweep
    or a primary comparison whose values the grid and [eval] do not have: a typo would silently
    drop the comparisons (or, for the sweep, fail only when the report is drawn). ConfigError naming the value and what the spec has."""
    if "baseline" in given:
        _check_grid_values(spec, spec.report["baseline"], "[report] baseline")
    if "sweep" in given and given["sweep"] not in spec.grid:
        raise ConfigError(f"[report] sweep {given['sweep']!r} is not a grid key "
                          f"(the grid's keys: {', '.join(spec.grid) or 'none'})")
    for number, item in enumerate(spec.report["primary"], 1):
        _check_primary(spec, item, f"[report] primary {number}")


def _check_grid_values(spec: Spec, values: dict, where: str) -> None:
    for key, value in values.items():
        if key == "seed" or key not in spec.grid:
            keys = [k for k in spec.grid if k != "seed"]
            raise ConfigError(f"{where}: {key} is not a grid key the seeds are compared across "
                              f"(the grid's: {', '.join(keys) or 'none'})")
        if value not in spec.grid[key]:
            raise ConfigError(f"{where}: {key} = {value!r} matches no grid value (the grid's {key} "
                              f"values: {', '.join(repr(v) for v in spec.grid[key])})")


def _check_primary(spec: Spec, item: dict, where: str) -> None:
    _check_grid_values(spec, item["setting"], where)
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
    cells = [c.values for c in spec.cells()]
    compared = [v for v in cells if all(v.get(k) == x for k, x in item["setting"].items())
                and {**v, **spec.report["baseline"]} != v and {**v, **spec.report["baseline"]} in cells]
    if not compared:
        raise ConfigError(f"{where}: no cell with {item['setting']} has a baseline cell "
                          f"({', '.join(f'{k} {v}' for k, v in spec.report['baseline'].items())}) to be compared with")
