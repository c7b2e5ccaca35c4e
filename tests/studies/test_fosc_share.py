"""The share of training examples with FOSC in [0, 0.1] (Fig. 5's number): per seed by hand, its
paired difference on each seed's own examples, the report's section and the claims table's row."""
import json

import numpy as np
import pytest

from minidyn.errors import ConfigError
from minidyn.studies.claims import judge, load_claims
from minidyn.studies.fosc_share import COLUMN, fosc_tables
from minidyn.studies.report import write_report
from minidyn.studies.results import collect

N = 200


def fosc_of(method, seed):
    """float32 (N,): Dynamic has 40 + 10 seed examples at FOSC 0.05 (inside [0, 0.1]), Standard
    60 + 10 seed; the rest at 0.3, and example 0 of Standard seed 1 not recorded (NaN)."""
    values = np.full(N, 0.3, dtype=np.float32)
    values[:(40 if method == "dynamic" else 60) + 10 * seed] = 0.05
    if (method, seed) == ("standard", 1):
        values[0] = np.nan
    return values


@pytest.fixture
def study(tmp_path, three_seed_study, done_cells):
    study, spec = three_seed_study(tmp_path / "studies" / "tiny")
    done_cells(study, spec, lambda cell: np.arange(40) < 20)
    for cell in spec.cells():
        (study.cell_dir(cell) / "fosc").mkdir()
        np.save(study.cell_dir(cell) / "fosc" / "epoch_001.npy", fosc_of(cell.values["method"], cell.values["seed"]))
    return study


def test_the_shares_and_their_paired_difference_are_counted_by_hand(study):
    spec = study.spec()
    rows = {r["setting"]: r for r in fosc_tables(study, spec, collect(study, spec))["fosc/epoch=2"]}
    standard = [100 * (60 + 10 * s - (s == 1)) / (N - (s == 1)) for s in range(3)]   # the NaN left out
    dynamic = [100 * (40 + 10 * s) / N for s in range(3)]
    assert rows["standard"]["columns"][COLUMN]["mean"] == pytest.approx(np.mean(standard))
    assert rows["dynamic"]["columns"][COLUMN]["mean"] == pytest.approx(np.mean(dynamic))
    d = rows["dynamic"]["difference"][COLUMN]
    assert d["mean"] == pytest.approx(100 * np.mean([-20 / N, -20 / (N - 1), -20 / N]))  # where both recorded
    boot = rows["dynamic"]["difference_bootstrap"][COLUMN]
    # per example on the examples both runs recorded: seed 1 pairs 199 examples, each -1 or 0
    assert boot["mean"] == pytest.approx(100 * np.mean([-20 / N, -20 / (N - 1), -20 / N]))
    assert boot["low"] < boot["mean"] < boot["high"] < 0 and (boot["seeds"], boot["examples"]) == (3, N - 1)
    assert rows["dynamic"]["baseline"] == "standard" and rows["standard"]["difference"] is None


def test_the_report_prints_the_section_and_counts_its_intervals(study):
    write_report(study.path)
    text = (study.path / "report" / "report.md").read_text()
    assert "## FOSC of the training examples' adversarial points, epoch 2: share in [0, 0.1] (%)" in text
    assert "| dynamic | 25.00 ± 5.00 (n=3) [" in text and "| 3 x 200 | -10.0" in text
    numbers = json.loads((study.path / "report" / "results.json").read_text())
    assert "fosc/epoch=2" in numbers["tables"]
    without = json.loads(json.dumps(numbers))
    for folder in study.cells_dir.iterdir():
        (folder / "fosc" / "epoch_001.npy").unlink()
    write_report(study.path)
    numbers = json.loads((study.path / "report" / "results.json").read_text())
    assert "fosc/epoch=2" not in numbers["tables"]
    assert numbers["intervals"]["t"] == without["intervals"]["t"] - 1          # the difference's t
    assert numbers["intervals"]["bootstrap"] == without["intervals"]["bootstrap"] - 3  # 2 shares, 1 difference


def claims_file(tmp_path, epoch=2, attack="fosc-share"):
    path = tmp_path / "claims.toml"
    path.write_text(f'[[claim]]\nid = "Fig. 5"\nstatement = "Dynamic converges best"\ndistance = "tiny"\n'
                    f'direction = "greater"\nstudy = "tiny"\nsetting = {{method = "dynamic"}}\n'
                    f'attack = "{attack}"\n' + ("" if epoch is None else f"fosc_epoch = {epoch}\n"))
    return path


def test_a_claim_on_the_share_is_judged_on_training_examples(study, tmp_path):
    write_report(study.path)
    [claim] = load_claims(claims_file(tmp_path), tmp_path / "studies")
    row = judge(claim, tmp_path / "studies")
    assert row.verdict == "contradicted here"
    assert row.ours.startswith("-10.0") and "3 seeds x 199 training examples" in row.ours


@pytest.mark.parametrize("epoch, attack, message", [
    (1, "fosc-share", "fosc_epoch 1 is not one of tiny's [report] fosc_epochs"),
    (None, "fosc-share", 'attack = "fosc-share" and fosc_epoch go together'),
    (2, "pgd10", 'attack = "fosc-share" and fosc_epoch go together'),
    (0, "fosc-share", "fosc_epoch must be an epoch counted from 1"),
])
def test_a_share_claim_without_its_epoch_is_refused_in_one_line(study, tmp_path, epoch, attack, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_claims(claims_file(tmp_path, epoch, attack), tmp_path / "studies")


def test_a_run_without_fosc_recorded_is_left_out(study):
    spec = study.spec()
    cell = next(c for c in spec.cells() if c.name == "dynamic_seed-0")
    np.save(study.cell_dir(cell) / "fosc" / "epoch_001.npy", np.full(N, np.nan, dtype=np.float32))
    rows = {r["setting"]: r for r in fosc_tables(study, spec, collect(study, spec))["fosc/epoch=2"]}
    assert rows["dynamic"]["seeds"] == [1, 2] and rows["dynamic"]["difference"][COLUMN]["n"] == 2
