"""The Square attack (minidyn.square) and its row of the evaluation table."""
import numpy as np
import pytest

from minidyn.attacks import pgd
from minidyn.data import Dataset
from minidyn.errors import ConfigError
from minidyn.evaluation.attack_table import ATTACKS
from minidyn.evaluation.evaluate import checks_applied, evaluate_attacks, sanity_flags
from minidyn.square import margin, p_selection, square, square_side

SHAPE = (1, 4, 4)


def reference_p_selection(it, n_queries, p_init=0.8, rescale_schedule=True):
    """autoattack/square.py's SquareAttack.p_selection (lines 192-219), transcribed."""
    if rescale_schedule:
        it = int(it / n_queries * 10000)
    if 10 < it <= 50:
        return p_init / 2
    elif 50 < it <= 200:
        return p_init / 4
    elif 200 < it <= 500:
        return p_init / 8
    elif 500 < it <= 1000:
        return p_init / 16
    elif 1000 < it <= 2000:
        return p_init / 32
    elif 2000 < it <= 4000:
        return p_init / 64
    elif 4000 < it <= 6000:
        return p_init / 128
    elif 6000 < it <= 8000:
        return p_init / 256
    elif 8000 < it:
        return p_init / 512
    return p_init


@pytest.mark.parametrize("n_queries", [5000, 10000, 1000, 300, 37, 1])
def test_the_p_schedule_is_the_references_at_every_iteration(n_queries):
    for p_init in (0.8, 0.05):
        for rescale in (True, False):
            got = [p_selection(i, n_queries, p_init, rescale) for i in range(n_queries)]
            assert got == [reference_p_selection(i, n_queries, p_init, rescale) for i in range(n_queries)]
    # the rescaled 5,000-query schedule's boundaries: iterations 5, 25, 100, ..., 4000 of 10,000 / 2
    assert [p_selection(i, rescale=True) for i in (5, 6, 25, 26, 4000, 4001)] == \
        [0.8, 0.4, 0.4, 0.2, 0.8 / 256, 0.8 / 512]


def test_the_default_schedule_is_autoattack_s_standard_one():
    """autoattack.py lines 42-43: the standard suite's Square runs resc_schedule=False, so at
    5,000 queries p halves after iterations 10, 50, ..., 4000 and never reaches p_init / 256."""
    assert [p_selection(i) for i in (10, 11, 50, 51, 4000, 4001, 4999)] == \
        [0.8, 0.4, 0.4, 0.2, 0.8 / 64, 0.8 / 128, 0.8 / 128]


def test_the_square_side_is_the_references():
    assert square_side(0.8, 28, 28) == 25 and square_side(0.8 / 512, 28, 28) == 1
    assert square_side(0.8, 32, 32) == 29 and square_side(1.0, 4, 7) == 4  # at most min(H, W)


def tiny(backend, n=24, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    model = backend.make_model("mlp", SHAPE, classes, seed)
    return model, rng.random((n,) + SHAPE), rng.integers(0, classes, n)


def test_points_stay_feasible_and_the_margin_never_rises(backend):
    B, eps = backend, 0.1
    model, x0, y0 = tiny(B)
    x, y = B.asarray(x0), B.asarray(y0)
    result = square(model, x, y, eps=eps, n_queries=300, rng=B.rng(3), backend=B)
    adv = B.to_numpy(result.x_adv).astype(np.float64)
    assert np.all(np.abs(adv - x0) <= eps + 1e-6) and adv.min() >= 0 and adv.max() <= 1
    clean = B.to_numpy(B.argmax(B.logits(model, x))) == y0
    got, start = B.to_numpy(result.margin), B.to_numpy(result.margin_start)
    assert np.all(got[clean] <= start[clean]) and (got[clean] < start[clean]).any()
    np.testing.assert_allclose(got, B.to_numpy(margin(B, B.logits(model, result.x_adv), y)), atol=1e-5)
    np.testing.assert_array_equal(adv[~clean], B.to_numpy(x)[~clean])  # never attacked
    queries = B.to_numpy(result.queries)
    assert np.all(queries[~clean] == 0) and np.all((queries[clean] >= 1) & (queries[clean] <= 301))
    fooled = B.to_numpy(result.found)
    assert np.all(B.to_numpy(B.argmax(B.logits(model, result.x_adv)))[fooled] != y0[fooled])
    assert np.all(queries[clean & ~fooled] == 301)  # robust examples spend the whole budget


def test_eps_zero_returns_x_without_a_query(backend):
    B = backend
    model, x0, y0 = tiny(B)
    result = square(model, B.asarray(x0), B.asarray(y0), eps=0.0, n_queries=50, rng=B.rng(0), backend=B)
    np.testing.assert_array_equal(B.to_numpy(result.x_adv), B.to_numpy(B.asarray(x0)))
    assert B.to_numpy(result.queries).sum() == 0


def test_it_finds_adversarial_examples_where_pgd_does_on_a_linear_model(backend64):
    B, eps, n = backend64, 0.15, 32
    model = B.make_model("softmax", (1, 5, 5), 2, 0)
    rng = np.random.default_rng(1)
    x, y = B.asarray(rng.random((n, 1, 5, 5))), B.asarray(rng.integers(0, 2, n))
    by_pgd = B.to_numpy(B.argmax(B.logits(model, pgd(
        model, x, y, eps=eps, step_size=eps / 4, steps=20, random_start=False,
        final_stats=False, backend=B).x_adv))) != B.to_numpy(y)
    result = square(model, x, y, eps=eps, n_queries=500, rng=B.rng(2), rescale_schedule=True, backend=B)  # a short budget: the whole schedule
    by_square = B.to_numpy(result.found)
    assert 0 < by_pgd.sum() < n  # the check has examples on both sides
    np.testing.assert_array_equal(by_square, by_pgd)


def test_bad_settings_are_config_errors(backend):
    B = backend
    model, x0, y0 = tiny(B, n=2)
    x, y = B.asarray(x0), B.asarray(y0)
    for kwargs, message in [(dict(eps=1.5), "eps"), (dict(eps=0.1, n_queries=0), "n_queries"),
                            (dict(eps=0.1, p_init=0.0), "p_init")]:
        with pytest.raises(ConfigError, match=message):
            square(model, x, y, backend=B, **kwargs)
    with pytest.raises(ConfigError, match=r"images \(B, C, H, W\)"):
        square(model, B.asarray(x0.reshape(2, -1)), y, eps=0.1, backend=B)


def test_the_evaluation_row_is_gradient_free_and_below_clean():
    from minidyn.backend import get_backend

    B = get_backend("numpy", dtype="float64")
    rng = np.random.default_rng(0)
    data = Dataset("tiny", rng.integers(0, 256, (32, 1, 4, 4), dtype=np.uint8),
                   rng.integers(0, 4, 32).astype(np.int64), 4, "test")
    model = B.make_model("mlp", SHAPE, 4, 0)
    row = ATTACKS["square"]
    assert row.random_start and not row.iterative and not row.default  # not held to FGSM's ordering
    res = evaluate_attacks(B, model, data, eps=0.05, attacks="clean,fgsm,square", batch_size=16)
    acc = res.accuracy()
    assert acc["square"] < acc["clean"]
    assert not (res.correct["square"] & ~res.correct["clean"]).any()
    assert sanity_flags(res) == []
    applied = checks_applied(res)
    assert not any("Square" in line and "FGSM accuracy" in line for line in applied)
    assert res.checks["eps0"]["differs"]["square"] == 0 and res.checks["recount"]["differs"]["square"] == 0
