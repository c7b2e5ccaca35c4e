"""The per-epoch schedules, and the attack each method trains on."""
import pytest
from hypothesis import given, strategies as st

from minidyn import CurriculumSchedule, DynamicSchedule, FgsmPgdSchedule, StepLR
from minidyn.files.config import TrainConfig
from minidyn.errors import ConfigError
from minidyn.methods import attack_plan
from minidyn.runs import method_of


def test_dynamic_schedule_matches_the_paper():
    s = DynamicSchedule(c_max=0.5, dynamic_epochs=40)
    assert s.c_t(0) == 0.5 and s.c_t(20) == pytest.approx(0.25)
    assert s.c_t(40) == 0 and s.c_t(49) == 0


@given(st.floats(0, 10), st.integers(1, 200), st.integers(0, 400))
def test_dynamic_c_t_falls_linearly_to_zero(c_max, T, t):
    s = DynamicSchedule(c_max, T)
    assert 0 <= s.c_t(t + 1) <= s.c_t(t) <= c_max
    if t >= T:
        assert s.c_t(t) == 0


@given(st.integers(1, 40), st.integers(1, 100))
def test_curriculum_steps_grow_from_zero_to_k(K, ramp):
    """Figure 5: Curriculum trains on clean examples (0 steps) first; K steps from the ramp's end,
    never more than one step added per epoch more than linear growth K t / ramp allows."""
    s = CurriculumSchedule(K, ramp)
    steps = [s.steps(t) for t in range(ramp + 5)]
    assert steps[0] == 0 and steps[ramp] == K and steps[-1] == K
    assert all(a <= b for a, b in zip(steps, steps[1:]))
    assert all(st_ <= K * t / ramp for t, st_ in enumerate(steps))


def test_the_curriculum_trains_clean_at_the_start():
    cfg = method_of(TrainConfig(method="curriculum", epochs=50).resolved())   # K = 10, ramp T' = 40
    assert attack_plan(cfg, 0) is None and attack_plan(cfg, 3) is None
    assert attack_plan(cfg, 4).steps == 1 and attack_plan(cfg, 39).steps == 9


def test_fgsm_pgd_and_lr_steps():
    assert FgsmPgdSchedule(20).use_fgsm(19) and not FgsmPgdSchedule(20).use_fgsm(20)


def test_lr_milestones_count_epochs_from_one_as_the_authors_code():
    """train_models.py divides the lr before the 0-based epoch ep with ep + 1 == 60 (and 100):
    0-based epochs 0-58 at 0.01, 59-98 at 0.001, 99-119 at 0.0001."""
    lr = StepLR(0.01, (60, 100))
    rates = [lr.at(t) for t in range(120)]
    assert rates[:59] == [0.01] * 59
    assert rates[59:99] == pytest.approx([0.001] * 40)
    assert rates[99:] == pytest.approx([0.0001] * 21)


@pytest.mark.parametrize("kw", [dict(c_max=-0.1), dict(dynamic_epochs=0)])
def test_bad_dynamic_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        DynamicSchedule(**({"c_max": 0.5, "dynamic_epochs": 10} | kw))


def test_each_method_trains_on_its_attack():
    cfg = lambda m: method_of(TrainConfig(method=m, epochs=50).resolved())  # noqa: E731
    assert attack_plan(cfg("unsecured"), 0) is None
    std = attack_plan(cfg("standard"), 7)
    assert (std.steps, std.step_size, std.random_start, std.stop_fosc) == (10, 0.075, True, None)
    assert attack_plan(cfg("curriculum"), 0) is None and attack_plan(cfg("curriculum"), 40).steps == 10
    fg = attack_plan(cfg("fgsm-pgd"), 7)   # FGSM for round(50 / 6) = 8 epochs
    assert (fg.steps, fg.step_size, fg.random_start) == (1, 0.3, False)
    assert attack_plan(cfg("fgsm-pgd"), 8).steps == 10
    assert attack_plan(cfg("dynamic"), 0).stop_fosc == 0.5
    assert attack_plan(cfg("dynamic"), 40).stop_fosc == 0.0


