"""Fig. 1a of Wang et al. (2019) with an interval: are the PGD-10 test points of lower FOSC the
ones the model gets wrong?

    measure(study, spec, cell)                 # writes cells/<cell>/study-fig1a-best.npz
    tables = fig1a_tables(study, spec, cells)  # {"fig1a/best": [row per measured setting]}

The paper (Sec. 3.1, Fig. 1a) attacks the test set of a Standard PGD-10 model with PGD-10 (step
eps/4), bins the adversarial points by FOSC over [0, 0.1] and reads "the lower the FOSC, the lower
the accuracy and the higher the loss". A figure's shape has no interval; its claim does. Per
seed, the number here is

    d_s = acc(high half) - acc(low half)        (points)

the PGD-10 accuracy of the test examples whose FOSC (the paper's Eq. 4, at the adversarial
point) lies above the seed's median minus that of the examples below it: positive where the
paper's reading holds. Split at the median, not in [0, 0.1], because the range of FOSC depends
on the data and eps (docs/fosc.md; `minidyn analyze --fosc-range`), and a split of each model's
own points has no range to choose. The interval of the mean over seeds is the two-way bootstrap
of a split (evaluation.bootstrap.split_bootstrap: seeds and test examples resampled, each
half's accuracy a ratio of resampled sums; each example keeps the half the seed's median put it
in, the median itself is not re-estimated), beside the t interval over the seeds' d_s. The mean
loss of each half is tabled too, without an interval.

FOSC is linear in the gradient (|<x - x_0, g>| <= eps ||g||_1, so 0 <= FOSC <= 2 eps ||g||_1):
a flat point has a small FOSC whether or not the attack converged. So each point's ||g||_1 is
recorded as well, and a second table gives each FOSC half's mean ||g||_1 and the same split by
FOSC / (eps ||g||_1), the gradient's scale taken out (files measured before ||g||_1 was recorded
have no second table).
"""
from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np

from minidyn.data import load_dataset
from minidyn.errors import ConfigError, DataError
from minidyn.evaluation.aggregate import paired_difference, summarize
from minidyn.evaluation.analysis import pgd_examples
from minidyn.evaluation.bootstrap import split_bootstrap
from minidyn.evaluation.checkpoints import load_checkpoint
from minidyn.files.fileio import atomic_write
from minidyn.files.names import BEST_NAMES, CHECKPOINT_NAMES
from minidyn.studies.results import CellResult, settings_of
from minidyn.studies.tasks import Task

COLUMN = "fosc-accuracy"
STEPS = 10  # the paper's PGD-10, step eps/4


def file_name(checkpoint: str) -> str:
    """The cell's Fig. 1a file of `checkpoint` ("best" or "last")."""
    return f"study-fig1a-{checkpoint}.npz"


def checkpoint_path(study, cell, checkpoint: str) -> Path:
    """The cell's checkpoint file of `checkpoint` ("best" or "last") for its backend."""
    names = {"last": CHECKPOINT_NAMES, "best": BEST_NAMES}[checkpoint]
    return study.cell_dir(cell) / names[cell.config().backend]


# --- measuring ---------------------------------------------------------------------------------
def parse_setting(spec, words: tuple[str, ...]) -> dict:
    """{key: grid value} of KEY=VALUE words (none: the [report] baseline's); ConfigError naming a
    key or value that is not the spec's grid's."""
    if not words:
        return dict(spec.report["baseline"])
    setting = {}
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or key not in spec.grid or key == "seed":
            raise ConfigError(f"--setting {word}: give KEY=VALUE with KEY a grid key of {spec.name} "
                              f"({', '.join(k for k in spec.grid if k != 'seed')})")
        values = [v for v in spec.grid[key] if str(v) == text]
        if not values:
            raise ConfigError(f"--setting {word}: {text!r} is not a grid value of {key} "
                              f"({', '.join(map(str, spec.grid[key]))})")
        setting[key] = values[0]
    return setting


def matching(spec, setting: dict) -> list:
    """The spec's cells with the grid values of `setting`."""
    return [c for c in spec.cells() if all(c.values.get(k) == v for k, v in setting.items())]


