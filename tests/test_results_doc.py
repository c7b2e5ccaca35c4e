"""docs/results.md's claims table is what `minidyn study claims` makes from the published studies
in docs/results/, character for character: no number in it was typed."""
import pathlib
import re

from click.testing import CliRunner

from minidyn.cli.main import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMAND = ["study", "claims", "docs/results/claims.toml", "--studies", "docs/results"]


def test_the_claims_table_is_the_commands_output(monkeypatch):
    monkeypatch.chdir(ROOT)  # the command names its paths as given: relative to the repository
    made = CliRunner().invoke(main, COMMAND)
    assert made.exit_code == 0, made.output
    shown = re.search(r"<!-- claims -->\n(.*?)<!-- /claims -->", (ROOT / "docs" / "results.md").read_text(), re.S)
    assert shown is not None, "docs/results.md has no <!-- claims --> ... <!-- /claims --> block"
    assert shown.group(1) == made.output, ("docs/results.md's claims table is not the output of "
                                           "`minidyn " + " ".join(COMMAND) + "`: paste it again")
