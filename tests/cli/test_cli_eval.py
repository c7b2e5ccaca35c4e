"""`minidyn eval` through click's CliRunner, on a tiny numpy run (`analyze`: test_cli_analyze.py,
`compare`: test_cli_compare.py)."""
import json

from click.testing import CliRunner

from minidyn.cli.main import main

FAST = ["--limit", "48", "--batch-size", "32", "--apgd-steps", "5"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)



def test_eval_json_holds_every_requested_attack(tiny_run):
    attacks = "clean,fgsm,pgd10,pgd20,cw,apgd-ce,apgd-dlr"
    r = run("eval", tiny_run / "checkpoint.npz", "--attacks", attacks, "--json", *FAST)
    assert r.exit_code == 0, r.output
    acc = json.loads(r.stdout)["accuracy"]  # stdout is the JSON object and nothing else
    assert set(acc) == set(attacks.split(",")) | {"worst-case"}
    assert all(0 <= v <= 100 for v in acc.values())
    assert acc["worst-case"] <= min(v for k, v in acc.items() if k != "worst-case")


def test_eval_table_save_and_black_box(tiny_run):
    r = run("eval", tiny_run, "--attacks", "clean,fgsm,pgd10", "--save", *FAST)
    assert r.exit_code == 0, r.output
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith("eval")]  # no progress-bar label without a terminal
    assert "PGD-10" in r.stdout and "worst case" in r.stdout and "white-box" in r.stdout
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert saved["n"] == 48 and saved["method"] == "dynamic" and set(saved["accuracy"]) >= {"pgd10", "worst-case"}
    bb = run("eval", tiny_run, "--attacks", "clean,fgsm,pgd10", "--source", tiny_run / "checkpoint.npz",
             "--json", *FAST)
    out = json.loads(bb.stdout)
    assert out["accuracy"] == saved["accuracy"]  # source == target: white-box exactly
    assert out["source"] == str(tiny_run / "checkpoint.npz") and saved["source"] is None


def test_eval_json_names_what_it_evaluated(tiny_run):
    r = run("eval", tiny_run, "--attacks", "clean,pgd10", "--json", "--seed", "3", "--restarts", "2", *FAST)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {k: out[k] for k in ("checkpoint", "model", "method", "dataset", "epoch", "eps", "n", "seed",
                                "restarts", "apgd_steps", "source", "attacks")} == {
        "checkpoint": str(tiny_run / "checkpoint.npz"), "model": "mlp", "method": "dynamic",
        "dataset": "mnist-sample", "epoch": 2, "eps": 0.3, "n": 48, "seed": 3, "restarts": 2,
        "apgd_steps": 5, "source": None, "attacks": ["clean", "pgd10"]}
    assert set(out["accuracy"]) == {"clean", "pgd10", "worst-case"}
    assert isinstance(out["flags"], list) and out["checks"]["grad"]["n"] == 48
    saved = run("eval", tiny_run, "--attacks", "clean,pgd10", "--json", "--seed", "3", "--restarts", "2",
                "--save", *FAST)
    on_disk = json.loads((tiny_run / "eval.json").read_text())
    assert json.loads(saved.stdout) == on_disk == out  # --json prints what --save writes


def test_eval_reports_bad_input_in_one_line(tmp_path, tiny_run):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(b"not a zip")
    r = run("eval", bad)
    assert r.exit_code == 1 and r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1
    r = run("eval", tiny_run, "--attacks", "pgd7")
    assert r.exit_code == 1 and "unknown attack 'pgd7'" in r.output
    assert run("eval", tiny_run, "--eps", "2").exit_code == 2


def test_eval_autoattack_prints_each_stage_and_writes_robustbench_json(tiny_run, tmp_path):
    target = tmp_path / "model_info.json"
    r = run("eval", tiny_run, "--attacks", "clean,autoattack", "--robustbench-json", target,
            "--limit", "8", "--apgd-steps", "5")
    assert r.exit_code == 0, r.output
    assert "AutoAttack, robust accuracy after each stage" in r.stdout
    lines = r.stdout.splitlines()
    after = lines.index("AutoAttack, robust accuracy after each stage (each on the examples still robust):")
    assert [ln.split()[0] for ln in lines[after + 1:after + 6]] == ["clean", "APGD-CE", "APGD-T", "FAB-T", "Square"]
    info = json.loads(target.read_text())
    out = json.loads(run("eval", tiny_run, "--attacks", "clean,autoattack", "--json", "--limit", "8",
                         "--apgd-steps", "5").stdout)
    assert info["autoattack_acc"] == f"{out['accuracy']['autoattack']:.2f}"
    assert info["clean_acc"] == f"{out['accuracy']['clean']:.2f}" == f"{out['stages']['autoattack']['clean']:.2f}"
    assert (info["eps"], info["n_examples"], info["threat_model"], info["dataset"]) == ("0.3", 8, "Linf", "mnist-sample")
    assert info["architecture"] == "mlp" and info["additional_data"] is False
    assert info["unreliable"] is bool(out["flags"])


def test_eval_robustbench_json_needs_autoattack_and_says_so_at_once(tiny_run, tmp_path):
    r = run("eval", tiny_run, "--attacks", "clean,pgd10", "--robustbench-json", tmp_path / "x.json")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "needs AutoAttack's number: add autoattack to --attacks" in r.output
    assert not (tmp_path / "x.json").exists()


def test_eval_convergence_prints_and_saves_the_fosc_of_each_iterative_attack(tiny_run):
    r = run("eval", tiny_run, "--attacks", "clean,fgsm,pgd10", "--convergence", *FAST)
    assert r.exit_code == 0, r.output
    assert "convergence (normalised FOSC" in r.stdout and "PGD-10     median" in r.stdout
    out = json.loads(run("eval", tiny_run, "--attacks", "clean,fgsm,pgd10", "--convergence", "--json", *FAST).stdout)
    assert set(out["checks"]["fosc"]) == {"pgd10"}
    assert set(out["checks"]["fosc"]["pgd10"]) == {"n", "median", "above", "threshold"}
    plain = json.loads(run("eval", tiny_run, "--attacks", "clean,fgsm,pgd10", "--json", *FAST).stdout)
    assert "fosc" not in plain["checks"] and plain["accuracy"] == out["accuracy"]
