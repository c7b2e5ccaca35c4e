"""A 1-D Gaussian kernel density estimate in numpy alone (no scipy): the density curves of the
training FOSC in Figs 2, 3 and 5 (minidyn.evaluation.analysis.fosc_distributions)."""
from __future__ import annotations

import math

import numpy as np


def scott_bandwidth(samples) -> float:
    """Scott's rule for a 1-D Gaussian KDE: std (ddof 1) * n^(-1/5), as scipy's gaussian_kde."""
    s = np.asarray(samples, float)
    if s.size < 2:
        return 1e-6
    h = float(s.std(ddof=1)) * s.size ** (-1 / 5)
    return h if h > 0 else 1e-6


def gaussian_kde(samples, grid, bandwidth: float | None = None, chunk: int = 64) -> np.ndarray:
    """Gaussian kernel density of 1-D `samples` at the points `grid` (numpy only, no scipy).

    density(g) = mean_i N(g; s_i, h^2), h by Scott's rule unless given. Computed over chunks of
    the grid, so memory is len(samples) * chunk.
    """
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    grid = np.asarray(grid, float)
    if s.size == 0:
        return np.full(grid.shape, np.nan)
    h = bandwidth or scott_bandwidth(s)
    out = np.empty(grid.size)
    norm = 1.0 / (s.size * h * math.sqrt(2 * math.pi))
    flat = grid.ravel()
    for i in range(0, flat.size, chunk):
        u = (flat[i:i + chunk, None] - s[None, :]) / h
        out[i:i + chunk] = np.exp(-0.5 * u * u).sum(axis=1) * norm
    return out.reshape(grid.shape)