def pending(study, spec, cells: list, checkpoint: str) -> list:
    """Those of `cells` whose training task is done and whose checkpoint is newer than their
    Fig. 1a file (or that have none)."""
    def due(cell) -> bool:
        source, target = checkpoint_path(study, cell, checkpoint), study.cell_dir(cell) / file_name(checkpoint)
        return study.done(spec, Task(cell, "train")) and source.is_file() and (
            not target.is_file() or target.stat().st_mtime < source.stat().st_mtime)
    return [c for c in cells if due(c)]


def measure(study, spec, cell, checkpoint: str = "best", on_batch=None) -> Path:
    """PGD-10 on the [eval] test examples of the cell's `checkpoint` at its training eps (the
    [eval] batch size and seed): writes the per-example FOSC, loss and correctness beside the
    cell's results and returns the file."""
    cfg = cell.config()
    source = checkpoint_path(study, cell, checkpoint)
    if not source.is_file():
        raise DataError(f"{source}: no {checkpoint} checkpoint; train the cell first (`minidyn study run`)")
    backend, model, meta = load_checkpoint(source, cfg.device)
    data = load_dataset(cfg.dataset, "test", cfg.data_dir)
    out = pgd_examples(backend, model, data, eps=cfg.eps, limit=spec.eval.limit, steps=STEPS,
                       step_size=cfg.eps / 4, batch_size=spec.eval.batch_size, seed=spec.eval.seed,
                       on_batch=on_batch)
    arrays = {"indices": np.arange(out["fosc"].size), "fosc": out["fosc"], "loss": out["loss"],
              "correct": out["correct"], "grad_l1": out["grad_l1"], "eps": np.array(float(cfg.eps)),
              "epoch": np.array(-1 if meta.get("epoch") is None else meta["epoch"])}
    path = study.cell_dir(cell) / file_name(checkpoint)
    atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")
    return path


# --- reading -----------------------------------------------------------------------------------
def read(path: Path) -> dict | None:
    """{"fosc": float (n,), "loss": float (n,), "correct": bool (n,), "epoch": int, "eps": float,
    "grad_l1": float (n,) or None (files measured before it was recorded)} of one measured cell
    (n >= 2 test examples), None without the file; DataError if it is not one."""
    if not path.is_file():
        return None
    again = "delete it and run `minidyn study fig1a` again"
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in ("fosc", "loss", "correct", "epoch")}
            out["eps"] = float(f["eps"]) if "eps" in f.files else None
            out["grad_l1"] = f["grad_l1"] if "grad_l1" in f.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a Fig. 1a file of `minidyn study fig1a` ({error}); {again}") from None
    n = out["fosc"].shape
    if (len(n) != 1 or n[0] < 2 or out["loss"].shape != n or out["correct"].shape != n
            or out["correct"].dtype != bool or not (np.isfinite(out["fosc"]).all() and np.isfinite(out["loss"]).all())
            or (out["grad_l1"] is not None and (out["grad_l1"].shape != n or not (out["grad_l1"] >= 0).all()))):
        raise DataError(f"{path}: its arrays are not one finite FOSC, loss and bool per test example "
                        f"(at least 2); {again}")
    out["epoch"] = int(out["epoch"])
    return out


def measured_cells(study, spec, cells: list[CellResult], checkpoint: str) -> tuple[dict, list[str]]:
    """({cell name: read()} of the done cells whose file was measured on the checkpoint their
    evaluation used (the same epoch), [one line per cell left out because it was not])."""
    cell_of = {c.name: c for c in spec.cells()}
    found, stale = {}, []
    for c in cells:
        if c.state != "done" or (arrays := read(study.cell_dir(cell_of[c.name]) / file_name(checkpoint))) is None:
            continue
        evaluated = (c.white.get(checkpoint) or {}).get("epoch")
        if evaluated is not None and arrays["epoch"] != evaluated:
            stale.append(f"{c.name}: measured at epoch {arrays['epoch']}, its {checkpoint} checkpoint is epoch "
                         f"{evaluated}; `minidyn study fig1a` measures it again")
            continue
        found[c.name] = arrays
    return found, stale


