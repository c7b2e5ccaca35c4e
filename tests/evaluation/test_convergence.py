"""minidyn.evaluation.convergence: the normalised FOSC of an attack's points, its summary, and the
"not converged" flag of `minidyn eval` (trips on one-step PGD, silent on PGD-100)."""
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from minidyn.backend import get_backend
from minidyn.data import load_dataset
from minidyn.evaluation import attack_table
from minidyn.evaluation.attack_table import ATTACKS
from minidyn.evaluation.convergence import THRESHOLD, FoscSummary, convergence_flag, normalised_fosc
from minidyn.evaluation.evaluate import checks_applied, evaluate_attacks, sanity_flags

B = get_backend("numpy", dtype="float64")


def test_normalised_fosc_is_one_at_the_natural_point_and_zero_at_the_best_vertex():
    x0 = np.array([[0.5, 0.5, 0.5, 0.5]])
    g = np.array([[1.0, -2.0, 0.5, 0.0]])
    eps = 0.1
    best = x0 + eps * np.sign(g)
    assert normalised_fosc(B, x0, x0, g, eps) == pytest.approx([1.0])
    assert normalised_fosc(B, best, x0, g, eps) == pytest.approx([0.0])
    worst = x0 - eps * np.sign(g)
    assert normalised_fosc(B, worst, x0, g, eps) == pytest.approx([2.0])
    # inside [0, 1]: c / (eps ||g||_1), Eq. 4 over eps ||g||_1
    x = x0 + np.array([[0.05, 0.0, -0.1, 0.02]])
    eq4 = eps * np.abs(g).sum() - ((x - x0) * g).sum()
    assert normalised_fosc(B, x, x0, g, eps) == pytest.approx([eq4 / (eps * np.abs(g).sum())])


def test_a_point_converged_into_the_pixel_boxs_corner_reads_zero():
    """A pixel at 0 whose gradient points down cannot move: that share of eps ||g||_1 is no gain
    any attack may take, so the best point of the box reads 0 (the ball-only FOSC reads 0.5)."""
    x0 = np.array([[0.0, 0.5]])
    g = np.array([[-1.0, 1.0]])
    best = np.array([[0.0, 0.6]])
    assert normalised_fosc(B, best, x0, g, 0.1) == pytest.approx([0.0])
    assert normalised_fosc(B, best, x0, g, 0.1, bounds=None) == pytest.approx([0.5])


def test_zero_gradient_reads_zero_and_the_summary_counts_points_above_the_threshold():
    assert normalised_fosc(B, np.ones((1, 3)) * 0.5, np.ones((1, 3)) * 0.5, np.zeros((1, 3)), 0.1) == [0.0]
    summary = FoscSummary.of(np.array([0.1, 0.2, 0.7, 0.9, 0.6]))
    assert (summary.n, summary.median, summary.above) == (5, 0.6, 0.6)
    assert not summary.converged and "not converged" in convergence_flag("PGD-1", summary.to_dict())
    assert FoscSummary.of(np.array([0.1, 0.3])).converged  # half above: not more than SHARE
    assert FoscSummary.of(np.array([0.25, 0.25, 0.3])).converged  # 0.25 itself is not above
    assert FoscSummary.of(np.zeros(0)).to_dict() == {"n": 0, "median": None, "above": None, "threshold": THRESHOLD}
    assert convergence_flag("PGD-1", FoscSummary.of(np.zeros(0)).to_dict()) is None


@pytest.fixture(scope="module")
def trained():
    """An MLP trained naturally on 2,000 digits of the embedded MNIST sample (2 epochs, torch)."""
    T = get_backend("torch", device="cpu")
    train = load_dataset("mnist-sample", "train")
    model = T.make_model("mlp", (1, 28, 28), 10, 0)
    optimizer = T.make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=0.0)
    for _ in range(2):
        for start in range(0, 2000, 50):
            x = T.asarray(train.x[start:start + 50], dtype="float") / 255.0
            T.train_step(model, optimizer, x, T.asarray(train.y[start:start + 50]))
    return T, model, load_dataset("mnist-sample", "test")


def pgd_row(steps: int):
    """The pgd10 row, running PGD-`steps` (step eps/4, random start) instead."""
    return replace(ATTACKS["pgd10"], label=f"PGD-{steps}", run=partial(attack_table._pgd, steps=steps))


@pytest.mark.parametrize("steps, flagged", [(1, True), (2, True), (100, False)])
def test_the_flag_trips_on_one_step_pgd_and_not_on_pgd_100(trained, monkeypatch, steps, flagged):
    T, model, data = trained
    monkeypatch.setitem(ATTACKS, "pgd10", pgd_row(steps))
    result = evaluate_attacks(T, model, data, eps=0.05, attacks=["clean", "pgd10"], limit=200, convergence=True)
    summary = result.checks["fosc"]["pgd10"]
    assert summary["n"] == int(result.correct["pgd10"].sum()) >= 20
    flags = [f for f in sanity_flags(result) if "not converged" in f]
    assert bool(flags) == flagged, (summary, flags)
    if flagged:
        assert flags[0].startswith(f"PGD-{steps} not converged") and summary["median"] > THRESHOLD
    else:
        assert summary["median"] < 0.1
        assert any("near stationary" in line for line in checks_applied(result))


def test_convergence_is_off_by_default_and_leaves_the_accuracies_alone(trained):
    T, model, data = trained
    kw = dict(eps=0.05, attacks=["clean", "pgd10", "apgd-t"], limit=40, apgd_steps=5)
    plain = evaluate_attacks(T, model, data, **kw)
    checked = evaluate_attacks(T, model, data, convergence=True, **kw)
    assert "fosc" not in plain.checks and set(checked.checks["fosc"]) == {"pgd10", "apgd-t"}
    for name in kw["attacks"]:
        np.testing.assert_array_equal(plain.correct[name], checked.correct[name])


def test_black_box_has_no_convergence_check(trained):
    T, model, data = trained
    result = evaluate_attacks(T, model, data, eps=0.05, attacks=["pgd10"], limit=16, convergence=True,
                              source=(T, model), source_name="same")
    assert "fosc" not in result.checks
