"""Runs over seeds: which runs belong together, mean ± std per column, and paired differences.

Shared by `minidyn compare` and the study report, so both aggregate the same way (NumPy only):

    from minidyn.evaluation.aggregate import group_runs, summarize_groups, paired_difference
    groups = group_runs(configs)     # runs whose config.json differs only in seed -> one Group
    table = summarize_groups(groups, rows, ["clean", "pgd20"])  # rows[i]: {column: value}
    table[0]["columns"]["pgd20"]     # {"mean": 81.2, "std": 0.35, "n": 3}
    paired_difference({0: 81.5, 1: 80.9}, {0: 80.1, 1: 80.4})  # by seed, 95% t interval

Conventions: std is the sample standard deviation (ddof=1), None for fewer than two values; a
missing value (None or NaN) is left out of its column, so each column has its own n.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from minidyn.errors import DataError
from minidyn.files.npyfile import fosc_header
from minidyn.files.readers import read_config, read_metrics

# config.json keys that do not make two runs different experiments: the seed is the replicate
# itself; data_dir, device and version say where and with what the run happened, not what it
# is; c_max_used is derived (equal to c_max, or with c_max "auto" estimated on the seed's own
# first batch); eval_limit, eval_steps and final_eval_limit set the test evaluations after each
# epoch and at the end, which use their own generator and the model in eval mode, so the trained
# weights do not depend on them. The output directory is not in config.json at all.
IGNORED_KEYS = frozenset({"seed", "data_dir", "device", "version", "c_max_used",
                          "eval_limit", "eval_steps", "final_eval_limit"})


@dataclass
class Group:
    """Runs that differ only in IGNORED_KEYS. members: indices into group_runs' input."""

    label: str
    members: list[int]
    seeds: list                                   # config "seed" of each member (None: unknown)
    settings: dict = field(default_factory=dict)  # the shared config, IGNORED_KEYS left out


def experiment(config: Mapping) -> dict:
    """The part of a run's config that defines its experiment (IGNORED_KEYS left out)."""
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(key: str, value) -> str:
    """'eps 0.1', 'lr_milestones 20,40', or the bare value for the method."""
    if isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return str(value) if key == "method" else f"{key} {value}"


def group_runs(configs: Sequence[Mapping | None], names: Sequence[str] | None = None) -> list[Group]:
    """Group runs whose configs agree on every key but IGNORED_KEYS, in order of first appearance.

    A None config (a checkpoint outside a run directory) is a group of its own, labelled by
    its name. A group's label is its method followed by the keys whose values vary between the
    groups, e.g. "dynamic" vs "standard", or "dynamic, eps 0.1" vs "dynamic, eps 0.3".
    """
    groups: dict[str, Group] = {}
    for i, cfg in enumerate(configs):
        key = _json(experiment(cfg)) if cfg is not None else f"\0run {i}"
        g = groups.setdefault(key, Group("", [], [], experiment(cfg) if cfg is not None else {}))
        g.members.append(i)
        g.seeds.append(cfg.get("seed") if cfg is not None else None)
    known = [g.settings for k, g in groups.items() if not k.startswith("\0")]
    keys = dict.fromkeys(k for s in known for k in s if k != "method")  # in config order
    varying = [k for k in keys if len({_json(s.get(k)) for s in known}) > 1]
    for key, g in groups.items():
        if key.startswith("\0"):
            g.label = names[g.members[0]] if names else f"run {g.members[0] + 1}"
            continue
        parts = [str(g.settings.get("method") or "?")] + [_show(k, g.settings.get(k)) for k in varying]
        g.label = ", ".join(parts)
    return list(groups.values())


@dataclass(frozen=True)
class Summary:
    """One column of one group: mean, sample std and how many values there were."""

    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); None for n < 2
    n: int