# --- the table ---------------------------------------------------------------------------------
def fig1a_tables(study, spec, cells: list[CellResult]) -> dict[str, list[dict]]:
    """{"fig1a/<checkpoint>": rows} for each [eval] checkpoint at which some done cell was
    measured; a row per setting (report.table's shape, the column COLUMN) and "stale", the
    cells left out."""
    tables = {}
    for checkpoint in spec.eval.checkpoints:
        measured, stale = measured_cells(study, spec, cells, checkpoint)
        rows = [_row(setting, members, measured) for setting in settings_of(cells)
                if (members := [c for c in cells if c.setting == setting and c.name in measured])]
        if rows:
            tables[f"fig1a/{checkpoint}"] = [{**r, "stale": stale} for r in rows]
    return tables


def high_half(fosc) -> np.ndarray:
    """bool (n,): the n - n // 2 examples of largest FOSC (ties in test order)."""
    high = np.zeros(fosc.size, bool)
    high[np.argsort(fosc, kind="stable")[fosc.size // 2:]] = True
    return high


def _row(setting: str, members: list[CellResult], measured: dict) -> dict:
    """One setting's row: per seed the accuracy (%) and mean loss of each FOSC half, and the
    difference high - low with its t interval over seeds and its split bootstrap."""
    arrays = [measured[c.name] for c in members]
    sizes = sorted({a["fosc"].size for a in arrays})
    if len(sizes) != 1:
        raise DataError(f"{setting}: its Fig. 1a files hold different numbers of test examples ({sizes}); "
                        "delete them and run `minidyn study fig1a` again")
    high = np.stack([high_half(a["fosc"]) for a in arrays])
    correct = np.stack([a["correct"] for a in arrays])
    loss = np.stack([a["loss"] for a in arrays])
    per_seed = functools.partial(_per_seed, members)
    acc_high, acc_low = per_seed(correct, high, 100.0), per_seed(correct, ~high, 100.0)
    return {"setting": setting, "values": {k: v for k, v in members[0].values.items() if k != "seed"},
            "seeds": [c.seed for c in members], "examples": sizes[0],
            "columns": {COLUMN: vars(summarize(acc_high[s] - acc_low[s] for s in acc_high))},
            "halves": {"high": vars(summarize(acc_high.values())), "low": vars(summarize(acc_low.values())),
                       "loss_high": vars(summarize(per_seed(loss, high).values())),
                       "loss_low": vars(summarize(per_seed(loss, ~high).values()))},
            "difference": {COLUMN: vars(paired_difference(acc_high, acc_low))},
            "difference_bootstrap": {COLUMN: vars(split_bootstrap(correct, high))},
            "mcnemar": {COLUMN: None}, "scaled": _scaled(members, arrays, correct, high)}


def _per_seed(members: list[CellResult], values: np.ndarray, inside: np.ndarray, scale: float = 1.0) -> dict:
    """{seed: scale x the mean of values[s] where inside[s]} for (S, n) values and bool inside."""
    return {c.seed: scale * float(v[m].mean()) for c, v, m in zip(members, values, inside)}


def _scaled(members: list[CellResult], arrays: list[dict], correct: np.ndarray, high: np.ndarray) -> dict | None:
    """The same split by FOSC / (eps ||g||_1), FOSC with the gradient's scale taken out (in [0, 2]:
    0 at the maximising vertex, 1 for a step orthogonal to g), and the mean ||g||_1 of each FOSC
    half (`high`: bool (S, n)); None where a file has no gradient norms or one is 0."""
    if any(a["grad_l1"] is None or a["eps"] is None or not (a["grad_l1"] > 0).all() for a in arrays):
        return None
    by_ratio = np.stack([high_half(a["fosc"] / (a["eps"] * a["grad_l1"])) for a in arrays])
    acc = {"high": _per_seed(members, correct, by_ratio, 100.0), "low": _per_seed(members, correct, ~by_ratio, 100.0)}
    norms = {half: summarize(float(a["grad_l1"][m].mean()) for a, m in zip(arrays, inside))
             for half, inside in (("high", high), ("low", ~high))}
    return {"difference": vars(paired_difference(acc["high"], acc["low"])),
            "bootstrap": vars(split_bootstrap(correct, by_ratio)),
            "grad_l1_high": vars(norms["high"]), "grad_l1_low": vars(norms["low"])}


def markdown(rows: list[dict], checkpoint: str, tally=None) -> list[str]:
    """The report's section for one checkpoint's Fig. 1a table; `tally` (report.Tally) counts its intervals."""
    lines = [f"## Fig. 1a: PGD-10 accuracy of the test examples above and below the median FOSC ({checkpoint} checkpoint)",
             "", "Each seed's PGD-10 (step eps/4) test points split at that seed's median FOSC (the paper's Eq. 4 "
             "at the adversarial point); accuracy (%) and mean loss of each half, mean ± sample std over seeds. "
             "high - low: t [95% t interval over seeds], boot [95% two-way bootstrap, seeds and test examples, "
             "each half's accuracy a ratio of resampled sums]. The paper reads: the lower the FOSC, the lower the "
             "accuracy (high - low > 0) and the higher the loss. Exploratory unless a claim names it.", "",
             "| setting | accuracy, high half | accuracy, low half | high - low | loss, high half | loss, low half "
             "| seeds x test examples |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        d, b, h = r["difference"][COLUMN], r["difference_bootstrap"][COLUMN], r["halves"]
        t = "" if d["low"] is None else f"; t [{d['low']:+.2f}, {d['high']:+.2f}]"
        if tally is not None:
            tally.t, tally.bootstrap = tally.t + bool(t), tally.bootstrap + 1
        lines.append(f"| {r['setting']} | {_mean(h['high'])} | {_mean(h['low'])} | {d['mean']:+.2f}{t}; boot "
                     f"[{b['low']:+.2f}, {b['high']:+.2f}] | {_mean(h['loss_high'], 3)} | {_mean(h['loss_low'], 3)} "
                     f"| {len(r['seeds'])} x {r['examples']:,} |")
    stale = rows[0]["stale"] if rows else []
    return (lines + [""] + _scaled_markdown(rows, tally)
            + ([f"Left out: {line}." for line in stale] + [""] if stale else []))


def _scaled_markdown(rows: list[dict], tally=None) -> list[str]:
    """The gradient's share in the split: ||g||_1 of each FOSC half, and the split by FOSC / (eps ||g||_1)."""
    scaled = [r for r in rows if r.get("scaled")]
    if not scaled:
        return []
    lines = ["FOSC is linear in the gradient: eps ||g||_1 bounds it, and a point with a vanishing gradient has a "
             "FOSC near 0 however well the attack converged (docs/fosc.md). Mean ||g||_1 (the L1 norm of the "
             "loss's input gradient at the PGD-10 point) of each FOSC half, and the same split by "
             "FOSC / (eps ||g||_1), which takes the gradient's scale out (in [0, 2]; 0 at the maximising vertex):",
             "", "| setting | ‖g‖₁, high-FOSC half | ‖g‖₁, low-FOSC half | high - low, split by FOSC / (eps ‖g‖₁) |",
             "|---|---|---|---|"]
    for r in scaled:
        d, b = r["scaled"]["difference"], r["scaled"]["bootstrap"]
        t = "" if d["low"] is None else f"; t [{d['low']:+.2f}, {d['high']:+.2f}]"
        if tally is not None:
            tally.t, tally.bootstrap = tally.t + bool(t), tally.bootstrap + 1
        lines.append(f"| {r['setting']} | {_mean(r['scaled']['grad_l1_high'], 3)} | {_mean(r['scaled']['grad_l1_low'], 3)} "
                     f"| {d['mean']:+.2f}{t}; boot [{b['low']:+.2f}, {b['high']:+.2f}] |")
    return lines + [""]


def _mean(summary: dict, digits: int = 2) -> str:
    std = "" if summary["std"] is None else f" ± {summary['std']:.{digits}f}"
    return f"{summary['mean']:.{digits}f}{std}"
