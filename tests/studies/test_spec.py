"""Study specs: the grid crossed into cells, their names, and what a spec may not say."""
import shlex

import pytest
from click.testing import CliRunner

from minidyn.cli.main import given_config, main, train
from minidyn.files.config import TrainConfig
from minidyn.errors import ConfigError
from minidyn.studies import shipped, spec_path
from minidyn.studies.spec import TRAIN_FIELDS, load_spec, parse_spec


def spec(**sections):
    raw = {"train": {"backend": "numpy", "model": "softmax", "epochs": 2}, **sections}
    return parse_spec(raw)


def test_grid_is_the_cross_product_in_grid_order_minus_the_excluded_cells():
    s = spec(grid={"method": ["standard", "dynamic"], "seed": [0, 1], "step_size": ["eps/4", "eps/8"]},
             exclude=[{"method": "standard", "step_size": "eps/8"}])
    names = [c.name for c in s.cells()]
    assert names == ["standard_seed-0_step-size-eps-over-4", "standard_seed-1_step-size-eps-over-4",
                     "dynamic_seed-0_step-size-eps-over-4", "dynamic_seed-0_step-size-eps-over-8",
                     "dynamic_seed-1_step-size-eps-over-4", "dynamic_seed-1_step-size-eps-over-8"]
    cfg = s.cells()[3].config()
    assert (cfg.method, cfg.seed, cfg.step_size) == ("dynamic", 0, 0.3 / 8)


def test_every_grid_key_names_a_cell_and_a_study_does_not_evaluate_in_training():
    s = spec(grid={"method": ["dynamic"], "seed": [0, 1, 2]})
    assert [c.name for c in s.cells()] == ["dynamic_seed-0", "dynamic_seed-1", "dynamic_seed-2"]
    assert s.cells()[0].config().final_eval is False
    assert [c.name for c in spec().cells()] == ["run"]  # no grid: one cell


def test_a_cell_keeps_its_name_when_its_grid_gains_values():
    """seed = [0] -> [0, 1]: the trained cell standard_seed-0 is the same cell, not retrained."""
    one = spec(grid={"method": ["standard"], "seed": [0]})
    two = spec(grid={"method": ["standard", "dynamic"], "seed": [0, 1]})
    assert [c.name for c in one.cells()] == ["standard_seed-0"]
    assert one.cells()[0].name in {c.name for c in two.cells()}


def test_a_black_box_evaluations_settings_name_its_resolved_surrogate():
    """A changed [eval] surrogate changes what a black-box result was made with; a white-box
    result's settings do not depend on it."""
    from minidyn.studies.tasks import Task, settings
    grid = {"method": ["standard", "dynamic", "curriculum"], "seed": [0, 1]}
    by_standard = spec(grid=grid, eval={"surrogate": {"method": "standard"}})
    by_dynamic = spec(grid=grid, eval={"surrogate": {"method": "dynamic"}})
    cell = by_standard.cells()[-1]
    black = [settings(s, Task(cell, "blackbox")) for s in (by_standard, by_dynamic)]
    assert black[0] != black[1] and black[1]["surrogate"] == "dynamic_seed-0"
    assert settings(by_standard, Task(cell, "train")) == settings(by_dynamic, Task(cell, "train"))


@pytest.mark.parametrize("raw, words", [
    ({"grid": {"methd": ["dynamic"]}}, "unknown option(s) methd"),
    ({"grid": {"seed": [0, 0]}}, "lists a value twice"),
    ({"grid": {"seed": 0}}, "must be a non-empty list"),
    ({"grid": {"epochs": [1, 2]}}, "set in both [train] and [grid]"),
    ({"grid": {"step_size": ["eps/0"]}}, "neither a number nor 'eps/K'"),
    ({"grid": {"eps": [2.0]}}, "eps must be in (0, 1]"),
    ({"eval": {"attacks": ["pgd1000"]}}, "attacks must be a list of"),
    ({"eval": {"checkpoints": ["best"]}}, "needs val_size"),
    ({"eval": {"surrogate": {"method": "standard"}}, "grid": {"method": ["dynamic"], "seed": [0, 1]}},
     "matches no grid value"),
    ({"eval": {"surrogate": {"method": "standard"}}, "grid": {"method": ["standard", "dynamic"], "seed": [0, 1]},
      "exclude": [{"method": "standard", "seed": 1}]}, "has no cell standard_seed-1"),
    ({"extra": {}}, "unknown section"),
    ({"exclude": [{"seed": 0}], "grid": {"seed": [0]}}, "leave no cell"),
])
def test_a_bad_spec_is_refused_with_the_reason(raw, words):
    with pytest.raises(ConfigError, match=None) as error:
        spec(**raw)
    assert words in str(error.value)


