"""minidyn.evaluation.evaluate: the attack registry, worst case, restarts, black-box and sanity flags."""
import numpy as np
import pytest

from minidyn.data import Dataset
from minidyn.errors import ConfigError
from minidyn.backend import get_backend
from minidyn.backends.array import ArrayBackend
from minidyn.evaluation.attack_table import ATTACKS, WORST
from minidyn.evaluation.evaluate import (EvalResult, checks_applied, eps_curve_flags, evaluate_attacks,
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


def test_black_box_with_source_equal_to_target_is_white_box_but_for_apgd(setup):
    """Transfer carries each attack's final point; APGD's is its best-loss point x_best, which
    is correct more often than "some iterate was misclassified" (what white-box APGD counts)."""
    B, model, data = setup
    kw = dict(eps=0.1, attacks=ATTACKS, batch_size=16, apgd_steps=5, restarts=2, seed=3)
    white = evaluate_attacks(B, model, data, **kw)
    black = evaluate_attacks(B, model, data, source=(B, model), source_name="same", **kw)
    for name in ATTACKS:
        if name.startswith("apgd"):
            assert not (white.correct[name] & ~black.correct[name]).any()
        else:
            np.testing.assert_array_equal(white.correct[name], black.correct[name])


def test_transfer_carries_apgds_best_loss_point_after_every_iteration(setup):
    from minidyn.apgd import apgd
    from minidyn.evaluation.evaluate import craft

    B, model, data = setup
    x, y = B.asarray(data.x / 255.0), B.asarray(data.y)
    full = apgd(model, x, y, eps=0.2, steps=12, rng=B.rng(5), backend=B)
    stopped = apgd(model, x, y, eps=0.2, steps=12, rng=B.rng(5), stop_when_misclassified=True, backend=B)
    sent = craft("apgd-ce", B, model, x, y, eps=0.2, rng=B.rng(5), apgd_steps=12, transfer=True)
    np.testing.assert_array_equal(sent, full.x_best)
    assert not np.array_equal(sent, stopped.x_adv)  # what was transferred before
    kept = craft("apgd-ce", B, model, x, y, eps=0.2, rng=B.rng(5), apgd_steps=12)
    np.testing.assert_array_equal(kept, stopped.x_adv)  # white-box: unchanged


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


def test_black_box_results_are_held_only_to_the_orderings_that_transfer_keeps():
    """Transfer attacks need not be ordered like white-box ones (the paper's Table 2 has CW
    above FGSM); an attack above clean is impossible either way."""
    n = 200
    idx = np.arange(n)
    correct = {"clean": idx < 150, "fgsm": idx < 50, "pgd10": idx < 60, "pgd20": idx < 100,
               "cw": idx < 120, "apgd-ce": idx < 130}
    assert len(sanity_flags(fake(correct))) >= 4  # white-box: each ordering fails
    assert sanity_flags(fake(correct, source="surrogate.pt")) == []
    above = fake(correct | {"pgd10": idx < 190}, source="surrogate.pt")
    assert [f for f in sanity_flags(above)] == [f for f in sanity_flags(above) if "above clean" in f]
    assert len(sanity_flags(above)) == 1
    applied = " ".join(checks_applied(fake(correct, source="surrogate.pt"), white_box=True))
    assert "FGSM" not in applied and "PGD-10" not in applied and "black-box" in applied


def test_sanity_lines_are_worded_in_accuracy_terms():
    n = 200
    half, ones = np.arange(n) < 100, np.ones(n, bool)
    flags = sanity_flags(fake({"clean": ones, "pgd10": half, "pgd20": ones}))
    assert flags == [f for f in flags if "accuracy" in f] and len(flags) == 1
    assert flags[0].startswith("PGD-20 accuracy (100.00%) is above PGD-10 accuracy (50.00%)")
    applied = checks_applied(fake({"clean": ones, "fgsm": half, "pgd10": half, "pgd20": half}))
    assert "PGD-20 accuracy <= PGD-10 accuracy, within noise" in applied
    assert "PGD-10 and PGD-20 accuracy <= FGSM accuracy, within noise" in applied
    assert not any("below" in line for line in applied)


class Tripping(ArrayBackend):
    """A numpy backend made to trip one check: `random` logits (a model whose verdict is chance,
    as with dropout left on), or weights that drift a little at every gradient evaluation (an
    attack that changes the model's state, as BatchNorm statistics updated while attacking)."""

    def __init__(self, trip):
        super().__init__(np, "numpy", "float64")
        self.trip, self.noise = trip, np.random.default_rng(0)

    def logits(self, model, x):
        z = super().logits(model, x)
        return z + 50 * self.noise.standard_normal(z.shape) if self.trip == "random" else z

    def loss_and_grad(self, model, x, y, loss="ce"):
        if self.trip == "drift":
            for p in model.params.values():
                p += 0.05 * np.abs(p).mean()
        return super().loss_and_grad(model, x, y, loss)


def trained_mlp(B, data, epochs=30):
    model = B.make_model("mlp", (1, 4, 4), 4, 0)
    opt = B.make_optimizer(model, 0.5, 0.9, 0.0)
    x = B.asarray(data.x / 255.0)
    for _ in range(epochs):
        B.train_step(model, opt, x, B.asarray(data.y))
    return model


def flags_of(B, model, data, attacks=("clean", "fgsm", "pgd10", "apgd-ce")):
    res = evaluate_attacks(B, model, data, eps=0.1, attacks=attacks, batch_size=16, apgd_steps=10)
    return res, " ".join(sanity_flags(res))


def test_the_built_in_checks_stay_silent_on_a_normal_model(setup):
    B, _, data = setup
    res, text = flags_of(B, trained_mlp(B, data), data)
    assert text == ""
    assert res.checks["grad"] == {"n": 40, "zero": 0, "nonfinite": 0}
    assert res.checks["eps0"]["n"] == 40 and set(res.checks["eps0"]["differs"].values()) == {0}
    assert set(res.checks["recount"]["differs"].values()) == {0}


@pytest.mark.parametrize("fill, words", [(0.0, "exactly zero"), (np.nan, "NaN or infinite")])
def test_a_model_that_kills_or_breaks_gradients_is_flagged(setup, fill, words):
    B, _, data = setup
    model = trained_mlp(B, data)
    params = B.get_params(model)
    params["fc1.weight"][:] = fill  # the first layer passes nothing back (or NaN)
    B.set_params(model, params)
    res, text = flags_of(B, model, data, attacks=("clean", "pgd10"))
    assert words in text and "40 of 40" in text


def test_an_attack_that_changes_the_model_is_caught_at_eps_0(setup):
    _, _, data = setup
    B = Tripping("drift")
    res, text = flags_of(B, trained_mlp(get_backend("numpy", dtype="float64"), data), data)
    assert "with eps 0 changes the prediction" in text
    assert res.checks["eps0"]["differs"]["clean"] == 0  # clean attacks nothing


def test_a_random_model_fails_the_recount(setup):
    _, _, data = setup
    B = Tripping("random")
    res, text = flags_of(B, trained_mlp(get_backend("numpy", dtype="float64"), data), data)
    assert "second forward pass" in text
    assert all(k > 0 for k in res.checks["recount"]["differs"].values())


# --- the attack table and the checkpoints module ----------------------------------------------
def test_the_attack_table_keeps_the_order_labels_and_seeds():
    from minidyn.evaluation.attack_table import DEFAULT_ATTACKS, TABLE, attack_seed

    assert [a.name for a in TABLE] == ["clean", "fgsm", "pgd10", "pgd20", "cw", "apgd-ce", "apgd-dlr",
                                       "apgd-t", "square", "fab-t", "autoattack", "pgd20-eps-over-2",
                                       "pgd20-eps-over-8"]
    assert [a.label for a in TABLE] == ["clean", "FGSM", "PGD-10", "PGD-20", "CW-inf", "APGD-CE", "APGD-DLR",
                                        "APGD-T", "Square", "FAB-T", "AutoAttack", "PGD-20 eps/2", "PGD-20 eps/8"]
    assert DEFAULT_ATTACKS == ("clean", "fgsm", "pgd10", "pgd20", "cw", "apgd-ce")
    assert {a.name for a in TABLE if a.iterative} == {"pgd10", "pgd20", "cw", "apgd-ce", "apgd-dlr", "apgd-t",
                                                      "fab-t", "autoattack", "pgd20-eps-over-2", "pgd20-eps-over-8"}
    # Square draws random squares but follows no gradient: random, not held to the orderings;
    # FAB-T's one run starts at x (no random start); AutoAttack's stages draw from one generator
    assert {a.name for a in TABLE if a.random_start} == {"pgd10", "pgd20", "cw", "apgd-ce", "apgd-dlr",
                                                         "apgd-t", "square", "autoattack", "pgd20-eps-over-2",
                                                         "pgd20-eps-over-8"}
    # the FOSC convergence check: the attacks that maximise a loss in the eps-ball, and which
    assert {a.name: a.stationary for a in TABLE if a.stationary} == {
        "pgd10": "ce", "pgd20": "ce", "cw": "cw", "apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-targeted",
        "pgd20-eps-over-2": "ce", "pgd20-eps-over-8": "ce"}
    # the seeds of the random starts, as before the table: the order above numbers the attacks,
    # so rows added at the end leave the earlier attacks' seeds as they were
    assert {a.name: attack_seed(0, a.name, 0, 0) for a in TABLE} == {
        "clean": 1467326133, "fgsm": 1274208359, "pgd10": 669649219, "pgd20": 3447075012,
        "cw": 2309671971, "apgd-ce": 4170299732, "apgd-dlr": 198029697, "apgd-t": 1668045518,
        "square": 1864532757, "fab-t": 508477665, "autoattack": 259513002,
        "pgd20-eps-over-2": 1088327860, "pgd20-eps-over-8": 1714922657}
    assert attack_seed(5, "apgd-dlr", 2, 7) == 1383877848


def test_the_pgd_rows_are_pgd_from_a_random_start_with_their_step_sizes(setup):
    """pgd10 and pgd20 step eps/4 (as before the eps/2 and eps/8 rows existed); the Fig. 2a rows
    are the same 20 steps with eps/2 and eps/8: each row equals attacks.pgd at its step size
    from the same generator, and the three PGD-20 rows differ from each other."""
    from minidyn.attacks import pgd
    from minidyn.evaluation.attack_table import TABLE

    B, model, data = setup
    x, y, eps = B.asarray(data.x / 255.0), B.asarray(data.y), 0.1
    rows = {"pgd10": (10, 4), "pgd20": (20, 4), "pgd20-eps-over-2": (20, 2), "pgd20-eps-over-8": (20, 8)}
    points = {}
    for name, (steps, divisor) in rows.items():
        points[name], fooled = ATTACKS[name].craft(B, model, x, y, eps=eps, rng=B.rng(4))
        expected = pgd(model, x, y, eps=eps, step_size=eps / divisor, steps=steps, random_start=True,
                       final_stats=False, rng=B.rng(4), backend=B).x_adv
        np.testing.assert_array_equal(points[name], expected)
        assert fooled is None
    assert not np.array_equal(points["pgd20"], points["pgd20-eps-over-2"])
    assert not np.array_equal(points["pgd20"], points["pgd20-eps-over-8"])
    assert [a.name for a in TABLE if a.default] == ["clean", "fgsm", "pgd10", "pgd20", "cw", "apgd-ce"]


def test_the_table_runs_each_attack_as_craft_does(setup):
    from minidyn.evaluation.attack_table import TABLE
    from minidyn.evaluation.evaluate import craft

    B, model, data = setup
    x, y = B.asarray(data.x / 255.0), B.asarray(data.y)
    for attack in TABLE:
        x_adv, _ = attack.craft(B, model, x, y, eps=0.1, rng=B.rng(1), apgd_steps=3)
        np.testing.assert_array_equal(x_adv, craft(attack.name, B, model, x, y, eps=0.1, rng=B.rng(1),
                                                   apgd_steps=3))
    with pytest.raises(ConfigError, match="unknown attack"):
        craft("pgd7", B, model, x, y, eps=0.1)


def test_mcnemar_is_the_paired_test_of_weaker_and_the_eps_curve():
    from minidyn.evaluation.evaluate import mcnemar, weaker

    a, b = np.arange(100) < 60, np.arange(100) < 40
    assert mcnemar(a, b) == (True, 20, 0) and mcnemar(b, a) == (False, 0, 20)
    assert weaker(fake({"pgd10": a, "pgd20": b}), "pgd10", "pgd20") == mcnemar(a, b)
    assert eps_curve_flags([0.1, 0.2], [b, a]) and not eps_curve_flags([0.1, 0.2], [a, b])


def test_architecture_reads_meta_arch_then_the_top_level():
    from minidyn.evaluation.checkpoints import architecture

    assert architecture({"model": "mlp", "input_shape": [1, 4, 4], "num_classes": 4, "eps": 0.3,
                         "arch": {}}) == {"model": "mlp", "input_shape": [1, 4, 4], "num_classes": 4}
    assert architecture({"model": "mlp", "arch": {"model": "cnn", "num_classes": 10}}) == \
        {"model": "cnn", "num_classes": 10}


def test_checkpoints_find_read_and_load_a_numpy_run(tmp_path, setup):
    from minidyn.evaluation.checkpoints import checkpoint_in, load_checkpoint, read_meta, run_config
    from minidyn.errors import CheckpointError

    B, model, data = setup
    meta = {"model": "mlp", "input_shape": [1, 4, 4], "num_classes": 4, "eps": 0.1, "epoch": 1}
    B.save_checkpoint(str(tmp_path / "checkpoint.npz"), model, None, meta)
    (tmp_path / "config.json").write_text('{"backend": "numpy", "seed": 3}')
    path = checkpoint_in(tmp_path)
    assert path == tmp_path / "checkpoint.npz" and read_meta(path) == meta
    assert run_config(path) == {"backend": "numpy", "seed": 3}
    backend, loaded, loaded_meta = load_checkpoint(tmp_path)
    assert backend.name == "numpy" and loaded_meta == {**meta, "path": str(path)}
    saved, restored = B.get_params(model), backend.get_params(loaded)
    assert set(saved) == set(restored)
    for name in saved:  # the loading backend computes in float32
        np.testing.assert_array_equal(restored[name], saved[name].astype(np.float32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        checkpoint_in(tmp_path / "empty")
