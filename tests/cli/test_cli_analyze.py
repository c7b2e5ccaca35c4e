"""`minidyn analyze` through click's CliRunner, on a tiny numpy MNIST run (2 epochs, 256 digits)."""
import csv
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main

QUICK = ["--trajectories", "5", "--trajectory-steps", "4", "--eps-grid", "0.1,0.3"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)



def test_analyze_writes_numbers_and_figures(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")  # the `plot` extra; without it see the test below
    out = tmp_path / "an"
    r = run("analyze", tiny_run, "--limit", "40", "--trajectories", "5", "--trajectory-steps", "4",
            "--out", out)
    assert r.exit_code == 0, r.output
    assert "Pearson r(bin FOSC, accuracy)" in r.stdout and "Fig 4a" in r.stdout
    summary = json.loads((out / "analysis.json").read_text())
    assert sum(summary["fig1a"]["counts"]) + summary["fig1a"]["n_below"] + summary["fig1a"]["n_above"] == 40
    assert summary["fosc_distributions"]["epochs"] == [1, 2]
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


def test_analyze_counts_epochs_from_1_as_the_training_log(tiny_run, tmp_path):
    files = sorted(p.name for p in (tiny_run / "fosc").iterdir())
    assert files == ["epoch_000.npy", "epoch_001.npy"]  # the run files keep the 0-based index
    r = run("analyze", tiny_run, "--limit", "16", *QUICK, "--no-plots", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    share_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("FOSC    training examples"))
    assert share_line.split("by epoch: ")[1].split("  ")[0].startswith("1: ")
    assert " 0: " not in share_line and " 2: " in share_line
    assert "        epoch 1: KDE" in r.stdout and "        epoch 2: KDE" in r.stdout
    with open(tmp_path / "fosc_share.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2]
    with open(tmp_path / "fosc_kde.csv") as f:
        assert next(csv.reader(f))[1:] == ["density_epoch_1", "density_epoch_2"]
    dist = json.loads((tmp_path / "analysis.json").read_text())["fosc_distributions"]
    assert dist["epochs"] == [1, 2] and list(dist["share"]) == ["1", "2"]
    # --epochs takes the same numbers: epoch 2 is the last file, epoch_001.npy
    r = run("analyze", tiny_run, "--limit", "16", *QUICK, "--no-plots", "--epochs", "2", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    dist = json.loads((tmp_path / "analysis.json").read_text())["fosc_distributions"]
    last = np.load(tiny_run / "fosc" / "epoch_001.npy")
    assert dist["epochs"] == [2] and dist["n"]["2"] == int(np.isfinite(last).sum())
    assert dist["quantiles"]["2"][1] == pytest.approx(float(np.nanmedian(last)), rel=1e-6)


def test_analyze_refuses_epoch_0_and_names_the_missing_file(tiny_run, tmp_path):
    r = run("analyze", tiny_run, "--epochs", "0,1", "--out", tmp_path)
    assert r.exit_code == 2 and "counted from 1" in r.output
    assert [ln for ln in r.output.splitlines() if ln.startswith("Error:")][0].endswith("as in the training log)")
    r = run("analyze", tiny_run, "--epochs", "3", "--out", tmp_path)
    assert r.exit_code == 1 and "no FOSC file for epoch 3 (fosc/epoch_002.npy)" in r.output
    assert "epochs with FOSC files: 1, 2" in r.output


def test_default_fosc_range_gives_a_non_empty_fig_1a_on_mnist(tiny_run, tmp_path):
    r = run("analyze", tiny_run, "--limit", "40", *QUICK, "--no-plots", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    f1 = json.loads((tmp_path / "analysis.json").read_text())["fig1a"]
    # what makes this run the case in point: the paper's [0, 0.1] misses most MNIST examples
    assert f1["n_in_paper_range"] < f1["n"] / 2, "the tiny run no longer exercises the fallback"
    assert f1["range_source"] == "fallback" and f1["fosc_range"][1] > 0.1
    assert sum(f1["counts"]) >= f1["n"] / 2 and sum(c > 0 for c in f1["counts"]) >= 2
    assert f"note: only {f1['n_in_paper_range']} of {f1['n']} lie in the paper's [0, 0.1]" in r.stdout
    shares = json.loads((tmp_path / "analysis.json").read_text())["fosc_distributions"]["share_range"]
    assert shares == [0.0, 0.1]  # the fallback changes Fig 1a's bins only
    # asked for explicitly, the paper's range is kept, with the note that it misses most examples
    r = run("analyze", tiny_run, "--limit", "40", *QUICK, "--no-plots", "--fosc-range", "0,0.1",
            "--out", tmp_path)
    f1 = json.loads((tmp_path / "analysis.json").read_text())["fig1a"]
    assert f1["range_source"] == "given" and f1["fosc_range"] == [0.0, 0.1]
    assert "try --fosc-range auto" in r.stdout and "note: only" not in r.stdout
