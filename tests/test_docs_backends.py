"""docs/backends.md's complete minimal backend runs as a script and prints what the page shows."""
import pathlib
import re
import subprocess
import sys

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "backends.md"


def test_the_minimal_backend_of_the_docs_runs_pgd_fosc_and_a_training_step(tmp_path):
    section = DOC.read_text().split("## A complete minimal backend", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"It prints\n\n((?:    [^\n]*\n)+)", section).group(1)
    script = tmp_path / "minimal_backend.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == shown.split()
