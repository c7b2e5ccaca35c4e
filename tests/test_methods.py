"""minidyn/methods.py: the ten methods as parts of one table, their per-epoch attack and loss,
the combinations the parts allow and refuse, and the family's schedules."""
import numpy as np
import pytest

from minidyn.errors import ConfigError
from minidyn.files.config import TrainConfig
from minidyn.methods import METHODS, AttackPlan, LossPlan, attack_plan, loss_plan, recipe_of
from minidyn.runs import method_of
from minidyn.runs.weights import gairat_weights
from minidyn.schedules import FatTauSchedule, GairatSchedule
from minidyn import get_backend


def method(name, **kw):
    return method_of(TrainConfig(method=name, epochs=120, **kw).resolved())


def test_the_table_holds_the_paper_s_five_and_the_family_s_five():
    assert list(METHODS) == ["unsecured", "standard", "curriculum", "fgsm-pgd", "dynamic",
                             "fat", "trades", "mart", "gairat", "fgsm-rs"]
    for name, recipe in METHODS.items():
        assert recipe.paper and recipe.inner in ("ce", "kl") and recipe.outer in ("ce", "trades", "mart")


def test_each_family_method_trains_on_its_parts():
    eps, alpha = 0.3, 0.075
    assert attack_plan(method("fat"), 0) == AttackPlan(10, alpha, True, stop_tau=0, omega=0.001)
    assert attack_plan(method("trades"), 3) == AttackPlan(10, alpha, True, loss="kl", start="normal")
    assert loss_plan(method("trades"), 3) == LossPlan("trades", 6.0, "none")
    assert attack_plan(method("mart"), 3) == AttackPlan(10, alpha, True, start="normal")
    assert loss_plan(method("mart", beta=5.0), 3) == LossPlan("mart", 5.0, "none")
    assert attack_plan(method("gairat"), 3) == AttackPlan(10, alpha, True, kappa=True)
    assert attack_plan(method("fgsm-rs"), 3) == AttackPlan(1, 1.25 * eps, True, start="uniform-unprojected")
    for name in ("standard", "dynamic", "fat", "gairat", "fgsm-rs"):
        assert loss_plan(method(name), 3).outer == "ce"


def test_fosc_stopped_trades_is_trades_with_dynamic_s_stop_rule():
    plan = attack_plan(method("trades", stop="fosc", c_max=0.4, dynamic_epochs=100), 50)
    assert (plan.loss, plan.start, plan.stop_fosc) == ("kl", "normal", pytest.approx(0.2))
    assert loss_plan(method("trades", stop="fosc"), 50).outer == "trades"
    assert attack_plan(method("dynamic", stop="none"), 0).stop_fosc is None  # Dynamic without its rule: Standard


@pytest.mark.parametrize("name, stop, weights, message", [
    ("unsecured", "fosc", "none", "unsecured trains without one"),
    ("unsecured", None, "gairat", "unsecured trains without one"),
    ("gairat", None, "ce", "does not go with gairat"),
    ("nope", None, "none", "unknown method 'nope'"),
])
def test_combinations_that_mean_nothing_are_refused_in_one_line(name, stop, weights, message):
    with pytest.raises(ConfigError, match=message):
        recipe_of(name, stop, weights)
    if name != "nope":
        with pytest.raises(ConfigError, match=message):
            TrainConfig(backend="numpy", method=name, stop=stop, loss_weights=weights).resolved()


def test_fat_s_tau_schedule_is_the_authors_at_their_length_and_scaled_at_others():
    """FAT.py adjust_tau (dynamictau): epochs 1-50 tau 0, 51-90 tau 1, 91-120 tau 2."""
    authors = [0 if e <= 50 else 1 if e <= 90 else 2 for e in range(1, 121)]
    assert [FatTauSchedule(120).tau(t) for t in range(120)] == authors
    assert [FatTauSchedule(10).tau(t) for t in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert FatTauSchedule(10, fixed=3).tau(0) == 3
    assert [attack_plan(method("fat"), t).stop_tau for t in (49, 50, 89, 90)] == [0, 1, 1, 2]


def test_gairat_weights_from_half_the_epochs_on():
    """GAIRAT.py line 141: weighted where epoch + 1 >= begin_epoch (60 of 120)."""
    assert [GairatSchedule(60).weighted(t) for t in (58, 59)] == [False, True]
    assert [loss_plan(method("gairat"), t).weights for t in (58, 59)] == ["none", "gairat"]
    assert loss_plan(method("gairat", gairat_begin=1), 0).weights == "gairat"
    assert [loss_plan(method("dynamic", loss_weights="ce"), t).weights for t in (0, 1)] == ["none", "ce"]


def test_gairat_s_weights_are_its_tanh_formula_normalised_over_the_batch():
    """GAIR.py lines 5-9 (Tanh), transcribed: reweight = ((Lambda + (int(K/2) - kappa) * 5 /
    int(K/2)).tanh() + 1) / 2; normalized = reweight * B / reweight.sum(); the loss is
    mean(l * normalized), i.e. weights normalized / B."""
    kappa, steps, lam = np.array([0, 1, 5, 9, 10, 10]), 10, -1.0
    reweight = (np.tanh(lam + (int(steps / 2) - kappa) * 5 / int(steps / 2)) + 1) / 2
    normalized = reweight * len(reweight) / reweight.sum()
    w = gairat_weights(get_backend("numpy"), kappa, steps, lam)
    np.testing.assert_allclose(w, normalized / len(kappa), rtol=1e-15)
    assert w[0] > w[2] > w[-1]  # an example broken early (small kappa) weighs more
    with pytest.raises(ConfigError, match="K >= 2"):
        from minidyn.runs.weights import loss_weighting
        loss_weighting(get_backend("numpy"), None, LossPlan(weights="gairat"), 1)
