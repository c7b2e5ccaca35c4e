"""Parameter types shared by the minidyn commands: numbers, budgets, c_max and lists of epochs.

Every numeric option of every command is a `Number` (or `Eps`, `CMax`, which add to it): a
value that is not a finite number in the option's range is click's usage error (exit 2) naming
the option, before anything runs or is written.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import click

from minidyn.files.config import ALL, FIELD_BOUNDS, MAX_BATCH, MAX_EXAMPLES, MAX_STEPS, Bounds, parse_eps
from minidyn.errors import ConfigError

# Longer option text is refused unread: int() and float() of it are linear, but no number is this long.
MAX_TEXT = 1000


class Number(click.ParamType):
    """An int or a finite float within `bounds` (config.Bounds); text is read by int() or
    float() alone (no Fraction, no eval), so any string converts or fails at once."""

    def __init__(self, bounds: Bounds):
        self.bounds = bounds
        self.name = "INTEGER" if bounds.kind is int else "FLOAT"

    @classmethod
    def field(cls, name: str) -> "Number":
        """The type of the option that sets TrainConfig field `name`: its FIELD_BOUNDS."""
        return cls(FIELD_BOUNDS[name])

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            value = self.parse(value, param, ctx)
        problem = self.bounds.problem(value)
        if problem:
            self.fail(problem, param, ctx)
        return value + 0.0 if self.bounds.kind is float else value  # -0.0 is 0.0

    def parse(self, text: str, param, ctx):
        """int(text) or float(text); the usage error for text that is neither."""
        kind = "an integer" if self.bounds.kind is int else "a number"
        if len(text) > MAX_TEXT:
            self.fail(f"{text[:20]!r}... ({len(text)} characters) is too long for {kind}", param, ctx)
        try:
            return self.bounds.kind(text)
        except ValueError:
            self.fail(f"{text!r} is not {kind}", param, ctx)


class CountOrAll(Number):
    """An integer within `bounds`, or 'all' (every example: TrainConfig resolves it to None)."""

    def __init__(self, bounds: Bounds):
        super().__init__(bounds)
        self.name = "N|all"

    def convert(self, value, param, ctx):
        if value == ALL:
            return value
        if isinstance(value, str) and len(value) <= MAX_TEXT:
            try:
                value = int(value)
            except ValueError:
                self.fail(f"{value!r} is neither an integer nor {ALL!r}", param, ctx)
        return super().convert(value, param, ctx)


def count(label: str, hi: int, lo: int = 1) -> Number:
    """An integer option in [lo, hi] named `label` in messages (--limit, --bins, ...)."""
    return Number(Bounds(label, int, lo, hi))


MAX_RESTARTS = 1000
MAX_BINS = 10_000             # Fig 1a's bins (the paper's 20)
MAX_TRAJECTORIES = 10_000     # Fig 1b's examples and PGD steps

SEED = Number(FIELD_BOUNDS["seed"])
LIMIT = count("--limit", MAX_EXAMPLES)
BATCH_SIZE = count("batch size", MAX_BATCH)
APGD_STEPS = count("APGD steps", MAX_STEPS)


class Eps(click.ParamType):
    """A perturbation budget in (0, 1]: '0.3' or a fraction such as '8/255' (config.parse_eps)."""

    name = "EPS"

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                self.fail(f"invalid eps {value[:20]!r}... ({len(value)} characters): too long for a number",
                          param, ctx)
            try:
                eps = parse_eps(value)
            except ConfigError as error:
                self.fail(str(error), param, ctx)
        else:
            eps = value
        problem = FIELD_BOUNDS["eps"].problem(eps)
        if problem:
            self.fail(problem, param, ctx)
        return eps


class CMax(click.ParamType):
    """c_max: a number >= 0, or 'auto' (mean FOSC of FGSM examples on a batch)."""

    name = "C_MAX|auto"

    def convert(self, value, param, ctx):
        if value == "auto":
            return value
        if isinstance(value, str) and (len(value) > MAX_TEXT or not _is_float(value)):
            self.fail(f"{value[:MAX_TEXT]!r} is neither a number nor 'auto'", param, ctx)
        return Number.field("c_max").convert(value, param, ctx)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_writable_dir(path, option: str) -> None:
    """ConfigError unless directory `path` exists and can be written, or can be created: its
    nearest existing ancestor is a writable directory and no name in it is too long. The
    up-front check of an output before the work that fills it (one line naming the OS reason:
    a name too long, a file on the way, no permission, a read-only file system)."""
    shown, path = path, Path(os.path.abspath(path))
    target = path
    while True:
        try:
            is_dir = stat.S_ISDIR(os.stat(target).st_mode)
            break
        except FileNotFoundError:
            target = target.parent
        except OSError as exc:  # ENAMETOOLONG, ENOTDIR, ELOOP, EACCES
            raise ConfigError(f"cannot create {option} {shown}: {exc.strerror}") from None
    verb = "write to" if target == path else "create"
    if target != path and _too_long(target, path):  # a missing parent hides ENAMETOOLONG from stat
        raise ConfigError(f"cannot create {option} {shown}: File name too long")
    if not is_dir:
        raise ConfigError(f"cannot {verb} {option} {shown}: {target} is not a directory")
    if not os.access(target, os.W_OK | os.X_OK):
        reason = "Read-only file system" if _read_only(target) else "Permission denied"
        raise ConfigError(f"cannot {verb} {option} {shown}: {reason}")


def check_writable_file(path, option: str) -> None:
    """ConfigError unless file `path` can be written: not a directory, in a writable directory."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {option} {path}: it is a directory")
    check_writable_dir(path.parent, option)


def _too_long(existing: Path, path: Path) -> bool:
    """Whether a name below `existing` on the way to `path`, or the whole path, is longer than the
    file system takes."""
    name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    names = path.relative_to(existing).parts
    return len(os.fsencode(path)) >= path_max or any(len(os.fsencode(n)) > name_max for n in names)


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def epoch_list(ctx, param, value):
    """A click callback: '20,40' -> [20, 40]; None stays None."""
    if value is None:
        return None
    if len(value) > MAX_TEXT:
        raise click.BadParameter(f"{value[:20]!r}... ({len(value)} characters) is not a list of epochs")
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of epochs") from None
