"""`minidyn compare` through click's CliRunner: groups over seeds, --json, --csv, --baseline, and
the check of every RUN before the first evaluation.

Most runs here are written by hand (config.json, metrics.jsonl, fosc/, eval.json and a
checkpoint file that is never read, since eval.json holds the numbers); one tiny numpy training
on the 64-example test set of `tiny_mnist` covers the runs compare evaluates itself.
"""
import csv
import io
import json
import math
import shutil
import statistics

import numpy as np
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main
from minidyn.evaluation.attack_table import DEFAULT_ATTACKS

ATTACKS = ("clean", "fgsm", "pgd10", "pgd20", "cw", "apgd-ce")
CONFIG = {"backend": "numpy", "dataset": "mnist", "model": "mlp", "epochs": 2, "eps": 0.3,
          "steps": 10, "c_max": 0.5, "data_dir": None, "device": "auto", "version": "0.1.0",
          "limit": 50}
# accuracies (clean, fgsm, pgd10, pgd20, cw, apgd-ce) and grad_evals per epoch of each hand run
NUMBERS = {("standard", 0): ((97.0, 90.0, 85.0, 84.5, 84.0, 83.0), (550, 550)),
           ("standard", 1): ((96.5, 89.0, 84.0, 83.5, 83.5, 82.5), (550, 550)),
           ("standard", 2): ((97.5, 91.0, 86.5, 85.0, 84.5, 83.5), (550, 550)),
           ("dynamic", 0): ((97.5, 91.0, 86.0, 85.5, 85.0, 84.0), (300, 420)),
           ("dynamic", 1): ((97.0, 90.5, 85.5, 85.0, 84.5, 83.0), (310, 400)),
           ("dynamic", 2): ((98.0, 92.0, 87.0, 86.5, 85.5, 85.5), (290, 430))}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def hand_run(root, method, seed, eps=0.3, n=1000, **config):
    """A run directory with the NUMBERS of (method, seed) in its eval.json."""
    acc, evals = NUMBERS[(method, seed)]
    path = root / f"{method}-{seed}-{eps}"
    (path / "fosc").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**CONFIG, "method": method, "seed": seed, "eps": eps,
                                                  "c_max_used": 0.4 + seed / 10, **config}))
    (path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": t, "grad_evals": g}) + "\n"
                                                for t, g in enumerate(evals)))
    np.save(path / "fosc" / "epoch_000.npy", np.zeros(CONFIG["limit"], np.float32))
    (path / "checkpoint.npz").write_bytes(b"never read: eval.json holds the numbers")
    accuracy = {**dict(zip(ATTACKS, acc)), "worst-case": min(acc) - 0.5}
    (path / "eval.json").write_text(json.dumps({"accuracy": accuracy, "attacks": list(ATTACKS), "eps": eps,
                                                "n": n, "seed": 0, "source": None, "method": method}))
    return path


@pytest.fixture
def six_runs(tmp_path):
    """Two methods x three seeds; the seeds also differ in data_dir and device (not in results)."""
    return [hand_run(tmp_path, m, s, data_dir=f"/data/{s}", device=["cpu", "cuda", "auto"][s])
            for m in ("standard", "dynamic") for s in (0, 1, 2)]


def column(method, i):
    """The values of accuracy i (or "cost": grad evals / example) over the three seeds."""
    if i == "cost":
        return [sum(NUMBERS[(method, s)][1]) / CONFIG["limit"] for s in range(3)]
    if i == "worst":
        return [min(NUMBERS[(method, s)][0]) - 0.5 for s in range(3)]
    return [NUMBERS[(method, s)][0][i] for s in range(3)]


def cell(values, digits=2):
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)})"


def test_three_seeds_are_one_row_with_mean_std_and_seeds(six_runs):
    r = run("compare", *six_runs)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == ("| Group | Seeds | Clean | FGSM | PGD-10 | PGD-20 | CW-inf | APGD-CE | worst case "
                        "| grad evals / example |")
    rows = [ln for ln in lines[2:] if ln.startswith("| ")]
    assert len(rows) == 2
    for row, method in zip(rows, ("standard", "dynamic")):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:2] == [method, "0, 1, 2"]
        assert cells[2:8] == [cell(column(method, i)) for i in range(6)]
        assert cells[8] == cell(column(method, "worst"))
        assert cells[9] == cell(column(method, "cost"), digits=1)
    assert "eps 0.3, 1000 test examples per run" in r.stdout and "per training example" in r.stdout
    assert "Warning" not in r.stdout
    assert f"{six_runs[4]} (dynamic, seed 1): from {six_runs[4] / 'eval.json'}" in r.stdout


