"""minidyn.evaluation.analysis on synthetic numbers and a synthetic run directory."""
import numpy as np
import pytest

from minidyn.evaluation.analysis import (PAPER_RANGE, bin_by_fosc, choose_range, default_epochs,
                              fosc_distributions, fosc_share, gaussian_kde, pearson,
                              scott_bandwidth)
from minidyn.errors import ConfigError


def test_bins_add_up_and_recover_a_linear_relation():
    rng = np.random.default_rng(0)
    fosc = rng.uniform(-0.02, 0.12, 5000)
    loss = 3 - 20 * fosc + rng.normal(0, 0.05, fosc.size)
    correct = rng.random(fosc.size) < np.clip(5 * fosc + 0.3, 0, 1)
    b = bin_by_fosc(fosc, loss, correct, bins=20, fosc_range=(0, 0.1))
    assert b["counts"].sum() + b["n_below"] + b["n_above"] == b["n"] == 5000
    assert len(b["counts"]) == 20 and len(b["edges"]) == 21
    assert b["corr_accuracy"] > 0.9 and b["corr_loss"] < -0.99
    inside = (fosc >= 0) & (fosc <= 0.1)
    assert np.nansum(b["accuracy"] * b["counts"]) / 100 == pytest.approx(correct[inside].sum())
    # everything inside: the counts alone add up to N; the right edge belongs to the last bin
    b2 = bin_by_fosc(np.array([0.0, 0.05, 0.1, 0.1]), np.zeros(4), np.ones(4), bins=2)
    assert b2["counts"].tolist() == [1, 3] and b2["n_above"] == 0
    with pytest.raises(ConfigError):
        bin_by_fosc(fosc, loss, correct, fosc_range=(0.1, 0.0))


def test_kde_integrates_to_one_and_matches_a_gaussian():
    rng = np.random.default_rng(1)
    s = rng.normal(0.3, 0.1, 4000)
    h = scott_bandwidth(s)
    assert h == pytest.approx(s.std(ddof=1) * 4000 ** -0.2)
    grid = np.linspace(-0.3, 0.9, 2001)
    dens = gaussian_kde(s, grid)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-3)
    truth = np.exp(-0.5 * ((grid - 0.3) / 0.1) ** 2) / (0.1 * np.sqrt(2 * np.pi))
    assert np.abs(dens - truth).max() < 0.25  # a peak of about 4
    assert np.isnan(gaussian_kde([np.nan], grid)).all()
    assert pearson([1, 2], [3, 4]) != pearson([1, 2], [3, 4])  # NaN with < 3 points


def _fosc_run(path, epochs=5, n=300, seed=2):
    """A run directory holding only fosc/epoch_000.npy .. epoch_{epochs-1}.npy (0-based names)."""
    rng = np.random.default_rng(seed)
    (path / "fosc").mkdir()
    for t in range(epochs):
        v = rng.exponential(0.5 / (t + 1), n).astype(np.float32)
        v[:10] = np.nan  # not recorded
        np.save(path / "fosc" / f"epoch_{t:03d}.npy", v)
    return path


def test_fosc_distributions_of_a_run_directory_count_epochs_from_1(tmp_path):
    _fosc_run(tmp_path)
    d = fosc_distributions(tmp_path)
    assert d["epochs"] == [1, 3, 5] == default_epochs([1, 2, 3, 4, 5])
    for e in d["epochs"]:
        assert np.trapezoid(d["density"][e], d["grid"]) == pytest.approx(1.0, abs=1e-3)
        assert d["n"][e] == 290
    assert list(d["share"]) == [1, 2, 3, 4, 5]
    assert d["share"][5] > d["share"][1]  # later epochs are more concentrated near 0
    assert d["share"][1] == pytest.approx(fosc_share(np.load(tmp_path / "fosc" / "epoch_000.npy")))
    second = fosc_distributions(tmp_path, epochs=[2])
    assert second["epochs"] == [2]  # epoch 2 is the file epoch_001.npy
    assert second["quantiles"][2][1] == pytest.approx(np.nanmedian(np.load(tmp_path / "fosc" / "epoch_001.npy")))
    with pytest.raises(ConfigError, match=r"epoch 9 \(fosc/epoch_008.npy\).*1, 2, 3, 4, 5"):
        fosc_distributions(tmp_path, epochs=[9])
    with pytest.raises(ConfigError, match="counted from 1"):
        fosc_distributions(tmp_path, epochs=[0, 1])


