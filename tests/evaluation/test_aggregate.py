"""minidyn.evaluation.aggregate: grouping runs by config, mean ± std over seeds, paired t intervals."""
import json
import math
import statistics

import numpy as np
import pytest

from minidyn.evaluation.aggregate import (IGNORED_KEYS, Summary, betainc, flat_row, format_summary,
                               grad_evals_per_example, group_runs, paired_difference, summarize,
                               summarize_groups, t_cdf, t_quantile)

CONFIG = {"backend": "numpy", "dataset": "mnist", "model": "mlp", "method": "dynamic", "epochs": 2,
          "eps": 0.3, "steps": 10, "c_max": 0.5, "seed": 0, "data_dir": None, "device": "auto",
          "version": "0.1.0", "c_max_used": 0.5, "eval_limit": 500, "eval_steps": 20}


@pytest.mark.parametrize("p, df, t", [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776),
                                      (0.975, 9, 2.262), (0.975, 30, 2.042), (0.95, 10, 1.812),
                                      (0.995, 5, 4.032), (0.9995, 1, 636.619), (0.975, 1e7, 1.960)])
def test_t_quantile_matches_the_tables(p, df, t):
    assert t_quantile(p, df) == pytest.approx(t, abs=1e-3)
    assert t_quantile(1 - p, df) == pytest.approx(-t, abs=1e-3)  # symmetric
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)


def test_t_distribution_basics():
    assert t_quantile(0.5, 3) == pytest.approx(0, abs=1e-9) and t_cdf(0, 3) == 0.5
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248)  # 1 - sum_{j<2} C(4,j) .4^j .6^(4-j)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_summarize_is_mean_and_sample_std():
    values = [81.2, 80.9, 81.6]
    s = summarize(values)
    assert s.mean == pytest.approx(statistics.mean(values)) and s.n == 3
    assert s.std == pytest.approx(statistics.stdev(values))  # ddof=1
    assert summarize([97.5]) == Summary(97.5, None, 1)
    assert summarize([1.0, None, float("nan"), 3.0]) == Summary(2.0, pytest.approx(math.sqrt(2)), 2)
    assert summarize([]) == Summary(None, None, 0)


def test_format_summary():
    assert format_summary(summarize([81.2, 80.9, 81.6]), 3) == "81.23 ± 0.35 (n=3)"
    assert format_summary(summarize([97.1])) == "97.10"
    assert format_summary(summarize([97.1]), runs=3) == "97.10 (n=1)"  # only one run has it
    assert format_summary({"mean": None, "std": None, "n": 0}) == "-"
    assert format_summary(summarize([2.5, 3.5]), 2, digits=1) == "3.0 ± 0.7 (n=2)"


def test_runs_that_differ_only_in_seed_are_one_group():
    configs = []
    for method in ("standard", "dynamic"):
        for seed in (0, 1, 2):  # and options that do not change the trained model
            configs.append({**CONFIG, "method": method, "seed": seed, "data_dir": f"/data{seed}",
                            "device": "cpu" if seed else "cuda", "c_max_used": 0.4 + seed,
                            "version": f"0.{seed}", "eval_limit": 100 * seed + 1})
    groups = group_runs(configs)
    assert [g.label for g in groups] == ["standard", "dynamic"]
    assert [g.members for g in groups] == [[0, 1, 2], [3, 4, 5]]
    assert [g.seeds for g in groups] == [[0, 1, 2], [0, 1, 2]]
    assert not IGNORED_KEYS & set(groups[0].settings) and groups[0].settings["eps"] == 0.3


def test_labels_name_what_varies_between_groups():
    configs = [{**CONFIG, "eps": 0.1}, {**CONFIG, "eps": 0.3}, {**CONFIG, "method": "standard", "eps": 0.3},
               {**CONFIG, "eps": 0.1, "seed": 1}]
    groups = group_runs(configs)
    assert [g.label for g in groups] == ["dynamic, eps 0.1", "dynamic, eps 0.3", "standard, eps 0.3"]
    assert groups[0].members == [0, 3]
    assert [g.label for g in group_runs([CONFIG, {**CONFIG, "seed": 4}])] == ["dynamic"]
    lists = group_runs([{**CONFIG, "lr_milestones": [2, 4]}, {**CONFIG, "lr_milestones": [3, 4]}])
    assert [g.label for g in lists] == ["dynamic, lr_milestones 2,4", "dynamic, lr_milestones 3,4"]


