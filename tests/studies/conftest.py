"""A tiny study: numpy softmax on 150 of the embedded digits, 2 epochs, seconds per cell."""
import textwrap

import pytest

TINY = textwrap.dedent("""\
    # tiny: a test study
    [train]
    backend = "numpy"
    model = "softmax"
    epochs = 2
    limit = 150
    val_size = 60
    eval_limit = 30
    eval_steps = 2
    steps = 2
    batch_size = 50
    lr = 0.05
    eps = 0.1
    lr_milestones = [2]
    c_max = "auto"

    [grid]
    method = ["standard", "dynamic"]
    seed = [0, 1]

    [eval]
    attacks = ["clean", "fgsm", "pgd10"]
    limit = 40
    batch_size = 40
    """)


@pytest.fixture(scope="session")
def tiny_text():
    return TINY


@pytest.fixture
def tiny_spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
