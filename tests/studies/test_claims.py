"""The claims table: each verdict rule on reports with chosen intervals, the report's own numbers
read back, pending and untestable studies, the command's output and its one-line errors."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.errors import ConfigError
from minidyn.studies import claims as claims_module
from minidyn.studies.claims import Claim, judge, load_claims, markdown, parse_claim
from minidyn.studies.report import write_report
from minidyn.studies.spec import load_spec
from minidyn.studies.tasks import StudyDir

CLAIM = {"id": "T1", "statement": "Dynamic beats Standard", "distance": "tiny", "direction": "greater",
         "study": "tiny", "setting": {"method": "dynamic"}, "attack": "pgd10", "checkpoint": "best"}


def interval(mean, low, high, **more):
    return {"mean": mean, "low": low, "high": high, **more}


def fake_report(studies: Path, tiny_text: str, boot=(1.0, 0.5, 2.0), t=(1.0, 0.2, 2.5), states=None,
                primary_holm=None) -> Path:
    """STUDIES/tiny with TINY's spec and a results.json whose dynamic - standard difference in
    PGD-10 (best checkpoint) has the two-way interval `boot` and the t interval `t` (mean, low,
    high; boot None: no per-example results); `states` {cell name: state}; `primary_holm`: the
    comparison is declared primary with this Holm-adjusted p."""
    directory = studies / "tiny"
    (directory / "report").mkdir(parents=True)
    (directory / "study.toml").write_text(tiny_text.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    column = {"pgd10": {"mean": 80.0, "std": 1.0, "n": 3}}
    standard = {"setting": "standard", "values": {"method": "standard"}, "columns": column, "difference": None}
    dynamic = {"setting": "dynamic", "values": {"method": "dynamic"}, "baseline": "standard",
               "columns": {"pgd10": {"mean": 80.0 + t[0], "std": 1.0, "n": 3}},
               "difference": {"pgd10": interval(*t, std=1.0, n=3)},
               "difference_bootstrap": {"pgd10": None if boot is None else interval(*boot, p=0.01, seeds=3, examples=40)}}
    cells = [{"name": f"{m}_seed-{s}", "setting": m, "state": (states or {}).get(f"{m}_seed-{s}", "done")}
             for m in ("standard", "dynamic") for s in range(3)]
    primary = [] if primary_holm is None else [
        {"setting": "dynamic", "baseline": "standard", "table": "best/eps=0.1", "column": "pgd10",
         "difference": dynamic["difference"]["pgd10"], "bootstrap": dynamic["difference_bootstrap"]["pgd10"],
         "holm": primary_holm}]
    numbers = {"study": "tiny", "cells": cells, "tables": {"best/eps=0.1": [standard, dynamic]}, "primary": primary}
    (directory / "report" / "results.json").write_text(json.dumps(numbers))
    return directory


def claim(**changes) -> Claim:
    return parse_claim({**CLAIM, **changes}, 1)


@pytest.mark.parametrize("direction, boot, t, words", [
    ("greater", (1.0, 0.5, 2.0), (1.0, 0.2, 2.5), "shown"),
    ("greater", (-1.0, -2.0, -0.5), (-1.0, -2.5, -0.2), "contradicted here"),
    ("less", (-1.0, -2.0, -0.5), (-1.0, -2.5, -0.2), "shown"),
    ("less", (1.0, 0.5, 2.0), (1.0, 0.2, 2.5), "contradicted here"),
    ("either", (-1.0, -2.0, -0.5), (-1.0, -2.5, -0.2), "shown (lower)"),
    ("either", (1.0, 0.5, 2.0), (1.0, 0.2, 2.5), "shown (higher)"),
    ("greater", (0.5, -1.0, 2.0), (0.5, -0.5, 1.5), "not shown: the two-way interval allows -1.00 to +2.00 points"),
    # the bootstrap alone excludes 0 (few seeds understate their noise): not enough
    ("greater", (1.0, 0.5, 2.0), (1.0, -0.5, 2.5), "not shown: the two-way interval allows +0.50 to +2.00 points; "
                                                   "only the two-way interval excludes 0"),
    ("either", (0.0, -1.0, 1.0), (0.0, -2.0, 2.0), "not shown"),
    # zero width (every seed and resample alike) excludes nothing
    ("greater", (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), "not shown: the two-way interval has zero width"),
])
def test_each_verdict_follows_from_the_two_intervals(tmp_path, tiny_text, direction, boot, t, words):
    fake_report(tmp_path, tiny_text, boot=boot, t=t)
    row = judge(claim(direction=direction), tmp_path)
    assert row.verdict.startswith(words), row.verdict
    assert row.ours.startswith(f"{boot[0]:+.2f} [{boot[1]:+.2f}, {boot[2]:+.2f}] two-way, t [{t[1]:+.2f}, {t[2]:+.2f}]")
    assert "3 seeds x 40 test examples" in row.ours and f"{80 + t[0]:.2f} vs 80.00" in row.ours


def test_not_shown_says_whether_the_papers_number_is_still_allowed(tmp_path, tiny_text):
    fake_report(tmp_path, tiny_text, boot=(0.5, -1.0, 2.0), t=(0.5, -0.5, 1.5))
    assert "(the paper's +0.65 inside it)" in judge(claim(paper=[91.27, 90.62]), tmp_path).verdict
    assert "(the paper's +3.00 outside it)" in judge(claim(paper=[93.0, 90.0]), tmp_path).verdict


def test_equal_or_better_is_judged_against_its_margin(tmp_path, tiny_text):
    fake_report(tmp_path, tiny_text, boot=(0.2, -0.5, 1.0), t=(0.2, -0.8, 1.2))
    assert judge(claim(direction="equal-or-better", margin=1.0), tmp_path).verdict == "shown"
    assert judge(claim(direction="equal-or-better"), tmp_path).verdict.startswith("not shown")


def test_a_primary_comparison_needs_its_holm_adjusted_p(tmp_path, tiny_text):
    fake_report(tmp_path / "a", tiny_text, primary_holm=0.2)
    row = judge(claim(), tmp_path / "a")
    assert row.verdict.startswith("not shown: the intervals exclude 0 but the Holm-adjusted p 0.2")
    assert "primary, Holm p 0.2" in row.ours
    fake_report(tmp_path / "b", tiny_text, primary_holm=0.01)
    assert judge(claim(), tmp_path / "b").verdict == "shown"


def test_without_per_example_results_the_t_interval_decides(tmp_path, tiny_text):
    fake_report(tmp_path, tiny_text, boot=None, t=(1.0, 0.2, 2.5))
    row = judge(claim(), tmp_path)
    assert row.verdict == "shown" and "3 seeds x no per-example results" in row.ours


def test_a_report_with_cells_left_out_is_pending_with_its_interim_number(tmp_path, tiny_text):
    directory = fake_report(tmp_path, tiny_text, states={"dynamic_seed-2": "unfinished"})
    row = judge(claim(), tmp_path)
    assert row.ours.endswith("(interim)")
    assert row.verdict == (f"pending: 1 of the compared cells not done in the report; `minidyn study run tiny "
                           f"--out {directory}` continues it, then `minidyn study report {directory}`")


def test_a_study_without_a_report_or_a_directory_is_pending_or_not_testable(tmp_path, tiny_text):
    assert judge(claim(), tmp_path).verdict == (f"pending: no study directory {tmp_path / 'tiny'}; "
                                                f"`minidyn study run tiny --out {tmp_path / 'tiny'}` starts it "
                                                "(or `minidyn study publish` copies one finished elsewhere there)")
    assert judge(claim(not_testable="CIFAR-10 needs a GPU"), tmp_path).verdict == "not testable here: CIFAR-10 needs a GPU"
    study = tmp_path / "tiny"
    study.mkdir()
    (study / "study.toml").write_text(tiny_text)
    assert judge(claim(), tmp_path).verdict.startswith(
        f"pending: 0 of 4 tasks done, no report; `minidyn study run tiny --out {study}` continues it")
    untestable = parse_claim({k: v for k, v in CLAIM.items() if k not in ("study", "setting", "attack")}
                             | {"not_testable": "no such data here"}, 1)
    assert judge(untestable, tmp_path).verdict == "not testable here: no such data here"


def test_a_claim_by_reading_points_where_to_read(tmp_path, tiny_text):
    fake_report(tmp_path, tiny_text)
    row = judge(parse_claim({"id": "Fig. 5", "statement": "s", "distance": "d", "direction": "reading",
                             "study": "tiny", "reading": "fosc_epochs.png"}, 1), tmp_path)
    assert row.verdict == f"by reading: fosc_epochs.png (report: {tmp_path / 'tiny' / 'report'})"


def test_the_real_reports_numbers_are_read_back(tmp_path, tiny_text, monkeypatch, done_cells):
    """A study written as the workers write it and reported by `minidyn study report`: Dynamic
    right on 10, 11 and 12 more of the 40 test examples than Standard by seed (+27.5 points) is
    shown, and the claim's number is the report's."""
    monkeypatch.setattr("minidyn.studies.figures.available", lambda: False)
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text(tiny_text.replace("seed = [0, 1]", "seed = [0, 1, 2]")
                         + '[report]\nprimary = [{setting = {method = "dynamic"}, attack = "pgd10", checkpoint = "best"}]\n')
    study = StudyDir(tmp_path / "studies" / "tiny")
    spec = load_spec(spec_file)
    study.prepare(spec)
    done_cells(study, spec, lambda cell: np.arange(40) < (30 + 2 * cell.values["seed"]
                                                           if cell.values["method"] == "dynamic" else 20 + cell.values["seed"]))
    write_report(study.path)
    row = judge(claim(), tmp_path / "studies")
    assert row.verdict == "shown"
    assert row.ours.startswith("+27.50 [") and "80.00 vs 52.50; 3 seeds x 40 test examples; primary, Holm p" in row.ours


def test_the_command_prints_and_writes_the_table(tmp_path, tiny_text):
    fake_report(tmp_path / "studies", tiny_text)
    claims = tmp_path / "claims.toml"
    claims.write_text('[[claim]]\nid = "T1"\nstatement = "Dynamic beats Standard"\ndistance = "tiny"\n'
                      'direction = "greater"\nstudy = "tiny"\nsetting = {method = "dynamic"}\n'
                      'attack = "pgd10"\ncheckpoint = "best"\npaper = [91.27, 90.62]\n')
    r = CliRunner().invoke(main, ["study", "claims", str(claims), "--studies", str(tmp_path / "studies")])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"Made by `minidyn study claims {claims} --studies {tmp_path / 'studies'}`.")
    assert ("| T1 (tiny) | Dynamic beats Standard: 91.27 vs 90.62 (+0.65) | +1.00 [+0.50, +2.00] two-way, "
            "t [+0.20, +2.50]; 81.00 vs 80.00; 3 seeds x 40 test examples | tiny | shown |") in r.stdout
    out = tmp_path / "claims.md"
    r = CliRunner().invoke(main, ["study", "claims", str(claims), "--studies", str(tmp_path / "studies"), "--out", str(out)])
    assert r.exit_code == 0 and r.stdout == f"{out}\n"
    assert out.read_text() == markdown([judge(c, tmp_path / "studies") for c in load_claims(claims)],
                                       f"minidyn study claims {claims} --studies {tmp_path / 'studies'}")


@pytest.mark.parametrize("text, message", [
    ('[[claim]]\nid = "A"\nstatement = "s"\ndistance = "d"\ndirection = "bigger"\nnot_testable = "x"\n',
     "claim A: direction must be one of greater, less, equal-or-better, either, reading, not 'bigger'"),
    ('[[claim]]\nid = "A"\nstatement = "s"\ndirection = "greater"\nnot_testable = "x"\n', "claim A: needs distance"),
    ('[[claim]]\nid = "A"\nstatement = "s"\ndistance = "d"\ndirection = "greater"\nstudy = "tiny"\n'
     'setting = {method = "dymanic"}\nattack = "pgd10"\ncheckpoint = "best"\n',
     "claim A: setting method = 'dymanic' is not a grid value of tiny ('standard', 'dynamic')"),
    ('[[claim]]\nid = "A"\nstatement = "s"\ndistance = "d"\ndirection = "greater"\nstudy = "tiny"\n'
     'setting = {method = "dynamic"}\nattack = "pgd10"\n', "claim A: give checkpoint (last or best)"),
    ('[[claim]]\nid = "A"\nstatement = "s"\ndistance = "d"\ndirection = "greater"\nstudy = "tiny"\n'
     'setting = {method = "dynamic"}\nattack = "cw"\ncheckpoint = "best"\n', "attack 'cw' is not one of tiny's"),
    ('[[claim]]\nid = "A"\nstatement = "s"\ndistance = "d"\ndirection = "greater"\ncolour = 1\n',
     "claim A: unknown key(s) colour"),
    ("claim = 3\n", "a claims file is a list of [[claim]] tables"),
    ("[[claim]\n", "is not a readable TOML claims file"),
])
def test_a_bad_claims_file_is_one_line(tmp_path, tiny_text, text, message):
    (tmp_path / "studies" / "tiny").mkdir(parents=True)
    (tmp_path / "studies" / "tiny" / "study.toml").write_text(tiny_text)
    claims = tmp_path / "claims.toml"
    claims.write_text(text)
    r = CliRunner().invoke(main, ["study", "claims", str(claims), "--studies", str(tmp_path / "studies")])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"Error: {claims}") and message in r.stderr, r.stderr
    with pytest.raises(ConfigError):
        load_claims(claims, tmp_path / "studies")


def test_a_missing_claims_file_or_an_unreadable_report_is_one_line(tmp_path, tiny_text):
    r = CliRunner().invoke(main, ["study", "claims", str(tmp_path / "none.toml"), "--studies", str(tmp_path)])
    assert r.exit_code == 1 and r.stderr == f"Error: {tmp_path / 'none.toml'}: no such claims file\n"
    directory = fake_report(tmp_path / "studies", tiny_text)
    (directory / "report" / "results.json").write_text("{")
    claims = tmp_path / "claims.toml"
    claims.write_text('[[claim]]\nid = "T1"\nstatement = "s"\ndistance = "d"\ndirection = "greater"\nstudy = "tiny"\n'
                      'setting = {method = "dynamic"}\nattack = "pgd10"\ncheckpoint = "best"\n')
    r = CliRunner().invoke(main, ["study", "claims", str(claims), "--studies", str(tmp_path / "studies")])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"Error: {directory / 'report' / 'results.json'} is not a readable report")


def test_the_shipped_claims_file_names_the_shipped_specs_values():
    """docs/results/claims.toml: every claim checked against its study's shipped spec."""
    path = Path(__file__).parents[2] / "docs" / "results" / "claims.toml"
    claims = load_claims(path)
    assert len({c.id for c in claims}) == len(claims) >= 20
    assert {c.study for c in claims} >= {"cmax-fashion", "budget-fashion", "family-fashion-cpu", "fig2a-mnist",
                                         "authors-code-2"}
    assert claims_module.VERDICT_RULE in markdown([], "x")


def test_a_hand_edited_report_is_one_line(tmp_path, tiny_text):
    directory = fake_report(tmp_path / "studies", tiny_text)
    numbers = json.loads((directory / "report" / "results.json").read_text())
    del numbers["tables"]["best/eps=0.1"][1]["difference_bootstrap"]
    (directory / "report" / "results.json").write_text(json.dumps(numbers))
    with pytest.raises(ConfigError, match="is not as `minidyn study report` writes it .KeyError"):
        judge(claim(), tmp_path / "studies")
