"""minidyn.evaluate: the attack registry, worst case, restarts, black-box and sanity flags."""
import numpy as np
import pytest

from minidyn.data import Dataset
from minidyn.errors import ConfigError
from minidyn.evaluate import (ATTACKS, WORST, EvalResult, eps_curve_flags, evaluate_attacks,
                              parse_attacks, sanity_flags)


def tiny_data(n=40, seed=0, classes=4):
    rng = np.random.default_rng(seed)
    return Dataset("tiny", rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8),
                   rng.integers(0, classes, n).astype(np.int64), classes, "test")


@pytest.fixture(scope="module")
def setup():
    from minidyn.backend import get_backend

    B = get_backend("numpy", dtype="float64")
    return B, B.make_model("mlp", (1, 4, 4), 4, 0), tiny_data()


def test_every_attack_runs_and_worst_case_is_below_each(setup):
    B, model, data = setup
    res = evaluate_attacks(B, model, data, eps=0.1, attacks=ATTACKS, batch_size=16, apgd_steps=10)
    acc = res.accuracy()
    assert list(acc) == [*ATTACKS, WORST]
    for name in ATTACKS:
        assert acc[WORST] <= acc[name]
        assert res.correct[name].shape == (40,)
    np.testing.assert_array_equal(res.worst_case(), np.logical_and.reduce([res.correct[a] for a in ATTACKS]))


def test_black_box_with_source_equal_to_target_is_white_box(setup):
    B, model, data = setup
    kw = dict(eps=0.1, attacks=ATTACKS, batch_size=16, apgd_steps=5, restarts=2, seed=3)
    white = evaluate_attacks(B, model, data, **kw)
    black = evaluate_attacks(B, model, data, source=(B, model), source_name="same", **kw)
    for name in ATTACKS:
        np.testing.assert_array_equal(white.correct[name], black.correct[name])


def test_restarts_only_lower_accuracy_and_batching_does_not_matter(setup):
    B, model, data = setup
    one = evaluate_attacks(B, model, data, eps=0.1, attacks=["pgd10"], batch_size=8)
    three = evaluate_attacks(B, model, data, eps=0.1, attacks=["pgd10"], batch_size=8, restarts=3)
    assert not (three.correct["pgd10"] & ~one.correct["pgd10"]).any()  # restart 0 is the same run
    limited = evaluate_attacks(B, model, data, eps=0.1, attacks=["clean", "fgsm"], batch_size=7, limit=10)
    full = evaluate_attacks(B, model, data, eps=0.1, attacks=["clean", "fgsm"], batch_size=40)
    assert limited.n == 10
    np.testing.assert_array_equal(limited.correct["fgsm"], full.correct["fgsm"][:10])


@pytest.mark.parametrize("spec, message", [("pgd", "unknown attack"), (",", "no attack")])
def test_bad_attack_names(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_attacks(spec)
    assert parse_attacks("PGD10, clean,pgd10") == ["pgd10", "clean"]


def fake(correct: dict, source=None) -> EvalResult:
    n = len(next(iter(correct.values())))
    return EvalResult(list(correct), {k: np.asarray(v, bool) for k, v in correct.items()}, 0.3, n,
                      source=source)


def test_sanity_flags_catch_masking_but_not_noise():
    n = 200
    ones, zeros = np.ones(n, bool), np.zeros(n, bool)
    half = np.arange(n) < 100
    assert sanity_flags(fake({"clean": ones, "fgsm": half, "pgd10": half, "pgd20": half})) == []
    flags = sanity_flags(fake({"clean": ones, "fgsm": half, "pgd10": ones & (np.arange(n) < 150),
                               "pgd20": zeros, "apgd-ce": half}))
    text = " ".join(flags)
    assert "PGD-10" in text and "FGSM" in text  # iterative weaker than FGSM
    assert "APGD-CE" in text and "PGD-20" in text  # APGD weaker than PGD-20
    # a two-example difference is noise
    noisy = half.copy()
    noisy[100:102] = True
    assert sanity_flags(fake({"fgsm": half, "pgd10": noisy})) == []
    # black-box stronger than white-box
    black = fake({"pgd10": np.arange(n) < 40}, source="surrogate.pt")
    assert "black-box" in " ".join(sanity_flags(black, {"accuracy": {"pgd10": 50.0}, "n": n}))
    assert sanity_flags(black, {"accuracy": {"pgd10": 21.0}, "n": n}) == []
    # accuracy rising with eps
    assert eps_curve_flags([0.1, 0.2], [half, ones]) and not eps_curve_flags([0.1, 0.2], [ones, half])
