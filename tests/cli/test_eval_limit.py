"""`--eval-limit all` / `eval_limit = "all"`: the per-epoch monitor attacks the whole split (the
validation split with --val-size), so a study can choose its best epoch on all of it."""
import json
import shlex

import pytest
from click.testing import CliRunner

from minidyn.cli.main import given_config, main, train
from minidyn.files.config import TrainConfig
from minidyn.errors import ConfigError
from minidyn.studies.spec import load_spec


def test_all_resolves_to_every_example_and_the_default_stays_500():
    assert TrainConfig(eval_limit="all").resolved().eval_limit is None
    assert TrainConfig().resolved().eval_limit == 500
    assert TrainConfig(eval_limit=None).resolved().eval_limit is None
    for bad in ("ALL", "every", 0, 2.5, True):
        with pytest.raises(ConfigError, match=r"--eval-limit .*'all'"):
            TrainConfig(eval_limit=bad).resolved()


def test_the_cli_takes_all_and_the_monitor_attacks_the_whole_validation_split(tmp_path):
    args = ["train", "--backend", "numpy", "--model", "softmax", "--limit", "32", "--epochs", "1",
            "--batch-size", "16", "--steps", "1", "--val-size", "45", "--eval-limit", "all",
            "--eval-steps", "1", "--no-final-eval", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["eval_limit"] is None
    epoch = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert epoch["val_pgd_n"] == epoch["val_clean_n"] == 45
    for bad, words in (("everything", "neither an integer nor 'all'"), ("0", ">= 1")):
        result = CliRunner().invoke(main, ["train", "--eval-limit", bad])
        assert result.exit_code == 2 and words in result.output


def test_a_study_spec_says_all_and_its_dry_run_command_means_the_same(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[train]\nbackend = "numpy"\nmodel = "softmax"\nepochs = 2\nval_size = 100\n'
                    'eval_limit = "all"\n[grid]\nseed = [0, 1]\n')
    cell = load_spec(spec).cells()[0]
    assert cell.config().eval_limit is None
    result = CliRunner().invoke(main, ["study", "run", str(spec), "--dry-run", "--no-measure",
                                       "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = result.stdout.splitlines()[0]
    assert "--eval-limit all" in line
    params = dict(train.make_context("train", shlex.split(line)[2:]).params)
    for key in ("out", "resume", "amp", "channels_last", "compile_", "checkpoint_every"):
        params.pop(key)
    assert given_config(params.pop("preset"), params, {}).resolved() == cell.config()