def _finite(values) -> np.ndarray:
    x = np.array([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def summarize(values) -> Summary:
    """Mean, sample standard deviation (ddof=1) and count of the values that are not None/NaN."""
    x = _finite(values)
    if x.size == 0:
        return Summary(None, None, 0)
    std = float(np.std(x, ddof=1)) if x.size > 1 else None
    return Summary(float(np.mean(x)), std, int(x.size))


def summarize_groups(groups: Sequence[Group], rows: Sequence[Mapping], columns: Sequence[str]) -> list[dict]:
    """Per group: {"label", "members", "seeds", "settings", "columns": {column: {"mean", "std",
    "n"}}}, where rows[i] holds the values {column: value or None} of run i."""
    out = []
    for g in groups:
        cols = {c: vars(summarize(rows[i].get(c) for i in g.members)) for c in columns}
        out.append({"label": g.label, "members": list(g.members), "seeds": list(g.seeds),
                    "settings": dict(g.settings), "columns": cols})
    return out


def flat_row(summary: Mapping, columns: Sequence[str]) -> dict:
    """One CSV row of a summarize_groups entry: label, seeds, runs, then COLUMN_mean, _std, _n."""
    row = {"group": summary["label"], "seeds": " ".join(str(s) for s in summary["seeds"]),
           "runs": len(summary["members"])}
    for c in columns:
        s = summary["columns"][c]
        row.update({f"{c}_mean": s["mean"], f"{c}_std": s["std"], f"{c}_n": s["n"]})
    return row


def format_summary(s: Summary | Mapping, runs: int = 1, digits: int = 2) -> str:
    """'81.23 ± 0.35 (n=3)'; a lone value as '81.20' ('81.20 (n=1)' in a group of more runs);
    '-' when there is none."""
    mean, std, n = (s.mean, s.std, s.n) if isinstance(s, Summary) else (s["mean"], s["std"], s["n"])
    if not n:
        return "-"
    if n == 1:
        return f"{mean:.{digits}f}" + (" (n=1)" if runs > 1 else "")
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


# --- paired differences ------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """mean of values - baseline over the shared seeds, its sample std, and the t interval."""

    mean: float | None
    std: float | None
    low: float | None   # None for n < 2
    high: float | None
    n: int
    seeds: tuple = ()
    level: float = 0.95


def paired_difference(values: Mapping, baseline: Mapping, level: float = 0.95) -> Difference:
    """values[s] - baseline[s] over the seeds s that both have a finite value for ({seed: value}
    each): mean d, sample std s_d and the Student t interval d ± t_{(1+level)/2, n-1} s_d / sqrt(n).
    Pairing by seed removes what the seed shares between methods (data order, initial weights)."""
    seeds = tuple(s for s in values if s in baseline and values[s] is not None
                  and baseline[s] is not None and math.isfinite(values[s]) and math.isfinite(baseline[s]))
    d = np.array([values[s] - baseline[s] for s in seeds], dtype=float)
    if d.size == 0:
        return Difference(None, None, None, None, 0, (), level)
    mean = float(d.mean())
    if d.size == 1:
        return Difference(mean, None, None, None, 1, seeds, level)
    std = float(d.std(ddof=1))
    half = t_quantile((1 + level) / 2, d.size - 1) * std / math.sqrt(d.size)
    return Difference(mean, std, mean - half, mean + half, int(d.size), seeds, level)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom: 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with df degrees of freedom (t_{0.975, 2} = 4.303),
    by bisection on t_cdf (no scipy)."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


# --- what a run spent --------------------------------------------------------------------------
def grad_evals_per_example(run_dir: str | Path) -> float | None:
    """Training cost of a run: the metrics.jsonl `grad_evals` summed over its epochs, divided by
    its number of training examples. grad_evals counts the per-example input-gradient
    evaluations of the training attacks (PGD steps, plus the final FOSC one unless
    --no-record-fosc); the SGD step's weight gradient is not counted. The number of examples is
    the length of fosc/epoch_000.npy (one value per training example), else config.json's limit.
    None when the run records neither, or has no metrics (or an epoch without grad_evals); a
    metrics.jsonl or config.json that minidyn.files.readers refuses is a ConfigError."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if any("grad_evals" not in record for record in records):
        return None
    total = sum(record["grad_evals"] for record in records)
    n = None
    fosc = sorted((run_dir / "fosc").glob("epoch_*.npy")) if (run_dir / "fosc").is_dir() else []
    if fosc:
        try:
            n = fosc_header(fosc[0]).shape[0]
        except DataError:
            n = None
    if n is None and (run_dir / "config.json").exists():
        n = read_config(run_dir / "config.json").get("limit")
    return total / n if isinstance(n, int) and n > 0 and records else None
