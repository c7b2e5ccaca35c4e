"""Which options differ between a run's saved config.json and the configuration asked for now:
the one rule that both resuming a run (minidyn.runs.loop) and a study's check of its already
trained cells (minidyn.studies.tasks) apply."""
from __future__ import annotations

import dataclasses

from minidyn.files.config import TrainConfig

# Options that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = {"data_dir", "device"}


def config_differences(saved: dict, current: dict) -> list[str]:
    """Names of the options whose values differ between a saved config and the current one.

    An option the saved config lacks (a run written before the option existed) counts as its
    TrainConfig default, so an old run directory resumes as long as the option is left alone."""
    keys = (set(saved) | set(current)) - RESUMABLE_CHANGES - {"c_max_used", "version"}
    # a run saved before an option existed ran with that option's default
    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)
               if f.default is not dataclasses.MISSING}
    return sorted(k for k in keys if saved.get(k, default.get(k)) != current.get(k, default.get(k)))
