"""The bad-input tests' fixture: the finished runs every case starts from (helpers.py)."""
import importlib.util

import pytest

from .helpers import train_finished_runs


@pytest.fixture(scope="session")
def finished_runs(tiny_mnist, tmp_path_factory):
    """{backend: a finished run}: numpy and, with torch installed, torch (softmax on the 96
    digits of tiny_mnist, 2 epochs; helpers.tiny_args). Copy one before changing it."""
    backends = ("numpy", "torch") if importlib.util.find_spec("torch") else ("numpy",)
    return train_finished_runs(tiny_mnist, tmp_path_factory.mktemp("finished"), backends)
