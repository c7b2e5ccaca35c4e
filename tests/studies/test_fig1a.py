"""Fig. 1a with an interval (`minidyn study fig1a`): the split of each seed's PGD-10 test points at
its median FOSC, the report's table, the claims table's row, publishing, and the command on a
trained cell, whose PGD-10 points are the study evaluation's own."""
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minidyn.cli.main import main
from minidyn.errors import ConfigError, DataError
from minidyn.studies.claims import judge, load_claims, parse_claim
from minidyn.studies.examples import read_cell_examples
from minidyn.studies.fig1a import COLUMN, fig1a_tables, file_name, high_half
from minidyn.studies.publish import publish
from minidyn.studies.report import write_report
from minidyn.studies.results import collect
from minidyn.studies.spec import load_spec
from minidyn.studies.tasks import StudyDir, Task, read_result

N = 40


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, st.integers(2, 60), elements=st.floats(0, 1)))
def test_the_high_half_holds_the_larger_fosc_values(fosc):
    """n - n // 2 examples, none with a FOSC below any example outside it (ties included)."""
    high = high_half(fosc)
    assert high.sum() == fosc.size - fosc.size // 2
    assert fosc[high].min() >= fosc[~high].max()


def write_measured(study, cell, fosc, correct, loss=None, checkpoint="best"):
    np.savez(study.cell_dir(cell) / file_name(checkpoint), indices=np.arange(fosc.size), fosc=fosc,
             loss=np.ones(fosc.size) if loss is None else loss, correct=correct, eps=np.array(0.1), epoch=np.array(1))  # done_cells' epoch