def test_a_run_without_config_is_a_group_of_its_own():
    groups = group_runs([None, CONFIG, None], names=["a.npz", "runs/x", "b.npz"])
    assert [(g.label, g.members, g.seeds) for g in groups] == [
        ("a.npz", [0], [None]), ("dynamic", [1], [0]), ("b.npz", [2], [None])]


def test_summarize_groups_and_csv_rows():
    configs = [{**CONFIG, "seed": s} for s in range(3)] + [{**CONFIG, "method": "standard"}]
    rows = [{"pgd20": 80.0, "cost": 5.0}, {"pgd20": 82.0, "cost": None}, {"pgd20": 81.0, "cost": 7.0},
            {"pgd20": 70.0, "cost": 11.0}]
    table = summarize_groups(group_runs(configs), rows, ["pgd20", "cost"])
    assert table[0]["columns"]["pgd20"] == {"mean": 81.0, "std": 1.0, "n": 3}
    assert table[0]["columns"]["cost"] == {"mean": 6.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert table[1]["columns"]["pgd20"] == {"mean": 70.0, "std": None, "n": 1}
    row = flat_row(table[0], ["pgd20", "cost"])
    assert row == {"group": "dynamic", "seeds": "0 1 2", "runs": 3, "pgd20_mean": 81.0, "pgd20_std": 1.0,
                   "pgd20_n": 3, "cost_mean": 6.0, "cost_std": pytest.approx(math.sqrt(2)), "cost_n": 2}


def test_paired_difference_pairs_by_seed_with_a_t_interval():
    a = {2: 83.0, 0: 81.0, 1: 82.5, 7: 99.0}   # seed 7 has no baseline: left out
    b = {0: 80.0, 1: 80.5, 2: 80.0, 5: 10.0}
    d = paired_difference(a, b)
    diffs = [1.0, 2.0, 3.0]                   # seeds 0, 1, 2
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)
    assert d.n == 3 and sorted(d.seeds) == [0, 1, 2]
    assert d.mean == pytest.approx(2.0) and d.std == pytest.approx(1.0)
    assert d.low == pytest.approx(2.0 - half, abs=1e-3) and d.high == pytest.approx(2.0 + half, abs=1e-3)
    one = paired_difference({0: 2.0}, {0: 1.5})
    assert (one.mean, one.low, one.high, one.n) == (0.5, None, None, 1)
    assert paired_difference({0: 1.0}, {1: 1.0}).n == 0


def test_paired_interval_is_wider_at_lower_n_and_covers_a_constant_shift():
    base = {s: 80.0 + s for s in range(10)}
    shifted = paired_difference({s: v + 1.5 for s, v in base.items()}, base)
    assert shifted.mean == pytest.approx(1.5) and shifted.low == pytest.approx(1.5)
    rng = np.random.default_rng(0)
    d = rng.normal(size=10)
    wide = paired_difference(dict(enumerate(d[:3])), dict.fromkeys(range(3), 0.0), level=0.95)
    narrow = paired_difference(dict(enumerate(d[:3])), dict.fromkeys(range(3), 0.0), level=0.5)
    assert wide.low < narrow.low < narrow.mean < narrow.high < wide.high


def write_run(path, grad_evals, n_train=None, limit=None):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": t, "grad_evals": g}) + "\n"
                                                for t, g in enumerate(grad_evals)))
    (path / "config.json").write_text(json.dumps({**CONFIG, "limit": limit}))
    if n_train is not None:
        (path / "fosc").mkdir()
        np.save(path / "fosc" / "epoch_000.npy", np.full(n_train, np.nan, np.float32))
    return path


def test_grad_evals_per_example(tmp_path):
    assert grad_evals_per_example(write_run(tmp_path / "a", [165, 140], n_train=50)) == pytest.approx(6.1)
    assert grad_evals_per_example(write_run(tmp_path / "b", [100, 100], limit=40)) == 5.0
    assert grad_evals_per_example(write_run(tmp_path / "c", [100])) is None      # size unknown
    assert grad_evals_per_example(tmp_path / "missing") is None
    assert grad_evals_per_example(write_run(tmp_path / "d", [0, 0], n_train=8)) == 0.0  # unsecured
