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
own points has no range to choose. As a mean over the same test examples, d_s is
(1/n) sum_j v_sj with v_sj = correct_sj * n * (+1/n_high | -1/n_low): the two-way bootstrap
(seeds and test examples, evaluation.bootstrap) resamples that mean with each seed's halves held
fixed, beside the t interval over the seeds' d_s. The mean loss of each half is tabled too,
without an interval.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minidyn.data import load_dataset
from minidyn.errors import ConfigError, DataError
from minidyn.evaluation.aggregate import paired_difference, summarize
from minidyn.evaluation.analysis import pgd_examples
from minidyn.evaluation.bootstrap import two_way_bootstrap
from minidyn.evaluation.checkpoints import load_checkpoint
from minidyn.files.fileio import atomic_write
from minidyn.files.names import BEST_NAMES, CHECKPOINT_NAMES
from minidyn.studies.results import CellResult, settings_of

COLUMN = "fosc-accuracy"
STEPS = 10  # the paper's PGD-10, step eps/4


def file_name(checkpoint: str) -> str:
    return f"study-fig1a-{checkpoint}.npz"


def checkpoint_path(study, cell, checkpoint: str) -> Path:
    names = {"last": CHECKPOINT_NAMES, "best": BEST_NAMES}[checkpoint]
    return study.cell_dir(cell) / names[cell.config().backend]


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


def pending(study, cells: list, checkpoint: str) -> list:
    """Those of `cells` whose checkpoint exists and is newer than their Fig. 1a file."""
    def stale(cell) -> bool:
        source = checkpoint_path(study, cell, checkpoint)
        target = study.cell_dir(cell) / file_name(checkpoint)
        return source.is_file() and (not target.is_file() or target.stat().st_mtime < source.stat().st_mtime)
    return [c for c in cells if stale(c)]


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
              "correct": out["correct"], "eps": np.array(float(cfg.eps)),
              "epoch": np.array(meta.get("epoch") or -1)}
    path = study.cell_dir(cell) / file_name(checkpoint)
    atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")
    return path


def read(path: Path) -> dict | None:
    """The arrays of one measured cell (None without the file); DataError if it is not ours."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in ("fosc", "loss", "correct")}
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path} is not a Fig. 1a file of `minidyn study fig1a` ({error}); delete it and measure again") from None
    n = out["fosc"].shape
    if len(n) != 1 or out["loss"].shape != n or out["correct"].shape != n or not np.isfinite(out["fosc"]).all():
        raise DataError(f"{path}: its arrays are not one finite value per test example; delete it and measure again")
    return out


def high_half(fosc) -> np.ndarray:
    """bool (n,): the n - n // 2 examples of largest FOSC (ties in test order)."""
    high = np.zeros(fosc.size, bool)
    high[np.argsort(fosc, kind="stable")[fosc.size // 2:]] = True
    return high


def split_values(fosc, correct) -> tuple[np.ndarray, float, float]:
    """(v (n,), acc_high, acc_low) of one seed: v's mean is acc_high - acc_low, in fractions."""
    n, high = fosc.size, high_half(fosc)
    c = np.asarray(correct, float)
    v = np.where(high, c * n / high.sum(), -c * n / (~high).sum())
    return v, c[high].mean(), c[~high].mean()


def fig1a_tables(study, spec, cells: list[CellResult]) -> dict[str, list[dict]]:
    """{"fig1a/<checkpoint>": rows}, for each [eval] checkpoint some done cell was measured at."""
    cell_of = {c.name: c for c in spec.cells()}
    tables = {}
    for checkpoint in spec.eval.checkpoints:
        measured = {c.name: a for c in cells if c.state == "done"
                    and (a := read(study.cell_dir(cell_of[c.name]) / file_name(checkpoint))) is not None}
        rows = [row for setting in settings_of(cells)
                if (row := _row(setting, [c for c in cells if c.setting == setting and c.name in measured], measured))]
        if rows:
            tables[f"fig1a/{checkpoint}"] = rows
    return tables


def _row(setting: str, members: list[CellResult], measured: dict) -> dict | None:
    if not members:
        return None
    sizes = {measured[c.name]["fosc"].size for c in members}
    if len(sizes) != 1:
        raise DataError(f"{setting}: its Fig. 1a files hold different test examples ({sorted(sizes)}); measure them again")
    split = {c.seed: split_values(measured[c.name]["fosc"], measured[c.name]["correct"]) for c in members}
    high = {c.name: high_half(measured[c.name]["fosc"]) for c in members}
    loss = {half: summarize(float(measured[c.name]["loss"][high[c.name] == (half == "high")].mean()) for c in members)
            for half in ("high", "low")}
    d = paired_difference({s: 100 * h for s, (_, h, _) in split.items()}, {s: 100 * lo for s, (_, _, lo) in split.items()})
    return {"setting": setting, "values": {k: v for k, v in members[0].values.items() if k != "seed"},
            "seeds": [c.seed for c in members], "examples": sizes.pop(), "baseline": "the low-FOSC half",
            "columns": {COLUMN: vars(summarize(100 * (h - lo) for _, h, lo in split.values()))},
            "halves": {"high": vars(summarize(100 * h for _, h, _ in split.values())),
                       "low": vars(summarize(100 * lo for _, _, lo in split.values())),
                       "loss_high": vars(loss["high"]), "loss_low": vars(loss["low"])},
            "difference": {COLUMN: vars(d)},
            "difference_bootstrap": {COLUMN: vars(two_way_bootstrap(np.stack([v for v, _, _ in split.values()])))},
            "mcnemar": {COLUMN: None}}


def markdown(rows: list[dict], checkpoint: str, tally=None) -> list[str]:
    """The report's section for one checkpoint's Fig. 1a table; `tally` (report.Tally) counts its intervals."""
    lines = [f"## Fig. 1a: PGD-10 accuracy of the test examples above and below the median FOSC ({checkpoint} checkpoint)",
             "", "Each seed's PGD-10 (step eps/4) test points split at that seed's median FOSC (the paper's Eq. 4 "
             "at the adversarial point); accuracy (%) and mean loss of each half, mean ± sample std over seeds. "
             "high - low: t [95% t interval over seeds], boot [95% two-way bootstrap, seeds and test examples, "
             "each seed's halves held fixed]. The paper reads: the lower the FOSC, the lower the accuracy "
             "(high - low > 0) and the higher the loss. Exploratory unless a claim names it.", "",
             "| setting | accuracy, high half | accuracy, low half | high - low | loss, high half | loss, low half "
             "| seeds x test examples |", "|---|---|---|---|---|---|---|"]

    def mean(s, digits=2):
        return f"{s['mean']:.{digits}f}" + ("" if s["std"] is None else f" ± {s['std']:.{digits}f}")

    for r in rows:
        d, b, h = r["difference"][COLUMN], r["difference_bootstrap"][COLUMN], r["halves"]
        t = "" if d["low"] is None else f"; t [{d['low']:+.2f}, {d['high']:+.2f}]"
        if tally is not None:
            tally.t, tally.bootstrap = tally.t + bool(t), tally.bootstrap + 1
        lines.append(f"| {r['setting']} | {mean(h['high'])} | {mean(h['low'])} | {d['mean']:+.2f}{t}; boot "
                     f"[{b['low']:+.2f}, {b['high']:+.2f}] | {mean(h['loss_high'], 3)} | {mean(h['loss_low'], 3)} "
                     f"| {len(r['seeds'])} x {r['examples']:,} |")
    return lines + [""]
