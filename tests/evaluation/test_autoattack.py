"""minidyn.evaluation.autoattack: AutoAttack's standard cascade, its order, the examples each stage
sees, the stage-wise accuracies (against a transcription of the reference's loop), and the
`autoattack` row of `minidyn eval`."""
import numpy as np
import pytest
import torch
from torch import nn

from minidyn.backend import get_backend
from minidyn.data import Dataset
from minidyn.evaluation.attack_table import ATTACKS, Attack
from minidyn.evaluation.autoattack import STANDARD, cascade, square_flag, stage_accuracies
from minidyn.evaluation.evaluate import evaluate_attacks, format_table, sanity_flags


class NearestLevel(nn.Module):
    """Classifies by the first feature: class k where x[:, 0] is nearest k / 3 (4 classes).
    The second feature carries the example's id, so a fake attack knows whom it was given."""

    def forward(self, x):
        levels = torch.arange(4, dtype=x.dtype, device=x.device) / 3
        return -((x[:, :1] - levels) ** 2) * 100


def fake_stage(name, breaks, claims=(), seen=None):
    """An attack-table row that moves the examples whose id is in `breaks` to the next class,
    records the ids it was given in seen[name], and claims as fooled the ids in `claims`."""
    def run(backend, model, x, y, **_):
        ids = np.rint(backend.to_numpy(x)[:, 1] * 100).astype(int)
        seen.setdefault(name, []).append(ids.tolist())
        out = backend.to_numpy(x).copy()
        labels = backend.to_numpy(y)
        for i, example in enumerate(ids):
            if example in breaks:
                out[i, 0] = ((labels[i] + 1) % 4) / 3
        fooled = np.isin(ids, list(breaks) + list(claims))
        return backend.asarray(out), backend.asarray(fooled)
    return Attack(name, name.upper(), random_start=False, iterative=True, run=run)


def reference_standard_evaluation(predict, x, y, attacks):
    """Transcription (numpy, one batch) of fra31/auto-attack a392200 autoattack.py
    run_standard_evaluation, lines 121-240: the clean pass, then each attack on the examples
    still robust, robust_flags updated from a forward pass of its points, the accuracy after it."""
    robust = predict(x) == y
    accuracy = {"clean": robust.mean()}
    x_adv = x.copy()
    for name, attack in attacks:
        idx = np.nonzero(robust)[0]
        if idx.size == 0:
            break
        adv = attack(x[idx], y[idx])
        false = predict(adv) != y[idx]
        robust[idx[false]] = False
        x_adv[idx[false]] = adv[false]
        accuracy[name] = robust.mean()
    return x_adv, accuracy


@pytest.fixture
def toy():
    B = get_backend("torch", device="cpu")
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 1, 2])
    x = np.zeros((10, 2), dtype=np.float32)
    x[:, 0] = y / 3
    x[7, 0] = 0.0  # example 7 (label 3) is misclassified at x
    x[:, 1] = np.arange(10) / 100
    return B, NearestLevel(), x, y


def test_standard_order_is_autoattacks():
    assert STANDARD == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert ATTACKS["autoattack"].stages == STANDARD
    assert all(name in ATTACKS for name in STANDARD)


def test_each_stage_attacks_only_the_examples_still_robust(toy):
    B, model, x, y = toy
    seen = {}
    stages = [fake_stage("a", {1, 2}, seen=seen), fake_stage("b", {3, 9}, seen=seen),
              fake_stage("c", set(), seen=seen), fake_stage("d", {0}, seen=seen)]
    result = cascade(B, model, B.asarray(x), B.asarray(y), stages=stages, eps=0.1)
    assert seen == {"a": [[0, 1, 2, 3, 4, 5, 6, 8, 9]], "b": [[0, 3, 4, 5, 6, 8, 9]],
                    "c": [[0, 4, 5, 6, 8]], "d": [[0, 4, 5, 6, 8]]}
    np.testing.assert_array_equal(result.stage, [4, 1, 1, 2, 5, 5, 5, 0, 5, 2])
    assert [int(result.correct_after(k).sum()) for k in range(5)] == [9, 7, 5, 5, 4]
    assert B.to_numpy(result.fooled).tolist() == [True, True, True, True, False, False, False, True, False, True]
    predicted = B.to_numpy(B.argmax(B.logits(model, result.x_adv)))
    np.testing.assert_array_equal(predicted != y, B.to_numpy(result.fooled))
    assert result.contradicted == 0


