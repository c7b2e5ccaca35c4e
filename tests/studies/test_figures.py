"""The study report's figures, read from their matplotlib objects: what is drawn, and what each
band, bar and legend says it is (looking at the PNGs is still needed: docs/studies.md)."""
import json
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from minidyn.studies import figures  # noqa: E402
from minidyn.studies.report import collect  # noqa: E402
from minidyn.studies.spec import load_spec  # noqa: E402
from minidyn.studies.tasks import StudyDir, Task, write_result  # noqa: E402

FOSC = np.arange(1000) / 100          # 0.00 .. 9.99: 11 values in [0, 0.1]; the pooled q99 is 9.8901
C_T = {0: 0.5, 1: 0.25}               # Dynamic's c_t by epoch (counted from 0, as metrics.jsonl)
DELTA = {0: 1.0, 1: 3.0, 2: 2.0}      # eps/8 - eps/4 by seed: mean 2, sample std 1


def pgd(values: dict) -> float:
    """A cell's PGD-10 accuracy: 80 by seed, +10 for fosc_reference start (pooling the two
    references would give their mean), + DELTA[seed] at step eps/8."""
    seed = values["seed"]
    return 80.0 + seed + 10.0 * (values["fosc_reference"] == "start") + DELTA[seed] * (values["step_size"] == "eps/8")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory, tiny_text):
    """plot_all on a 'done' study of method x step_size x fosc_reference x 3 seeds with chosen
    accuracies, FOSC files and c_t; {file name: (Figure, caption)}, never saved."""
    tmp = tmp_path_factory.mktemp("figures")
    text = tiny_text.replace("seed = [0, 1]", 'step_size = ["eps/4", "eps/8"]\nfosc_reference = ["natural", "start"]\n'
                             "seed = [0, 1, 2]").replace("limit = 40", "limit = 40\neps = [0.1, 0.2]")
    (tmp / "s.toml").write_text(text + '\n[report]\nbaseline = {step_size = "eps/4"}\nfosc_epochs = [1, 2]\n')
    spec = load_spec(tmp / "s.toml")
    study = StudyDir(tmp / "study")
    study.prepare(spec)
    for cell in spec.cells():
        _done_cell(study, spec, cell)
    saved = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(figures, "save", lambda fig, path: saved.setdefault(path.name, fig) and path.name)
    (study.path / "report").mkdir()
    captions = dict(figures.plot_all(spec, collect(study, spec), study.path / "report"))
    mp.undo()
    return {name: (fig, captions[name]) for name, fig in saved.items()}


def _done_cell(study, spec, cell) -> None:
    directory = study.cell_dir(cell)
    (directory / "fosc").mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(cell.config().to_dict()))
    dynamic = cell.values["method"] == "dynamic"
    (directory / "metrics.jsonl").write_text("".join(json.dumps(
        {"epoch": t, "method": cell.values["method"], "c_t": C_T[t] if dynamic else None, "grad_evals": 300,
         "seconds": 30.0, "val_clean_acc": 50.0 + t, "val_clean_n": 60, "val_pgd_acc": 10.0 + t,
         "val_pgd_n": 30}) + "\n" for t in range(2)))
    for t in range(2):
        np.save(directory / "fosc" / f"epoch_{t:03d}.npy", FOSC.astype(np.float32))
    by_eps = {eps: {"accuracy": {"clean": 90.0, "fgsm": 85.0, "pgd10": pgd(cell.values) - shift,
                                 "worst-case": pgd(cell.values) - shift}, "n": 40}
              for eps, shift in (("0.1", 0.0), ("0.2", 20.0))}
    result = {"epoch": 2, "seconds": 1.0, "eps": by_eps}
    write_result(study.result(Task(cell, "train")),
                 {"settings": spec.eval.settings(), "results": {"last": result, "best": result}})


def _texts(fig) -> str:
    """Every text of a figure: suptitle, titles, axis labels, legend entries and titles."""
    parts = [fig._suptitle.get_text() if fig._suptitle else ""]
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    for legend in legends:
        parts += [legend.get_title().get_text()] + [t.get_text() for t in legend.get_texts()]
    return "\n".join(parts)


def _vertical_lines(ax) -> set:
    """x of every axvline on ax (a Line2D whose x data is [x, x] in data units, y in axes units)."""
    return {float(line.get_xdata()[0]) for line in ax.get_lines()
            if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]
            and list(line.get_ydata()) == [0, 1]}


def test_every_figure_is_written_and_a_sweep_figure_per_switch(drawn):
    assert set(drawn) == {"val_curves.png", "fosc_epochs.png", "sweep_step_size.png",
                          "sweep_fosc_reference.png", "eps_curve.png"}