def test_a_single_run_is_a_plain_number(tmp_path):
    r = run("compare", hand_run(tmp_path, "dynamic", 0))
    assert r.exit_code == 0, r.output
    row = r.stdout.splitlines()[2]
    assert row == "| dynamic | 0 | 97.50 | 91.00 | 86.00 | 85.50 | 85.00 | 84.00 | 83.50 | 14.4 |"


def test_json_holds_groups_runs_seeds_and_statistics(six_runs):
    r = run("compare", *six_runs, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # one JSON object on stdout and nothing else
    assert out["eps"] == 0.3 and out["n"] == 1000 and out["warnings"] == []
    assert out["columns"] == list(ATTACKS) + ["worst-case", "grad_evals_per_example"]
    standard, dynamic = out["groups"]
    assert dynamic["label"] == "dynamic" and dynamic["seeds"] == [0, 1, 2]
    assert [r["run"] for r in dynamic["runs"]] == [str(p) for p in six_runs[3:]]
    assert [r["seed"] for r in dynamic["runs"]] == [0, 1, 2]
    assert dynamic["runs"][0]["from"] == str(six_runs[3] / "eval.json")
    pgd20 = dynamic["columns"]["pgd20"]
    assert pgd20["n"] == 3 and pgd20["mean"] == pytest.approx(statistics.mean(column("dynamic", 3)))
    assert pgd20["std"] == pytest.approx(statistics.stdev(column("dynamic", 3)))
    cost = standard["columns"]["grad_evals_per_example"]
    assert cost == {"mean": pytest.approx(22.0), "std": pytest.approx(0.0), "n": 3}
    assert "seed" not in dynamic["settings"] and dynamic["settings"]["method"] == "dynamic"


def test_csv_to_a_file_and_to_stdout(six_runs, tmp_path):
    target = tmp_path / "table.csv"
    r = run("compare", *six_runs, "--csv", target)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("| Group |")  # the table is still printed
    rows = list(csv.DictReader(target.open()))
    assert [row["group"] for row in rows] == ["standard", "dynamic"]
    assert rows[1]["seeds"] == "0 1 2" and rows[1]["runs"] == "3"
    assert float(rows[1]["clean_mean"]) == pytest.approx(statistics.mean(column("dynamic", 0)))
    assert float(rows[1]["clean_std"]) == pytest.approx(statistics.stdev(column("dynamic", 0)))
    assert rows[1]["apgd-ce_n"] == "3" and "worst-case_mean" in rows[1]
    assert float(rows[0]["grad_evals_per_example_mean"]) == pytest.approx(22.0)
    r = run("compare", *six_runs, "--csv", "-")
    assert r.exit_code == 0, r.output
    assert list(csv.DictReader(io.StringIO(r.stdout))) == rows  # CSV only on stdout
    assert run("compare", *six_runs, "--csv", "-", "--json").exit_code == 2
    r = run("compare", *six_runs, "--csv", tmp_path / "no" / "such" / "dir.csv")
    assert r.exit_code == 1 and "does not exist" in r.output


def test_baseline_gives_paired_differences_with_a_t_interval(six_runs):
    r = run("compare", *six_runs, "--baseline", "standard", "--json")
    assert r.exit_code == 0, r.output
    standard, dynamic = json.loads(r.stdout)["groups"]
    assert "vs_baseline" not in standard
    d = [a - b for a, b in zip(column("dynamic", 3), column("standard", 3))]  # PGD-20, by seed
    half = 4.303 * statistics.stdev(d) / math.sqrt(3)
    got = dynamic["vs_baseline"]["pgd20"]
    assert got["n"] == 3 and got["mean"] == pytest.approx(statistics.mean(d))
    assert got["low"] == pytest.approx(statistics.mean(d) - half, abs=1e-3)
    assert got["high"] == pytest.approx(statistics.mean(d) + half, abs=1e-3)
    table = run("compare", *six_runs, "--baseline", "standard").stdout
    assert "Difference to standard, paired by seed" in table
    assert f"{statistics.mean(d):+.2f} [{statistics.mean(d) - half:+.2f}, {statistics.mean(d) + half:+.2f}] (n=3)" in table
    r = run("compare", *six_runs, "--baseline", "pgd")
    assert r.exit_code == 1 and "'standard', 'dynamic'" in r.output


def test_warns_when_runs_were_evaluated_differently(tmp_path):
    a, b = hand_run(tmp_path, "dynamic", 0), hand_run(tmp_path, "dynamic", 1, eps=0.1, n=500)
    r = run("compare", a, b)
    assert r.exit_code == 0, r.output
    assert "different eps or numbers of examples: eps 0.1 n 500, eps 0.3 n 1000" in r.stdout
    assert "dynamic, eps 0.1" in r.stdout and "dynamic, eps 0.3" in r.stdout  # two groups
    r = run("compare", a, b, "--json")
    assert "different eps" in json.loads(r.stdout)["warnings"][0] and "Warning:" in r.stderr


def test_the_same_run_twice_counts_once(tmp_path):
    a = hand_run(tmp_path, "dynamic", 0)
    out = json.loads(run("compare", a, a / "checkpoint.npz", "--json").stdout)
    assert len(out["groups"]) == 1 and out["groups"][0]["seeds"] == [0]
    assert out["warnings"] == [f"{a / 'checkpoint.npz'} is the checkpoint of {a} again; counted once"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_mnist):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    r = run("train", "--backend", "numpy", "--dataset", "mnist", "--data-dir", tiny_mnist, "--limit", "64",
            "--epochs", "1", "--batch-size", "32", "--steps", "3", "--eval-limit", "16", "--eval-steps", "1",
            "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_every_run_is_checked_before_anything_is_evaluated(real_run, tmp_path, monkeypatch):
    def no_evaluation(*args, **kwargs):
        raise AssertionError("compare evaluated a run before checking the others")

    monkeypatch.setattr("minidyn.evaluation.evaluate.evaluate_attacks", no_evaluation)
    monkeypatch.setattr("minidyn.evaluation.checkpoints.load_checkpoint", no_evaluation)
    missing = tmp_path / "missing"
    r = run("compare", real_run, missing, "--limit", "16")
    assert r.exit_code == 1
    assert r.output.strip() == f"Error: {missing}: no such run directory or checkpoint"
    (tmp_path / "empty").mkdir()
    r = run("compare", real_run, tmp_path / "empty", missing)
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "holds no checkpoint" in r.output and str(missing) in r.output and "(2 of 3 runs)" in r.output
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    r = run("compare", real_run, bad)
    assert r.exit_code == 1 and "is not a valid minidyn checkpoint" in r.output and "eval " not in r.output


def test_runs_without_eval_json_are_evaluated_with_the_default_attacks(real_run):
    r = run("compare", real_run, "--limit", "16", "--apgd-steps", "2", "--json")
    assert r.exit_code == 0, r.output
    (group,) = json.loads(r.stdout)["groups"]
    (rec,) = group["runs"]
    assert rec["from"] == "computed now" and rec["n"] == 16 and tuple(rec["attacks"]) == DEFAULT_ATTACKS
    acc = rec["accuracy"]
    assert set(acc) == set(DEFAULT_ATTACKS) | {"worst-case"}
    assert acc["worst-case"] <= min(acc[a] for a in DEFAULT_ATTACKS)
    evals = sum(json.loads(line)["grad_evals"] for line in (real_run / "metrics.jsonl").read_text().splitlines())
    assert rec["grad_evals_per_example"] == pytest.approx(evals / 64)
    assert group["columns"]["apgd-ce"] == {"mean": acc["apgd-ce"], "std": None, "n": 1}


def test_compare_reads_what_eval_save_wrote(real_run, tmp_path):
    shutil.copytree(real_run, tmp_path / "tiny")
    real_run = tmp_path / "tiny"
    r = run("eval", real_run, "--attacks", "clean,fgsm,pgd10", "--save", "--limit", "16", "--apgd-steps", "2")
    assert r.exit_code == 0, r.output
    saved = json.loads((real_run / "eval.json").read_text())
    r = run("compare", real_run, real_run)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len([ln for ln in lines if ln.startswith("| dynamic | 0 |")]) == 1  # given twice, one row
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[2:5] == [f"{saved['accuracy'][a]:.2f}" for a in ("clean", "fgsm", "pgd10")]
    assert cells[5:8] == ["-", "-", "-"]  # PGD-20, CW, APGD-CE were not in this eval.json
    assert f"from {real_run / 'eval.json'}; attacks clean, fgsm, pgd10" in r.stdout


def test_compare_shows_the_family_s_methods_and_the_combinations_apart(tmp_path, tiny_mnist):
    """Runs of FAT, TRADES and FOSC-stopped TRADES, trained here on numpy: compare groups them
    by their settings, so TRADES with and without FOSC's stop are two groups."""
    common = ["--backend", "numpy", "--model", "softmax", "--dataset", "mnist", "--data-dir", tiny_mnist,
              "--epochs", "1", "--batch-size", "32", "--steps", "2", "--eval-limit", "8", "--eval-steps", "1"]
    for name, extra in (("fat", []), ("trades", []), ("trades-fosc", ["--stop", "fosc", "--c-max", "0.01"])):
        method = name.split("-")[0]
        result = run("train", "--method", method, *common, *extra, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
    result = run("compare", tmp_path / "fat", tmp_path / "trades", tmp_path / "trades-fosc",
                 "--limit", "16", "--apgd-steps", "2", "--json")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)["groups"]
    assert len(groups) == 3
    assert sorted(g["settings"]["method"] for g in groups) == ["fat", "trades", "trades"]
    assert sorted(str(g["settings"]["stop"]) for g in groups) == ["None", "None", "fosc"]
