"""Fixtures shared by the CLI tests."""
import pytest
from click.testing import CliRunner

from minidyn.cli.main import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-epoch numpy MNIST run on 256 digits, trained once per test module."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    r = CliRunner().invoke(main, ["train", "--backend", "numpy", "--limit", "256", "--epochs", "2",
                                  "--eval-limit", "64", "--eval-steps", "2", "--batch-size", "256",
                                  "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out