def test_the_fosc_legend_gives_the_paper_share_and_counts_the_tail_not_drawn(drawn):
    fig, caption = drawn["fosc_epochs.png"]
    text = _texts(fig)
    # 11 of 1,000 values per seed in [0, 0.1]; above the pooled q99 9.8901: 9.90 .. 9.99, 10 per seed
    assert text.count("(n=3): 1.1% in [0, 0.1]") == 8 * 2          # 8 settings x 2 epochs
    assert text.count("not drawn: 1.0% (30) above 9.89") == 8 * 2
    assert any(ax.get_xlim() == (0.0, 0.1) for ax in fig.axes)     # the zoom on the paper's range
    assert "[0, 0.1]" in caption and "not drawn" in caption


def test_fosc_legend_counts_values_outside_the_drawn_range():
    values = np.array([-0.5, -0.2, 0.0, 0.05, 0.1, 0.2, 3.0, 7.0])
    text = figures.fosc_legend("dynamic", 1, values, lo=-0.3, hi=2.0, c_ts=[0.3, 0.35])
    assert "37.5% in [0, 0.1]" in text                               # 0, 0.05, 0.1
    assert "not drawn: 25.0% (2) above 2" in text and "12.5% (1) below -0.3" in text
    assert "c_t 0.3-0.35 by seed" in text


def test_c_t_is_marked_for_dynamic_only_at_each_epoch(drawn):
    fig, _ = drawn["fosc_epochs.png"]
    panels = [ax for ax in fig.axes if ax.get_title().startswith("epoch")]
    for epoch, c_t in ((1, C_T[0]), (2, C_T[1])):
        whole = [ax for ax in panels if ax.get_title().startswith(f"epoch {epoch}: up to")]
        assert len(whole) == 1 and _vertical_lines(whole[0]) == {c_t}
    assert "c_t 0.5" in _texts(fig) and "c_t 0.25" in _texts(fig)


def _top_and_bottom(fig, which="last epoch"):
    top = next(ax for ax in fig.axes if ax.get_title() == which)
    bottom = next(ax for ax in fig.axes if ax.get_ylabel().startswith("difference to the baseline")
                  and ax.get_position().x0 == pytest.approx(top.get_position().x0))
    return top, bottom


def test_a_sweep_never_pools_the_other_switch(drawn):
    fig, _ = drawn["sweep_fosc_reference.png"]
    top = next(ax for ax in fig.axes if ax.get_title() == "last epoch")
    lines = {c.get_label(): c for c in top.containers}
    assert len(lines) == 4, list(lines)                              # method x step_size, not per method
    natural_start = lines["dynamic, step_size eps/4 (n=3)"].lines[0].get_ydata()
    assert list(natural_start) == pytest.approx([81.0, 91.0])        # means over seeds 80+s (+10 for start)


