"""Errors that minidyn reports to a user as one line (the CLI prints them and exits non-zero).

Anything raised as a `MinidynError` is a problem with the user's input, data or environment,
not a bug: its message names the problem in one sentence.
"""


class MinidynError(Exception):
    """Base class: a problem the user can fix. The CLI prints `Error: <message>` and exits 1."""

    exit_code = 1


class ConfigError(MinidynError):
    """An option or combination of options that cannot work (eps <= 0, unknown model, ...)."""


class DataError(MinidynError):
    """A dataset that is missing, truncated, corrupted or not in its official format."""


class CheckpointError(MinidynError):
    """A checkpoint that cannot be loaded safely or does not match what was asked for."""


class BackendUnavailable(MinidynError):
    """A backend or device that is not installed or not present (torch, cupy, CUDA)."""


class NumericalError(MinidynError):
    """A NaN or infinite loss: training stops, the last good checkpoint stays."""

    exit_code = 3
