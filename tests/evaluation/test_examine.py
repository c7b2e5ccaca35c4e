"""minidyn.evaluation.examine: `minidyn eval`'s attacks, checks and FOSC on a plain nn.Sequential,
from numpy arrays or torch tensors; the docs' example re-made."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from minidyn.errors import ConfigError
from minidyn.evaluation.examine import examine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sequential():
    """A small nn.Sequential on 1x6x6 inputs, 4 classes (the class: the brightest row pair),
    trained for a moment, and 48 test examples."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)

    def images(n):
        y = rng.integers(0, 4, n)
        x = rng.uniform(0, 0.6, (n, 1, 6, 6)).astype(np.float32)
        for i, k in enumerate(y):
            x[i, 0, k:k + 2] += 0.4
        return x.clip(0, 1), y

    x_train, y_train = images(256)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(5):
        for i in range(0, 256, 32):
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x_train[i:i + 32])),
                                               torch.from_numpy(y_train[i:i + 32]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model, *images(48)


def test_examine_a_sequential_from_numpy_or_torch(sequential):
    model, x, y = sequential
    before = [p.detach().clone() for p in model.parameters()]
    report = examine(model, x, y, eps=0.1, attacks=("clean", "fgsm", "pgd10"))
    assert list(report.accuracy) == ["clean", "fgsm", "pgd10", "worst-case"]
    assert report.accuracy["clean"] > 80 and report.accuracy["pgd10"] < report.accuracy["clean"]
    assert set(report.fosc) == {"pgd10"} and report.fosc["pgd10"]["n"] == int(report.result.correct["pgd10"].sum())
    assert report.flags == [] and "no flags" in str(report)
    again = examine(model, torch.from_numpy(x), torch.from_numpy(y), eps=0.1, attacks=("clean", "fgsm", "pgd10"))
    assert again.accuracy == report.accuracy and again.fosc == report.fosc
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.training  # the mode it came in with


def test_examine_flags_what_minidyn_eval_flags(sequential):
    """A model whose input gradient is zero (a detached input) hides from every gradient attack."""
    model, x, y = sequential

    class Stop(nn.Module):
        def forward(self, t):
            return t.detach() + 0 * t  # the value of t, a gradient of exactly zero

    report = examine(nn.Sequential(Stop(), model), x, y, eps=0.1, attacks=("clean", "fgsm"))
    assert any("exactly zero" in flag for flag in report.flags)


@pytest.mark.parametrize("change, message", [
    (lambda x, y: (x * 2, y), "must lie in \\[0, 1\\]"),
    (lambda x, y: (x, y[:-1]), "integer labels"),
    (lambda x, y: (x, y + 4), "labels must be in 0..3"),
    (lambda x, y: (x, y.astype(np.float32)), "integer labels"),
    (lambda x, y: (x[:, 0, 0, 0], y), "non-empty \\(N, ...\\)"),
])
def test_bad_inputs_are_one_line_errors(sequential, change, message):
    model, x, y = sequential
    with pytest.raises(ConfigError, match=message):
        examine(model, *change(x, y), eps=0.1, attacks=("clean",))


def test_examine_takes_only_torch_modules_and_valid_eps(sequential):
    model, x, y = sequential
    with pytest.raises(ConfigError, match="nn.Module"):
        examine(lambda t: t, x, y, eps=0.1)
    with pytest.raises(ConfigError, match="eps"):
        examine(model, x, y, eps=2.0)


def test_the_docs_example_prints_what_the_docs_show():
    text = (ROOT / "docs" / "evaluation.md").read_text()
    shown = re.search(r"<!-- output of docs/examples/examine_sequential.py -->\n```\n(.*?)```", text, re.S)
    assert shown, "docs/evaluation.md lost the example's output block"
    run = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "examine_sequential.py")],
                         capture_output=True, text=True, check=True)
    assert run.stdout == shown.group(1)
