"""Algorithm 1: one epoch of each method, determinism, augmentation, resuming inside an epoch
and the ranks' shares of a batch."""
import copy

import numpy as np
import pytest

from minidyn import get_backend
from minidyn.files.config import METHODS, TrainConfig
from minidyn.data import load_dataset
from minidyn.methods import attack_plan
from minidyn.runs import method_of, standalone_epoch
from minidyn.runs.epoch_state import EpochState, epoch_batches
from minidyn.train import Batch, train_epoch

DATA = load_dataset("mnist-sample", "train").subset(128)


def one_epoch(**kw):
    backend = get_backend("numpy")
    cfg = TrainConfig(backend="numpy", epochs=4, batch_size=64, **kw).resolved()
    model = backend.make_model("mlp", (1, 28, 28), 10, seed=0)
    opt = backend.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    stats = standalone_epoch(backend, model, opt, DATA, cfg, 0, attack_plan(method_of(cfg), 0))
    return stats, backend.get_params(model)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_one_epoch(method):
    stats, _ = one_epoch(method=method)
    assert np.isfinite(stats.loss) and 0 <= stats.acc <= 100
    expected_steps = {"unsecured": 0, "standard": 10, "curriculum": 0, "fgsm-pgd": 1, "trades": 10,
                      "mart": 10, "gairat": 10, "fgsm-rs": 1}
    if method in expected_steps:
        assert np.all(stats.steps == expected_steps[method])
    elif method == "fat":  # tau 0 in the first epoch: an example stops where it is first misclassified
        assert 0 <= stats.steps.min() and stats.steps.mean() < 10
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


def test_algorithm_1_yields_after_every_sgd_step_and_records_every_example():
    backend = get_backend("numpy")
    cfg = TrainConfig(backend="numpy", epochs=4, batch_size=48, method="dynamic").resolved()
    model = backend.make_model("mlp", (1, 28, 28), 10, seed=0)
    opt = backend.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    state = EpochState.begin(backend, cfg.seed, 0, len(DATA))
    batches = epoch_batches(backend, DATA, state, 0, cfg.seed, cfg.batch_size)
    losses = []
    for step in train_epoch(backend, model, opt, batches, attack_plan(method_of(cfg), 0),
                            state.rngs["attack"], eps=cfg.eps):
        state.record(backend, step)
        losses.append(step.loss)
    assert len(losses) == state.batches == 3  # 128 examples in batches of 48, 48, 32
    assert state.loss_sum == sum(losses) and np.isfinite(state.fosc).all()
    assert 1 <= state.steps.min() and state.steps.max() <= cfg.steps


def test_an_epoch_continued_from_its_state_is_the_epoch_uninterrupted():
    """What a mid-epoch resume does: the same state, the batches from state.batches on."""
    backend = get_backend("numpy")
    cfg = TrainConfig(backend="numpy", epochs=4, batch_size=32, method="dynamic", augment=True).resolved()
    plan = attack_plan(method_of(cfg), 0)

    def fresh():
        model = backend.make_model("mlp", (1, 28, 28), 10, seed=0)
        return model, backend.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)

    def steps(model, opt, state, n=None):
        batches = epoch_batches(backend, DATA, state, 0, cfg.seed, cfg.batch_size, cfg.augment)
        for number, step in enumerate(train_epoch(backend, model, opt, batches, plan,
                                                  state.rngs["attack"], eps=cfg.eps), 1):
            state.record(backend, step)
            if number == n:
                return

    model, opt = fresh()
    whole = EpochState.begin(backend, cfg.seed, 0, len(DATA))
    steps(model, opt, whole)
    model2, opt2 = fresh()
    part = EpochState.begin(backend, cfg.seed, 0, len(DATA))
    steps(model2, opt2, part, n=2)
    assert part.batches == 2
    steps(model2, opt2, part)  # the generator starts again at batch 3
    assert part.batches == whole.batches == 4
    np.testing.assert_array_equal(part.fosc, whole.fosc)
    assert all(np.array_equal(v, backend.get_params(model2)[k]) for k, v in backend.get_params(model).items())


def test_algorithm_1_runs_on_a_plain_list_of_batches_without_a_run():
    """train_epoch needs no run-layer object: a list of Batch(x, y), a plan and a generator; it
    yields each step's measurements (the PGD examples trained on, the loss, the correct count)."""
    backend = get_backend("numpy")
    model = backend.make_model("mlp", (1, 28, 28), 10, seed=0)
    opt = backend.make_optimizer(model, 0.01, 0.9, 0.0)
    x, y = backend.asarray(DATA.x[:64]), backend.asarray(DATA.y[:64])
    batches = [Batch(x[:40], y[:40]), Batch(x[40:], y[40:])]
    plan = attack_plan(method_of(TrainConfig(epochs=4).resolved()), 0)  # Dynamic at c_0
    before = {k: v.copy() for k, v in backend.get_params(model).items()}
    steps = list(train_epoch(backend, model, opt, batches, plan, backend.rng(0), eps=0.3))
    assert [s.batch for s in steps] == batches
    assert [int(s.attack.x_adv.shape[0]) for s in steps] == [40, 24]
    assert all(s.attack.fosc is not None and 1 <= s.attack.steps.min() for s in steps)
    assert all(np.isfinite(s.loss) and 0 <= s.correct <= len(s.batch.y) for s in steps)
    assert not all(np.array_equal(before[k], v) for k, v in backend.get_params(model).items())
    clean = list(train_epoch(backend, model, opt, batches[:1], None, None, eps=0.3))
    assert clean[0].attack is None


@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_shares_partition_every_global_batch(world):
    backend = get_backend("numpy")
    state = EpochState.begin(backend, 0, 0, len(DATA))
    shares = []
    for rank in range(world):
        as_rank = copy.copy(backend)
        as_rank.rank, as_rank.world_size = rank, world
        shares.append(list(epoch_batches(as_rank, DATA, state, 0, 0, 33)))
    whole = list(epoch_batches(backend, DATA, state, 0, 0, 33))
    for number, batch in enumerate(whole):
        parts = [s[number] for s in shares]
        np.testing.assert_array_equal(np.concatenate([p.index for p in parts]), batch.index)
        assert all(p.size == len(batch.index) for p in parts)  # each rank knows the global size
