"""The per-epoch schedules, and the attack each method trains on."""
import pytest
from hypothesis import given, strategies as st

from minidyn import CurriculumSchedule, DynamicSchedule, FgsmPgdSchedule, StepLR
from minidyn.config import TrainConfig
from minidyn.errors import ConfigError
from minidyn.methods import attack_plan


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
def test_curriculum_steps_grow_from_one_to_k(K, ramp):
    s = CurriculumSchedule(K, ramp)
    steps = [s.steps(t) for t in range(ramp + 5)]
    assert steps[0] == 1 and steps[ramp] == K
    assert all(a <= b for a, b in zip(steps, steps[1:]))


def test_fgsm_pgd_and_lr_steps():
    assert FgsmPgdSchedule(20).use_fgsm(19) and not FgsmPgdSchedule(20).use_fgsm(20)
    lr = StepLR(0.01, (20, 40))
    assert [lr.at(t) for t in (0, 19, 20, 40)] == pytest.approx([0.01, 0.01, 0.001, 0.0001])


@pytest.mark.parametrize("kw", [dict(c_max=-0.1), dict(dynamic_epochs=0)])
def test_bad_dynamic_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        DynamicSchedule(**({"c_max": 0.5, "dynamic_epochs": 10} | kw))


def test_each_method_trains_on_its_attack():
    cfg = lambda m: TrainConfig(method=m, epochs=50).resolved()  # noqa: E731
    assert attack_plan(cfg("unsecured"), 0) is None
    std = attack_plan(cfg("standard"), 7)
    assert (std.steps, std.step_size, std.random_start, std.stop_fosc) == (10, 0.075, True, None)
    assert attack_plan(cfg("curriculum"), 0).steps == 1 and attack_plan(cfg("curriculum"), 40).steps == 10
    fg = attack_plan(cfg("fgsm-pgd"), 19)
    assert (fg.steps, fg.step_size, fg.random_start) == (1, 0.3, False)
    assert attack_plan(cfg("fgsm-pgd"), 20).steps == 10
    assert attack_plan(cfg("dynamic"), 0).stop_fosc == 0.5
    assert attack_plan(cfg("dynamic"), 40).stop_fosc == 0.0


def test_paper_defaults_scale_with_epochs():
    c = TrainConfig(epochs=50).resolved()
    assert (c.lr_milestones, c.dynamic_epochs, c.fgsm_epochs) == ([20, 40], 40, 20)
    assert c.step_size == pytest.approx(0.075)


@pytest.mark.parametrize("epochs, milestones", [(1, [1, 1]), (2, [1, 2]), (3, [1, 2]), (15, [6, 12])])
def test_the_learning_rate_is_never_decayed_before_the_first_epoch(epochs, milestones):
    """The milestones 0.4T and 0.8T round to epoch 0 for T = 1; the configured lr must be used."""
    c = TrainConfig(epochs=epochs).resolved()
    assert c.lr_milestones == milestones
    assert StepLR(c.lr, tuple(c.lr_milestones)).at(0) == c.lr
