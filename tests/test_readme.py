"""The README's tour runs as a script and prints what the README shows."""
import pathlib

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_tour_prints_what_the_readme_shows(run_documented_code):
    run_documented_code(README.read_text(), "## A short tour", "prints")