def test_stage_accuracies_match_a_transcription_of_the_reference(toy):
    B, model, x, y = toy
    plan = {"apgd-ce": {1, 2}, "apgd-t": {3, 9}, "fab-t": {5}, "square": {0, 8}}
    stages = [fake_stage(name, breaks, seen={}) for name, breaks in plan.items()]
    result = cascade(B, model, B.asarray(x), B.asarray(y), stages=stages, eps=0.1)
    ours = stage_accuracies({name: result.correct_after(k) for k, name in enumerate(("clean", *plan))})

    def predict(a):
        return B.to_numpy(B.argmax(B.logits(model, B.asarray(a))))

    def as_attack(stage):
        return lambda xs, ys: B.to_numpy(stage.craft(B, model, B.asarray(xs), B.asarray(ys), eps=0.1)[0])

    x_ref, theirs = reference_standard_evaluation(predict, x, y, [(s.name, as_attack(s)) for s in stages])
    assert ours == pytest.approx({k: 100 * v for k, v in theirs.items()})
    broken = result.stage < 5
    np.testing.assert_array_equal(B.to_numpy(result.x_adv)[broken], x_ref[broken])


def test_a_stage_claim_its_forward_pass_contradicts_is_counted_and_passed_on(toy):
    B, model, x, y = toy
    seen = {}
    stages = [fake_stage("a", {1}, claims={4}, seen=seen), fake_stage("b", {4}, seen=seen)]
    result = cascade(B, model, B.asarray(x), B.asarray(y), stages=stages, eps=0.1)
    assert result.contradicted == 1
    assert 4 in seen["b"][0] and result.stage[4] == 2


def test_restarts_repeat_only_stages_with_a_random_start(toy):
    B, model, x, y = toy
    seen = {}
    fixed = fake_stage("a", {1}, seen=seen)
    random = Attack("b", "B", random_start=True, iterative=True, run=fake_stage("b", {2}, seen=seen).run)
    cascade(B, model, B.asarray(x), B.asarray(y), stages=[fixed, random], eps=0.1, restarts=3)
    assert len(seen["a"]) == 1 and len(seen["b"]) == 3
    assert 2 in seen["b"][0] and 2 not in seen["b"][1]


def test_square_flag_is_autoattacks_check_square_sr():
    assert square_flag({"clean": 90.0, "apgd-ce": 50.0, "square": 49.9}) is None  # within 0.2 points
    assert "Square lowered" in square_flag({"clean": 90.0, "apgd-ce": 50.0, "square": 49.0})
    assert square_flag({"clean": 90.0, "square": 40.0}) is None  # Square alone: nothing to compare


def tiny_data(n=24, seed=0, classes=4):
    rng = np.random.default_rng(seed)
    return Dataset("tiny", rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8),
                   rng.integers(0, classes, n).astype(np.int64), classes, "test")


def test_autoattack_row_reports_each_stage_and_its_final_number():
    B = get_backend("numpy", dtype="float64")
    model, data = B.make_model("mlp", (1, 4, 4), 4, 3), tiny_data()
    result = evaluate_attacks(B, model, data, eps=0.15, attacks=["clean", "apgd-ce", "autoattack"],
                              batch_size=16, apgd_steps=10)
    stages = result.stage_accuracy()["autoattack"]
    assert list(stages) == ["clean", *STANDARD]
    values = list(stages.values())
    assert values == sorted(values, reverse=True)
    acc = result.accuracy()
    assert stages["clean"] == acc["clean"] and stages["square"] == acc["autoattack"]
    assert acc["autoattack"] < acc["clean"]
    assert result.checks["recount"]["differs"]["autoattack"] == 0
    assert result.to_dict()["stages"] == {"autoattack": stages}
    assert "robust accuracy after each stage" in format_table(result)
    assert not [f for f in sanity_flags(result) if "AutoAttack" in f]


def test_autoattack_needs_four_classes_and_says_so_before_attacking():
    from minidyn.errors import ConfigError

    B = get_backend("numpy", dtype="float64")
    data = tiny_data(classes=3)
    with pytest.raises(ConfigError, match="autoattack needs at least 4 classes"):
        evaluate_attacks(B, B.make_model("mlp", (1, 4, 4), 3, 0), data, eps=0.1, attacks=["autoattack"])


def test_without_a_cascade_the_summary_has_no_stages():
    B = get_backend("numpy", dtype="float64")
    result = evaluate_attacks(B, B.make_model("mlp", (1, 4, 4), 4, 0), tiny_data(), eps=0.1,
                              attacks=["clean", "fgsm"])
    assert result.stages == {} and "stages" not in result.to_dict()


def test_a_studys_per_example_file_keeps_the_autoattack_row(tmp_path):
    """minidyn.studies.examples writes and reads the autoattack row like any attack's."""
    from minidyn.studies.examples import read_cell_examples, write_examples

    B = get_backend("numpy", dtype="float64")
    result = evaluate_attacks(B, B.make_model("mlp", (1, 4, 4), 4, 3), tiny_data(), eps=0.15,
                              attacks=["clean", "autoattack"], batch_size=16, apgd_steps=5)
    target = tmp_path / "study-eval.json"
    reference = write_examples(target, {("last", "0.15"): result})
    record = {"results": {"last": {"eps": {"0.15": {**result.to_dict(), "flags": []}}, "examples": reference}}}
    back = read_cell_examples(target, record)["last"]["0.15"]
    np.testing.assert_array_equal(back["autoattack"], result.correct["autoattack"])
    np.testing.assert_array_equal(back["worst-case"], result.worst_case())