def test_paper_defaults_scale_with_epochs():
    c = TrainConfig(epochs=50).resolved()
    assert (c.lr_milestones, c.dynamic_epochs) == ([20, 40], 40)
    assert c.step_size == pytest.approx(0.075)
    # Section 3.2: FGSM for the first 20 of 120 epochs
    assert TrainConfig(epochs=120).resolved().fgsm_epochs == 20


@pytest.mark.parametrize("preset", ["paper-cifar10", "paper-wrn"])
def test_cifar_presets_are_the_papers_schedules(preset):
    from minidyn.files.config import load_preset
    c = TrainConfig(**load_preset(preset)).resolved()
    assert (c.epochs, c.fgsm_epochs, c.lr_milestones, c.dynamic_epochs) == (120, 20, [60, 100], 100)
    rates = [StepLR(c.lr, tuple(c.lr_milestones)).at(t) for t in (58, 59)]
    assert rates == pytest.approx([0.01, 0.001])


@pytest.mark.parametrize("epochs, milestones", [(1, [2, 2]), (2, [2, 2]), (3, [2, 2]), (15, [6, 12])])
def test_the_learning_rate_is_never_decayed_before_the_first_epoch(epochs, milestones):
    """The milestones 0.4T and 0.8T round to epoch 1 or 0 for small T; the first epoch must use
    the configured lr."""
    c = TrainConfig(epochs=epochs).resolved()
    assert c.lr_milestones == milestones
    assert StepLR(c.lr, tuple(c.lr_milestones)).at(0) == c.lr


def test_each_dataset_brings_its_usual_defaults_where_none_is_given():
    fashion = TrainConfig(dataset="fashion-mnist", backend="torch", epochs=50).resolved()
    assert (fashion.eps, fashion.model, fashion.lr_milestones, fashion.dynamic_epochs) == (0.1, "cnn4", [20, 40], 40)
    cifar = TrainConfig(dataset="cifar10", backend="torch", epochs=120).resolved()
    assert (cifar.eps, cifar.model, cifar.lr_milestones, cifar.dynamic_epochs, cifar.fgsm_epochs) == \
        (8 / 255, "cnn8", [60, 100], 100, 20)
    assert cifar.augment and cifar.step_size == pytest.approx(2 / 255)
    mnist = TrainConfig(dataset="mnist", backend="torch", epochs=50).resolved()
    assert (mnist.eps, mnist.model, mnist.lr_milestones) == (0.3, "cnn4", [20, 40])
    given = TrainConfig(dataset="cifar10", backend="torch", eps=4 / 255, model="cnn4", epochs=120)
    assert (given.resolved().eps, given.resolved().model) == (4 / 255, "cnn4")
    assert given.from_dataset() == [] and TrainConfig(dataset="cifar10").from_dataset() == ["eps", "model"]
    assert TrainConfig(dataset="cifar10", backend="numpy").resolved().model == "mlp"


def test_the_first_line_says_where_each_unchosen_setting_came_from():
    from minidyn.cli.main import first_line
    given = TrainConfig(dataset="fashion-mnist", backend="torch", epochs=1)
    line = first_line(given, given.resolved(), "runs/x")
    assert "cnn4 on fashion-mnist with the torch backend, eps 0.1, 1 epoch (" in line
    assert "eps and model: fashion-mnist's defaults" in line
    chosen = TrainConfig(dataset="fashion-mnist", backend="torch", eps=0.2, model="cnn4", epochs=3)
    assert "default" not in first_line(chosen, chosen.resolved(), "runs/x")


def test_c_t_warnings_fire_only_when_c_t_does_not_bind():
    import numpy as np
    from minidyn.runs import c_t_warnings
    assert "after one of 10" in c_t_warnings(0.5, np.ones(100, int), 10)[0]
    assert "Standard" in c_t_warnings(0.5, np.full(100, 10), 10)[0]
    assert c_t_warnings(0.5, np.array([1, 3, 10, 7]), 10) == []