def standard_points(seed):
    """FOSC 0..1 in test order; the high half correct on 15 + seed of its 20, the low half on 5 of
    its 20; loss 2 in the low half, 1 in the high."""
    fosc = np.linspace(0, 1, N)
    correct = np.zeros(N, bool)
    correct[N // 2:N // 2 + 15 + seed] = True
    correct[:5] = True
    return fosc, correct, np.where(np.arange(N) < N // 2, 2.0, 1.0)


@pytest.fixture
def study(tmp_path, three_seed_study, done_cells):
    study, spec = three_seed_study(tmp_path / "studies" / "tiny")
    done_cells(study, spec, lambda cell: np.arange(40) < 20)
    for cell in spec.cells():
        if cell.values["method"] == "standard":
            write_measured(study, cell, *standard_points(cell.values["seed"]))
    return study


def test_the_table_counts_each_half_by_hand(study):
    spec = study.spec()
    [row] = fig1a_tables(study, spec, collect(study, spec))["fig1a/best"]
    assert row["setting"] == "standard" and row["seeds"] == [0, 1, 2] and row["examples"] == N
    highs = [100 * (15 + s) / 20 for s in range(3)]
    assert row["halves"]["high"]["mean"] == pytest.approx(np.mean(highs))
    assert row["halves"]["low"]["mean"] == pytest.approx(25.0)
    assert (row["halves"]["loss_high"]["mean"], row["halves"]["loss_low"]["mean"]) == (1.0, 2.0)
    d, boot = row["difference"][COLUMN], row["difference_bootstrap"][COLUMN]
    assert d["mean"] == pytest.approx(np.mean(highs) - 25.0) == pytest.approx(boot["mean"])
    assert 0 < d["low"] < d["mean"] < d["high"] and 0 < boot["low"] < boot["mean"] < boot["high"]
    assert (boot["seeds"], boot["examples"]) == (3, N)


def test_the_report_prints_the_section_and_the_claim_is_judged_from_it(study, tmp_path):
    write_report(study.path)
    text = (study.path / "report" / "report.md").read_text()
    assert "## Fig. 1a: PGD-10 accuracy of the test examples above and below the median FOSC (best checkpoint)" in text
    assert "| standard | 80.00 ± 5.00 | 25.00 ± 0.00 | +55.00; t [" in text
    claims = tmp_path / "claims.toml"
    claims.write_text('[[claim]]\nid = "Fig. 1a"\nstatement = "s"\ndistance = "d"\nstudy = "tiny"\n'
                      'setting = {method = "standard"}\nattack = "fosc-accuracy"\ncheckpoint = "best"\n'
                      'direction = "greater"\n')
    [claim] = load_claims(claims, tmp_path / "studies")
    row = judge(claim, tmp_path / "studies")
    assert row.verdict == "shown" and row.ours.startswith("+55.00 [")
    assert "80.00 vs 25.00; 3 seeds x 40 test examples" in row.ours


def test_the_split_by_fosc_over_the_gradients_scale_is_counted_by_hand(study):
    """grad_l1 chosen so that FOSC / (eps ||g||_1) falls where FOSC rises: the scaled split's high
    half is FOSC's low half (25% correct), its low half FOSC's high one (75 + 5 seed %)."""
    spec = study.spec()
    for cell in spec.cells():
        if cell.values["method"] == "standard":
            fosc, correct, loss = standard_points(cell.values["seed"])
            fosc = fosc + 0.01                                     # no zero FOSC: every norm > 0
            ratio = np.linspace(1.0, 0.02, N)
            np.savez(study.cell_dir(cell) / file_name("best"), fosc=fosc, loss=loss, correct=correct,
                     grad_l1=fosc / (0.1 * ratio), eps=np.array(0.1), epoch=np.array(1))
    [row] = fig1a_tables(study, spec, collect(study, spec))["fig1a/best"]
    scaled = row["scaled"]
    assert scaled["difference"]["mean"] == pytest.approx(25.0 - np.mean([75 + 5 * s for s in range(3)]))
    assert scaled["bootstrap"]["high"] < 0 < row["difference"][COLUMN]["low"]
    norms = (fosc / (0.1 * ratio))
    assert scaled["grad_l1_high"]["mean"] == pytest.approx(norms[N // 2:].mean())
    assert scaled["grad_l1_low"]["mean"] == pytest.approx(norms[:N // 2].mean())
    write_report(study.path)
    assert "| standard | " in (study.path / "report" / "report.md").read_text().split("split by FOSC / (eps ‖g‖₁) |")[1]


def test_a_claim_waits_for_every_seed_and_takes_no_baseline(study, tmp_path):
    os.remove(study.cell_dir(study.spec().cells()[0]) / file_name("best"))  # standard, seed 0
    write_report(study.path)
    claim = parse_claim({"id": "Fig. 1a", "statement": "s", "distance": "d", "study": "tiny", "checkpoint": "best",
                         "setting": {"method": "standard"}, "attack": COLUMN, "direction": "greater"}, 1)
    assert judge(claim, tmp_path / "studies").verdict.startswith("pending: 1 of the 3 cells of standard done but not measured")
    with pytest.raises(ConfigError, match="takes no baseline"):
        parse_claim({"id": "x", "statement": "s", "distance": "d", "study": "tiny", "setting": {"method": "dynamic"},
                     "baseline": {"method": "standard"}, "attack": COLUMN, "direction": "greater"}, 1)


def test_a_file_measured_on_another_epochs_checkpoint_is_left_out_and_said(study, tmp_path):
    """The checkpoint was rewritten after the measurement (the cell trained again): its points
    are not the evaluated model's; the report says so and the claim waits."""
    write_measured(study, study.spec().cells()[0], *standard_points(0))
    np.savez(study.cell_dir(study.spec().cells()[0]) / file_name("best"), fosc=np.linspace(0, 1, N),
             loss=np.ones(N), correct=np.ones(N, bool), epoch=np.array(7))
    write_report(study.path)
    text = (study.path / "report" / "report.md").read_text()
    assert "Left out: standard_seed-0: measured at epoch 7, its best checkpoint is epoch 1" in text
    claim = parse_claim({"id": "Fig. 1a", "statement": "s", "distance": "d", "study": "tiny", "checkpoint": "best",
                         "setting": {"method": "standard"}, "attack": COLUMN, "direction": "greater"}, 1)
    assert judge(claim, tmp_path / "studies").verdict.startswith("pending: 1 of the 3 cells")


def cut(path):
    path.write_bytes(path.read_bytes()[:100])


def too_few(path):
    np.savez(path, fosc=np.zeros(1), loss=np.zeros(1), correct=np.ones(1, bool), epoch=np.array(1))


def not_bool(path):
    np.savez(path, fosc=np.zeros(N), loss=np.zeros(N), correct=np.ones(N), epoch=np.array(1))


@pytest.mark.parametrize("spoil, message", [
    (lambda p: p.write_bytes(b"not an npz"), "is not a Fig. 1a file"), (cut, "is not a Fig. 1a file"),
    (too_few, "(at least 2)"), (not_bool, "bool per test example")])
def test_a_file_that_is_not_ours_stops_the_report_in_one_line(study, spoil, message):
    spoil(study.cell_dir(study.spec().cells()[0]) / file_name("best"))
    with pytest.raises(DataError, match=re.escape(message)):
        write_report(study.path)


def test_publish_copies_the_files_and_refuses_a_report_older_than_one(study, tmp_path):
    write_report(study.path)
    written = publish(study.path, tmp_path / "published")
    assert sum(p.name == file_name("best") for p in written) == 3
    later = study.cell_dir(study.spec().cells()[0]) / file_name("best")
    os.utime(later, (later.stat().st_mtime + 60,) * 2)
    with pytest.raises(ConfigError, match="older than a result or a Fig. 1a file"):
        publish(study.path, tmp_path / "published")


@pytest.mark.slow
def test_the_command_measures_the_trained_cells_with_the_evaluations_own_pgd10(tiny_text, tmp_path):
    """On a trained tiny cell: the Fig. 1a file's PGD-10 correctness is the study evaluation's
    pgd10 record, example by example (same attack, same seeds); a second call measures nothing."""
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text.replace('method = ["standard", "dynamic"]', 'method = ["standard"]')
                         .replace("seed = [0, 1]", "seed = [0]"))
    out = tmp_path / "study"
    runner = CliRunner()
    trained = runner.invoke(main, ["study", "run", str(spec_file), "--out", str(out)], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    first = runner.invoke(main, ["study", "fig1a", str(out)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "standard: 1 cells, 1 trained and not yet measured at the last checkpoint" in first.output
    study = StudyDir(out)
    [cell] = study.spec().cells()
    with np.load(study.cell_dir(cell) / file_name("last")) as f:
        correct, fosc = f["correct"], f["fosc"]
    result = study.result(Task(cell, "train"))
    record = read_cell_examples(result, read_result(result))["last"]
    [eps_key] = record
    assert correct.shape == (40,) and np.isfinite(fosc).all() and (fosc >= 0).all()
    with np.load(study.cell_dir(cell) / file_name("last")) as f:   # |<x - x0, g>| <= eps ||g||_1
        assert (f["fosc"] <= 2 * float(f["eps"]) * f["grad_l1"] * (1 + 1e-5) + 1e-9).all()
    np.testing.assert_array_equal(correct, record[eps_key]["pgd10"])
    again = runner.invoke(main, ["study", "fig1a", str(out)], catch_exceptions=False)
    assert "1 cells, 0 trained and not yet measured" in again.output
    reported = runner.invoke(main, ["study", "report", str(out)], catch_exceptions=False)
    assert reported.exit_code == 0
    numbers = json.loads((out / "report" / "results.json").read_text())
    assert numbers["tables"]["fig1a/last"][0]["examples"] == 40


def test_a_checkpoint_the_study_does_not_evaluate_is_refused(tiny_text, tmp_path):
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text.replace("batch_size = 40\n", 'batch_size = 40\ncheckpoints = ["last"]\n'))
    out = tmp_path / "study"
    StudyDir(out).prepare(load_spec(spec_file))
    result = CliRunner().invoke(main, ["study", "fig1a", str(out), "--checkpoint", "best"])
    assert result.exit_code == 1 and "--checkpoint best: study evaluates only the last checkpoint" in result.output


@pytest.mark.parametrize("words, message", [
    (["--setting", "colour=red"], "--setting colour=red: give KEY=VALUE with KEY a grid key of tiny (method)"),
    (["--setting", "method=fat"], "--setting method=fat: 'fat' is not a grid value of method (standard, dynamic)"),
])
def test_a_setting_that_is_not_the_grids_is_one_line(study, words, message):
    result = CliRunner().invoke(main, ["study", "fig1a", str(study.path), *words])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_the_figure_pools_the_seeds_points_into_the_papers_bins(study):
    """fig1a_standard.png from the 3 seeds' 40 points each (120 pooled): FOSC 0..1 puts fewer
    than half in [0, 0.1], so the range is chosen automatically, and the bins count every point
    in it."""
    pytest.importorskip("matplotlib")
    from minidyn.studies.figures import fig1a_figures

    spec = study.spec()
    [(name, fig, caption)] = fig1a_figures(spec, collect(study, spec), study)
    assert name == "fig1a_standard.png" and "3 seeds pooled" in caption
    below = fig.axes[1]  # the counts under the accuracy axes (fig.axes[2]: the loss's twin)
    fosc = np.concatenate([standard_points(s)[0] for s in range(3)])
    lo, hi = below.get_xlim()
    assert lo == 0 and 0.1 < hi < 1
    counts = below.patches
    assert sum(bar.get_height() for bar in counts) == ((fosc >= lo) & (fosc <= hi)).sum()