def test_the_surrogate_of_a_cell_is_the_surrogate_method_at_the_next_seed():
    s = spec(grid={"method": ["standard", "dynamic"], "seed": [0, 1, 2]},
             eval={"surrogate": {"method": "standard"}})
    cells = {c.name: c for c in s.cells()}
    assert s.surrogate_of(cells["dynamic_seed-0"]).name == "standard_seed-1"
    assert s.surrogate_of(cells["standard_seed-2"]).name == "standard_seed-0"


def test_spec_keys_are_train_options():
    """Every key a spec may set is an option of `minidyn train` (so --dry-run can print it)."""
    params = {p.name for p in train.params}
    assert TRAIN_FIELDS <= params


@pytest.mark.parametrize("name", sorted(shipped()))
def test_every_shipped_spec_parses_and_its_dry_run_commands_are_its_cells(name, tmp_path):
    s = load_spec(spec_path(name))
    result = CliRunner().invoke(main, ["study", "run", name, "--dry-run", "--out", str(tmp_path / "s")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("minidyn train")]
    assert len(lines) == len(s.cells()) >= 3
    for line, cell in zip(lines, s.cells()):
        args = shlex.split(line)[2:]
        ctx = train.make_context("train", args)
        params = dict(ctx.params)
        assert params.pop("out") == str(tmp_path / "s" / "cells" / cell.name) and params.pop("resume")
        preset = params.pop("preset")
        extras = {k: params.pop(k) for k in ("amp", "channels_last", "compile_", "checkpoint_every")}
        assert not any(extras.values())
        assert given_config(preset, params, {}).resolved() == cell.config()
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_study_list_names_the_shipped_specs():
    result = CliRunner().invoke(main, ["study", "list"], catch_exceptions=False)
    assert result.exit_code == 0
    for name in ("table1-mnist-sample", "table1-fashion", "fig2-step-size", "authors-code",
                 "table1-cifar10-gpu", *DECISIVE):
        assert name in result.output


def test_a_missing_or_broken_spec_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    for arg in (str(tmp_path / "none.toml"), str(bad)):
        result = CliRunner().invoke(main, ["study", "run", arg, "--out", str(tmp_path / "o")])
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
        assert result.stderr.startswith("Error: ")


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=8), st.sampled_from(["eps/4", "dynamic", "numpy", "softmax", "auto"]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=12)
_keys = st.sampled_from(["method", "seed", "eps", "step_size", "epochs", "steps", "c_max", "lr",
                         "val_size", "attacks", "limit", "surrogate", "baseline", "checkpoints", "x"])
_sections = st.dictionaries(st.sampled_from(["train", "grid", "exclude", "eval", "report", "study", "zz"]),
                            st.dictionaries(_keys, _values, max_size=4) | _values, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sections)
def test_any_spec_is_a_valid_study_or_one_config_error(raw):
    """Whatever a TOML spec holds: a Spec whose every cell resolves, or a ConfigError."""
    try:
        parsed = parse_spec(raw)
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    assert all(isinstance(c.config(), TrainConfig) for c in parsed.cells())


def test_a_changed_epochs_is_named_rather_than_the_options_derived_from_it():
    """epochs 10 -> 20 moves T', curriculum_epochs, fgsm_epochs and the milestones too; the
    refusal of a changed trained cell names what the user changed (tasks.check_trained_cells)."""
    from minidyn.files.compare_configs import config_differences
    before, after = (spec(train={"backend": "numpy", "model": "softmax", "epochs": e}).cells()[0] for e in (10, 20))
    differing = config_differences(before.config().to_dict(), after.config().to_dict())
    assert differing[0] == "curriculum_epochs" and "epochs" in differing
    assert after.changed_option(differing) == "epochs"
    assert after.changed_option(["curriculum_epochs", "lr"]) == "lr"  # lr: given by no one, not derived


def test_cells_are_found_by_their_grid_values():
    s = spec(grid={"method": ["standard", "dynamic"], "seed": [0, 1]}, exclude=[{"method": "standard", "seed": 1}])
    assert s.cell_with({"seed": 1, "method": "dynamic"}).name == "dynamic_seed-1"
    assert s.cell_with({"method": "standard", "seed": 1}) is None  # excluded
    assert s.cell_with({"method": "standard"}) is None and s.cell_with({"method": "x", "seed": 0}) is None


def test_a_reordered_grid_is_told_apart_from_a_grown_one():
    from minidyn.studies.spec import reordered_grid
    s = spec(grid={"method": ["standard"], "seed": [0, 1]})
    assert reordered_grid('[grid]\nseed = [0]\nmethod = ["standard"]\n', s) == (["seed", "method"], ["method", "seed"])
    assert reordered_grid('[grid]\nmethod = ["standard"]\nseed = [0]\n', s) is None
    assert reordered_grid('[grid]\nmethod = ["standard"]\nlr = [0.1]\nseed = [0]\n', s) is None  # a key removed
    assert reordered_grid("[grid\n", s) is None  # not TOML: the study's own checks refuse it


