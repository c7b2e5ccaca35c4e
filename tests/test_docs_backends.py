"""docs/backends.md's complete minimal backend runs as a script and prints what the page shows."""
import pathlib

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "backends.md"


def test_the_minimal_backend_of_the_docs_runs_pgd_fosc_and_a_training_step(run_documented_code):
    run_documented_code(DOC.read_text(), "## A complete minimal backend", "It prints")