def test_the_paper_range_falls_back_to_auto_only_when_it_misses_most_examples():
    rng = np.random.default_rng(3)
    mnist_like = rng.uniform(0.15, 1.2, 400)  # FOSC at MNIST scale: none in [0, 0.1]
    rng_used, source = choose_range(mnist_like)
    assert source == "fallback" and rng_used[1] > PAPER_RANGE[1]
    b = bin_by_fosc(mnist_like, np.zeros(400), np.ones(400), bins=20, fosc_range=rng_used)
    assert b["counts"].sum() >= 0.95 * 400 and (b["counts"] > 0).sum() >= 10  # a non-empty Fig 1a
    assert bin_by_fosc(mnist_like, np.zeros(400), np.ones(400), bins=20, fosc_range=PAPER_RANGE)["counts"].sum() == 0
    assert choose_range(rng.uniform(0, 0.09, 400)) == (PAPER_RANGE, "paper")
    assert choose_range(mnist_like, (0.0, 0.1)) == ((0.0, 0.1), "given")  # asked for: kept
    assert choose_range(mnist_like, "auto") == (rng_used, "auto")
    with pytest.raises(ConfigError):
        choose_range(mnist_like, "paper")


def test_clipped_trajectories_follow_the_same_points():
    from minidyn.evaluation.analysis import trajectories
    from minidyn.backend import get_backend
    from minidyn.data import Dataset

    B = get_backend("numpy", dtype="float64")
    rng = np.random.default_rng(0)
    data = Dataset("t", rng.integers(0, 256, (30, 1, 4, 4), dtype=np.uint8), rng.integers(0, 3, 30), 3, "test")
    model = B.make_model("mlp", (1, 4, 4), 3, 0)
    paper = trajectories(B, model, data, eps=0.2, n=5, steps=4)
    clipped = trajectories(B, model, data, eps=0.2, n=5, steps=4, fosc_bounds=(0.0, 1.0))
    np.testing.assert_allclose(clipped["loss"], paper["loss"], rtol=1e-9)  # the same x^k
    assert (clipped["fosc"] <= paper["fosc"] + 1e-12).all()  # a max over a subset of the ball


# --- the figures (matplotlib's Figure objects, never saved) -----------------------------------
def _bins_dict(clipped_range=False):
    rng = np.random.default_rng(4)
    fosc = rng.uniform(0.2, 1.0, 200)
    r, source = choose_range(fosc)
    return {**bin_by_fosc(fosc, fosc, fosc < 0.5, 10, r), "fosc_range": r, "range_source": source,
            "n_in_paper_range": 0}


def _trajectories_dict(n, steps=6):
    rng = np.random.default_rng(5)
    return {"indices": np.arange(n) * 7, "steps": steps, "fosc": rng.random((steps + 1, n)),
            "loss": rng.random((steps + 1, n))}


@pytest.mark.parametrize("n", [5, 12, 20])
def test_trajectory_lines_have_distinct_colours_and_a_legend(n):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_rgba

    from minidyn.evaluation.plots import trajectories_figure

    fig = trajectories_figure(_trajectories_dict(n))
    fosc_ax, loss_ax = fig.axes[:2]
    colours = [to_rgba(line.get_color()) for line in fosc_ax.get_lines()]
    assert len(colours) == n and len(set(colours)) == n
    assert colours == [to_rgba(line.get_color()) for line in loss_ax.get_lines()]  # same example, same colour
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [f"test #{7 * j}" for j in range(n)]


def test_distributions_figure_names_the_shaded_band(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.patches import Patch, Rectangle

    from minidyn.evaluation.plots import distributions_figure

    fig = distributions_figure(fosc_distributions(_fosc_run(tmp_path)))
    legend = fig.axes[0].get_legend()
    entries = dict(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))
    band = [k for k in entries if k.startswith("FOSC in [0, 0.1]")]
    assert band and isinstance(entries[band[0]], (Patch, Rectangle))
    assert "epoch 1  (" in " ".join(entries)  # the KDE lines count epochs from 1
    assert list(fig.axes[1].get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]  # the share per epoch


def test_titles_name_the_papers_figure_and_the_feasible_set(tmp_path):
    pytest.importorskip("matplotlib")
    from minidyn.evaluation import plots

    figures = {"Fig. 1a": plots.fosc_bins_figure(_bins_dict(), "run"),
               "Fig. 1b": plots.trajectories_figure(_trajectories_dict(3), "run"),
               "Figs. 2, 3 and 5": plots.distributions_figure(fosc_distributions(_fosc_run(tmp_path)), "run"),
               "Fig. 4a": plots.eps_curve_figure({"eps": np.array([0, 0.1]), "accuracy": np.array([90.0, 80.0]),
                                                  "n": 10}, "run")}
    for name, fig in figures.items():
        title = fig.get_suptitle()
        assert f"cf. {name} of Wang et al. 2019" in title
        assert ("low FOSC = " in title) == (name != "Fig. 4a"), title  # no FOSC in Fig 4a
    assert "only 0 of 200 lie in the paper's [0, 0.1]" in figures["Fig. 1a"].axes[1].get_xlabel()
    for fig in (plots.fosc_bins_figure(_bins_dict(), "run", clipped=True),
                plots.trajectories_figure(_trajectories_dict(3), "run", clipped=True)):
        title = fig.get_suptitle()
        assert "eps-ball ∩ the pixel box [0, 1]^d" in title and "clipped to" not in title
