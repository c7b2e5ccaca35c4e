"""The course where torch is not installed: `import torch` fails in a fresh interpreter, which
then starts a solution workspace, checks it, trains the capstone on a tiny budget and evaluates
its run directory with `minidyn eval`, and checks a stub workspace (which fails)."""
import json
import subprocess
import sys

SCRIPT = r"""
import json, sys
sys.modules["torch"] = None  # `import torch` raises ImportError, as where it is not installed
from click.testing import CliRunner
from minidyn.cli.main import main

ws, stubs = sys.argv[1], sys.argv[2]
runner, codes = CliRunner(), {}
def run(name, *args):
    result = runner.invoke(main, list(args))
    codes[name] = [result.exit_code, result.output[-2000:]]
run("start", "course", "start", "--solutions", ws)
run("stubs", "course", "start", stubs)
run("check", "course", "check", "--dir", ws, "--max-examples", "10")
run("check_stubs", "course", "check", "--dir", stubs, "--max-examples", "3")
run("capstone", "course", "run", ws, "--epochs", "1", "--limit", "64", "--eval-limit", "20")
run("eval", "eval", ws + "/run", "--limit", "50", "--attacks", "clean,pgd20")
codes["torch"] = sys.modules.get("torch") is None
print(json.dumps(codes))
"""


def test_the_course_runs_without_torch(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ws"), str(tmp_path / "stubs")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes.pop("torch") is True  # nothing imported torch for real
    expected = {"start": 0, "stubs": 0, "check": 0, "check_stubs": 1, "capstone": 0, "eval": 0}
    assert {name: code for name, (code, _) in codes.items()} == expected, codes
    assert "6 of 6 tasks pass" in codes["check"][1]
    assert "0 of 6 tasks pass" in codes["check_stubs"][1]
    assert "run directory:" in codes["capstone"][1]
    assert "PGD-20" in codes["eval"][1] and "checkpoint.npz" in codes["eval"][1]
    assert (tmp_path / "ws" / "run" / "fosc" / "epoch_000.npy").is_file()