def test_a_sweep_draws_the_paired_t_interval_to_the_baseline(drawn):
    fig, caption = drawn["sweep_step_size.png"]
    _, bottom = _top_and_bottom(fig)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)                    # t_{0.975, 2} * s_d / sqrt(n)
    bars = [c for c in bottom.containers if len(c.lines[0].get_ydata())]
    assert len(bars) == 4                                            # every line's eps/8 against its eps/4
    for container in bars:
        assert list(container.lines[0].get_ydata()) == pytest.approx([2.0])
        (low, high), = [sorted(seg[:, 1]) for seg in container.lines[2][0].get_segments()]
        assert (low, high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert any(line.get_ydata()[0] == 0 for line in bottom.get_lines())   # the baseline's zero line
    assert "paired 95% Student t interval over seeds" in caption and "step_size eps/4" in caption


def test_the_paper_is_cited_only_for_the_key_its_figure_sweeps(drawn):
    step_title = drawn["sweep_step_size.png"][0]._suptitle.get_text()
    assert "Fig. 2a" in step_title and "2b" not in step_title and "4b" not in step_title
    assert "Fig." not in drawn["sweep_fosc_reference.png"][0]._suptitle.get_text()


@pytest.mark.parametrize("name, words", [
    ("val_curves.png", ["band: ±1 sample std over seeds"]),
    ("eps_curve.png", ["bars: ±1 sample std over seeds"]),
    ("sweep_step_size.png", ["bars ±1 sample std over seeds", "bars: paired 95% Student t interval over seeds"]),
])
def test_every_band_and_bar_says_what_it_is(drawn, name, words):
    fig, caption = drawn[name]
    text = _texts(fig).replace("\n", " ")
    for w in words:
        assert w in text, (name, w)
        assert w.partition(" ")[2].lstrip(": ") in caption, (name, w)    # the caption in report.md


def test_a_report_sweep_that_is_not_a_grid_key_is_refused_when_the_spec_is_read(tmp_path, tiny_text):
    from minidyn.errors import ConfigError

    (tmp_path / "s.toml").write_text(tiny_text + '\n[report]\nsweep = "step_sise"\n')
    words = r"\[report\] sweep 'step_sise' is not a grid key \(the grid's keys: method, seed\)$"
    with pytest.raises(ConfigError, match=words):
        load_spec(tmp_path / "s.toml")


def test_the_frontier_puts_each_cell_at_its_cost_and_its_robust_accuracy(tmp_path, tiny_text):
    """frontier.png: a dot per cell at (gradient evaluations per example, accuracy under the
    strongest [eval] attack, here APGD-CE over PGD-10), a diamond per setting at the means; a
    method of Dynamic's family (FAT) is a setting like any other."""
    text = tiny_text.replace('"dynamic"]', '"fat"]').replace("seed = [0, 1]", "seed = [0, 1, 2]").replace(
        'attacks = ["clean", "fgsm", "pgd10"]', 'attacks = ["clean", "pgd10", "apgd-ce"]')
    (tmp_path / "s.toml").write_text(text)
    spec = load_spec(tmp_path / "s.toml")
    study = StudyDir(tmp_path / "study")
    study.prepare(spec)
    cost = {"standard": 3000, "fat": 1500}            # grad_evals per epoch: 20 and 10 per example
    for cell in spec.cells():
        directory = study.cell_dir(cell)
        (directory / "fosc").mkdir(parents=True)
        (directory / "config.json").write_text(json.dumps(cell.config().to_dict()))
        (directory / "metrics.jsonl").write_text("".join(json.dumps(
            {"epoch": t, "method": cell.values["method"], "c_t": None, "grad_evals": cost[cell.values["method"]],
             "seconds": 1.0}) + "\n" for t in range(2)))
        np.save(directory / "fosc" / "epoch_000.npy", np.zeros(150, np.float32))
        robust = 40.0 + cell.values["seed"] + 5.0 * (cell.values["method"] == "standard")
        result = {"epoch": 2, "seconds": 1.0, "eps": {"0.1": {"accuracy": {"clean": 90.0, "pgd10": robust + 3,
                                                                            "apgd-ce": robust}, "n": 40}}}
        write_result(study.result(Task(cell, "train")),
                     {"settings": spec.eval.settings(), "results": {"last": result, "best": result}})
    name, fig, caption = figures.frontier_figure(spec, collect(study, spec))
    assert name == "frontier.png" and "APGD-CE" in caption
    ax = fig.axes[0]
    dots = sorted(tuple(map(float, p)) for c in ax.collections if type(c).__name__ == "PathCollection"
                  for p in c.get_offsets())
    assert dots == [(20.0, 40.0), (20.0, 41.0), (20.0, 42.0), (40.0, 45.0), (40.0, 46.0), (40.0, 47.0)]
    means = sorted((float(l.get_xdata()[0]), float(l.get_ydata()[0])) for l in ax.get_lines()
                   if l.get_marker() == "D")
    assert means == [(20.0, 41.0), (40.0, 46.0)]
    assert "dot: one seed" in _texts(fig) and "standard (n=3)" in _texts(fig) and "fat (n=3)" in _texts(fig)
    assert "TRADES" not in _texts(fig)          # the note on TRADES' and MART's SGD cost: only where they ran
    cells = collect(study, spec)
    for c in cells:
        c.metrics[0]["method"] = {"fat": "trades"}.get(c.metrics[0]["method"], c.metrics[0]["method"])
    assert "TRADES' and MART's SGD step costs one pass" in figures.frontier_figure(spec, cells)[1]._suptitle.get_text()


def _cell(name, **values):
    from types import SimpleNamespace
    return SimpleNamespace(name=name, values=values)


def test_a_sweep_leaves_out_a_combination_met_at_one_value_of_its_key():
    """A line is a combination of the other grid values seen at two or more values of the swept
    key: FGSM-RS, whose one `steps` value is a grid label its attack ignores, draws no point."""
    cells = [_cell(f"{m}-{k}-{s}", method=m, steps=k, seed=s)
             for m, ks in (("standard", (10, 5)), ("fgsm-rs", (10,))) for k in ks for s in (0, 1)]
    lines, varying = figures.sweep_lines(cells, "steps")
    assert list(lines) == ["standard"] and varying == ["method"]    # only standard's line is left
    assert {c.values["steps"] for c in lines["standard"]} == {10, 5} and len(lines["standard"]) == 4


def test_no_sweep_figure_where_no_combination_meets_two_values():
    cells = [_cell(f"{m}-{s}", method=m, steps=k, seed=s) for m, k in (("standard", 10), ("fgsm-rs", 5))
             for s in (0, 1)]
    assert figures.sweep_lines(cells, "steps") == ({}, ["method"])
    assert figures.sweep_figure(None, cells, "steps") is None       # returns before it reads the spec


def test_the_frontier_sets_settings_of_one_cost_side_by_side():
    """Settings within 1.2% of the axis' span of each other in cost are spread that far apart,
    centred on their cost; a setting alone at its cost stays where it is."""
    shift = figures._side_by_side({"standard": 110.0, "trades": 110.0, "mart": 110.0, "fgsm-rs": 20.0,
                                   "dynamic": 63.8})
    gap = 0.012 * 90.0
    assert shift["fgsm-rs"] == 0.0 and shift["dynamic"] == 0.0
    assert sorted(shift[s] for s in ("standard", "trades", "mart")) == pytest.approx([-gap, 0.0, gap])
    assert figures._side_by_side({"a": 5.0}) == {"a": 0.0}
