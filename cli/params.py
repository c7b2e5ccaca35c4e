"""Parameter types shared by the minidyn commands: budgets, c_max and lists of epochs."""
from __future__ import annotations

import click

from minidyn.config import parse_eps
from minidyn.errors import ConfigError


class Eps(click.ParamType):
    """A perturbation budget in (0, 1]: '0.3' or a fraction such as '8/255'."""

    name = "EPS"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            eps = parse_eps(value)
        except ConfigError as error:
            self.fail(str(error), param, ctx)
        if not 0 < eps <= 1:
            self.fail(f"eps must be in (0, 1], got {value}", param, ctx)
        return eps


class CMax(click.ParamType):
    """c_max: a number >= 0, or 'auto' (mean FOSC of FGSM examples on a batch)."""

    name = "C_MAX|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, float):
            return value
        try:
            c = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        if c < 0:
            self.fail(f"c_max must be >= 0, got {value}", param, ctx)
        return c


def epoch_list(ctx, param, value):
    """A click callback: '20,40' -> [20, 40]; None stays None."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of epochs") from None
