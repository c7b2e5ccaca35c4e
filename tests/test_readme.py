"""The README's tour runs as a script and prints what the README shows."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_tour_prints_what_the_readme_shows(tmp_path):
    text = README.read_text()
    tour = text.split("## A short tour", 1)[1]
    code = re.search(r"```python\n(.*?)```", tour, re.S).group(1)
    shown = re.search(r"prints[^\n]*\n(?:[^\n]+\n)*?\n((?:    [^\n]*\n)+)", tour).group(1)
    script = tmp_path / "tour.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == shown.split()
