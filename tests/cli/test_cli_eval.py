"""`minidyn eval`, `analyze` and `compare` through click's CliRunner, on a tiny numpy run."""
import json
import sys

import pytest
from click.testing import CliRunner

from minidyn.cli.main import main

FAST = ["--limit", "48", "--batch-size", "32", "--apgd-steps", "5"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    r = run("train", "--backend", "numpy", "--limit", "256", "--epochs", "2", "--eval-limit", "64",
            "--eval-steps", "2", "--batch-size", "256", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_eval_json_holds_every_requested_attack(tiny_run):
    attacks = "clean,fgsm,pgd10,pgd20,cw,apgd-ce,apgd-dlr"
    r = run("eval", tiny_run / "checkpoint.npz", "--attacks", attacks, "--json", *FAST)
    assert r.exit_code == 0, r.output
    acc = json.loads(r.stdout)  # stdout is the JSON object and nothing else
    assert set(acc) == set(attacks.split(",")) | {"worst-case"}
    assert all(0 <= v <= 100 for v in acc.values())
    assert acc["worst-case"] <= min(v for k, v in acc.items() if k != "worst-case")


def test_eval_table_save_black_box_and_compare(tiny_run):
    r = run("eval", tiny_run, "--attacks", "clean,fgsm,pgd10", "--save", *FAST)
    assert r.exit_code == 0, r.output
    assert "PGD-10" in r.stdout and "worst case" in r.stdout and "white-box" in r.stdout
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert saved["n"] == 48 and saved["method"] == "dynamic" and set(saved["accuracy"]) >= {"pgd10", "worst-case"}
    bb = run("eval", tiny_run, "--attacks", "clean,fgsm,pgd10", "--source", tiny_run / "checkpoint.npz",
             "--json", *FAST)
    assert json.loads(bb.stdout) == saved["accuracy"]  # source == target: white-box exactly
    r = run("compare", tiny_run, tiny_run, "--limit", "32")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("| Run | Method | Clean | FGSM | PGD-10 | PGD-20 | CW")
    assert len([ln for ln in lines if ln.startswith(f"| {tiny_run} | dynamic |")]) == 2
    assert f"{saved['accuracy']['pgd10']:.2f}" in lines[2]


def test_eval_reports_bad_input_in_one_line(tmp_path, tiny_run):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(b"not a zip")
    r = run("eval", bad)
    assert r.exit_code == 1 and r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1
    r = run("eval", tiny_run, "--attacks", "pgd7")
    assert r.exit_code == 1 and "unknown attack 'pgd7'" in r.output
    assert run("eval", tiny_run, "--eps", "2").exit_code == 2


def test_analyze_writes_numbers_and_figures(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")  # the `plot` extra; without it see the test below
    out = tmp_path / "an"
    r = run("analyze", tiny_run, "--limit", "40", "--trajectories", "5", "--trajectory-steps", "4",
            "--out", out)
    assert r.exit_code == 0, r.output
    assert "Pearson r(bin FOSC, accuracy)" in r.stdout and "Fig 4a" in r.stdout
    summary = json.loads((out / "analysis.json").read_text())
    assert sum(summary["fig1a"]["counts"]) + summary["fig1a"]["n_below"] + summary["fig1a"]["n_above"] == 40
    assert summary["fosc_distributions"]["epochs"] == [0, 1]
    for name in ("fig1a_fosc_bins", "fig1b_trajectories", "fig4a_eps_curve"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.png").stat().st_size > 1000
    assert (out / "fosc_distributions.png").exists() and (out / "fosc_kde.csv").exists()


def test_analyze_without_matplotlib_still_writes_numbers(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    r = run("analyze", tiny_run, "--limit", "16", "--trajectories", "2", "--trajectory-steps", "2",
            "--eps-grid", "0.1,0.3", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "matplotlib is not installed" in r.stdout
    assert (tmp_path / "analysis.json").exists() and not list(tmp_path.glob("*.png"))