def test_the_spec_schema_names_the_section_and_the_option():
    with pytest.raises(ConfigError, match=r"^\[train\] record_fosc must be true or false, got 'false'$"):
        spec(train={"record_fosc": "false"})
    with pytest.raises(ConfigError, match=r"^\[grid\] lr_milestones must be a list of integers, got \[2.5\]$"):
        spec(grid={"lr_milestones": [[2.5]]})
    with pytest.raises(ConfigError, match=r"^\[eval\] restarts must be <= 1000, got 1001$"):
        spec(eval={"restarts": 1001})
    assert spec(eval={"restarts": 1000, "apgd_steps": 100_000}).eval.restarts == 1000  # the CLI's bounds


def test_eval_takes_the_bounds_of_minidyn_eval():
    """[eval] restarts, apgd_steps, batch_size, limit and seed: the same bounds as the options
    of `minidyn eval` (cli/evaluate.py), so a spec cannot ask for what the CLI refuses."""
    from minidyn.cli import params
    from minidyn.studies.spec import EVAL_BOUNDS
    assert EVAL_BOUNDS["restarts"].hi == params.MAX_RESTARTS
    for key, option in (("apgd_steps", params.APGD_STEPS), ("batch_size", params.BATCH_SIZE),
                        ("limit", params.LIMIT), ("seed", params.SEED)):
        bounds = option.bounds
        assert (EVAL_BOUNDS[key].lo, EVAL_BOUNDS[key].hi) == (bounds.lo, bounds.hi), key


# --- the specs of issue "The decisive studies" ----------------------------------------------------
DECISIVE = {"cmax-fashion": 5, "budget-fashion": 4, "family-fashion-cpu": 5, "fig2a-mnist": 4,
            "authors-code-2": 5, "table1-mnist-2": 5, "family-fashion-gpu": 5}


@pytest.mark.parametrize("name, seeds", sorted(DECISIVE.items()))
def test_a_decisive_study_declares_its_primaries_with_enough_seeds_and_test_images(name, seeds):
    """Each primary comparison has `seeds` seeds on both sides (the issue: >= 5, >= 4 for Fig.
    2a), at a checkpoint [eval] evaluates, and every evaluation is on >= 2,000 test images."""
    from minidyn.studies.cost import split_sizes
    from minidyn.studies.spec import primary_baseline

    s = load_spec(spec_path(name))
    assert s.report["primary"]
    for item in s.report["primary"]:
        for values in (item["setting"], primary_baseline(s, item)):
            matching = [c for c in s.cells() if all(c.values[k] == v for k, v in values.items())]
            assert len({c.values["seed"] for c in matching}) >= seeds, (name, values)
        assert item["checkpoint"] in s.eval.checkpoints
    for cell in s.cells():
        n_test = split_sizes(cell.config())[2]
        assert min(s.eval.limit or n_test, n_test) >= 2000


def test_fig2a_cross_tests_every_training_step_size_on_all_training_and_test_digits():
    from minidyn.studies.cost import split_sizes

    s = load_spec(spec_path("fig2a-mnist"))
    assert s.grid["step_size"] == ["eps/2", "eps/4", "eps/8"]
    # PGD-20 at each training step size: eps/2, eps/4 (pgd20) and eps/8
    assert {"pgd20-eps-over-2", "pgd20", "pgd20-eps-over-8"} <= set(s.eval.attacks)
    for cell in s.cells():
        cfg = cell.config()
        assert (cfg.method, cfg.steps, cfg.limit) == ("standard", 20, None)
        assert split_sizes(cfg) == (7000, 1000, 2000) and s.eval.limit == 2000  # the sample's test split


def test_the_gpu_family_spec_dry_runs_on_cuda_with_the_full_training_set_without_a_gpu(tmp_path, monkeypatch):
    """family-fashion-gpu's dry run on a machine without CUDA (forced, so that the test says
    the same on a GPU machine): every cell's command names --device cuda and no --limit (all
    59,000 training images after validation), and the work is printed with the throughput
    "not measured here" rather than failing."""
    import torch

    from minidyn.studies.cost import split_sizes

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = load_spec(spec_path("family-fashion-gpu"))
    result = CliRunner().invoke(main, ["study", "run", "family-fashion-gpu", "--dry-run", "--out",
                                       str(tmp_path / "s")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [shlex.split(ln) for ln in result.stdout.splitlines() if ln.startswith("minidyn train")]
    assert len(lines) == len(s.cells()) == 45
    for args in lines:
        assert args[args.index("--device") + 1] == "cuda" and "--limit" not in args
        assert args[args.index("--dataset") + 1] == "fashion-mnist"
    assert all(split_sizes(c.config()) == (59000, 1000, 10000) and c.config().epochs == 50 for c in s.cells())
    assert s.eval.limit is None and "autoattack" in s.eval.attacks  # AutoAttack on all 10,000
    assert "Not measured here: torch cnn4 on fashion-mnist (device cuda)" in result.stderr
    assert "no CUDA GPU is available" in result.stderr
    assert "# total (45 cells)" in result.stderr and "Wall time at that rate" not in result.stderr
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
