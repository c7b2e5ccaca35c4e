"""minidyn.analysis on synthetic numbers and a synthetic run directory."""
import numpy as np
import pytest

from minidyn.analysis import (bin_by_fosc, default_epochs, fosc_distributions, fosc_share,
                              gaussian_kde, pearson, scott_bandwidth)
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


def test_fosc_distributions_of_a_run_directory(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "fosc").mkdir()
    for e in range(5):
        v = rng.exponential(0.5 / (e + 1), 300).astype(np.float32)
        v[:10] = np.nan  # not recorded
        np.save(tmp_path / "fosc" / f"epoch_{e:03d}.npy", v)
    d = fosc_distributions(tmp_path)
    assert d["epochs"] == [0, 2, 4] == default_epochs([0, 1, 2, 3, 4])
    for e in d["epochs"]:
        assert np.trapezoid(d["density"][e], d["grid"]) == pytest.approx(1.0, abs=1e-3)
        assert d["n"][e] == 290
    assert list(d["share"]) == [0, 1, 2, 3, 4]
    assert d["share"][4] > d["share"][0]  # later epochs are more concentrated near 0
    assert d["share"][0] == pytest.approx(fosc_share(np.load(tmp_path / "fosc" / "epoch_000.npy")))
    assert fosc_distributions(tmp_path, epochs=[1])["epochs"] == [1]
    with pytest.raises(ConfigError, match="epoch_009"):
        fosc_distributions(tmp_path, epochs=[9])


def test_clipped_trajectories_follow_the_same_points():
    from minidyn.analysis import trajectories
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
