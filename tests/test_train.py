"""The training loop: one epoch of each method, determinism, and augmentation."""
import numpy as np
import pytest

from minidyn import get_backend
from minidyn.config import METHODS, TrainConfig
from minidyn.data import load_dataset
from minidyn.methods import attack_plan
from minidyn.train import train_epoch

DATA = load_dataset("mnist-sample", "train").subset(128)


def one_epoch(**kw):
    B = get_backend("numpy")
    cfg = TrainConfig(backend="numpy", epochs=4, batch_size=64, **kw).resolved()
    model = B.make_model("mlp", (1, 28, 28), 10, seed=0)
    opt = B.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    stats = train_epoch(B, model, opt, DATA, cfg, 0, attack_plan(cfg, 0))
    return stats, B.get_params(model)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_one_epoch(method):
    stats, _ = one_epoch(method=method)
    assert np.isfinite(stats.loss) and 0 <= stats.acc <= 100
    expected_steps = {"unsecured": 0, "standard": 10, "curriculum": 0, "fgsm-pgd": 1}
    if method in expected_steps:
        assert np.all(stats.steps == expected_steps[method])
    else:  # dynamic at c_t = c_max: some examples stop before K steps
        assert 1 <= stats.steps.min() and stats.steps.mean() < 10
    # an example that took s steps cost gradients at x^0 .. x^s: s + 1 evaluations, whether
    # it stopped early (FOSC <= c_t at x^s) or ran to K (FOSC recorded at the final point)
    expected = 0 if method in ("unsecured", "curriculum") else int((stats.steps + 1).sum())
    assert stats.grad_evals == expected


def test_an_epoch_is_a_function_of_the_seed():
    a, pa = one_epoch(method="dynamic", seed=3)
    b, pb = one_epoch(method="dynamic", seed=3)
    c, pc = one_epoch(method="dynamic", seed=4)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not all(np.array_equal(pa[k], pc[k]) for k in pa)


def test_augmentation_is_applied_and_reproducible():
    plain, p0 = one_epoch(method="unsecured", augment=False)
    aug1, p1 = one_epoch(method="unsecured", augment=True)
    aug2, p2 = one_epoch(method="unsecured", augment=True)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert not all(np.array_equal(p0[k], p1[k]) for k in p0)
