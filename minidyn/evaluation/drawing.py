"""What every minidyn figure is drawn with (matplotlib, the `plot` extra, imported lazily): a
Figure on the Agg canvas, never pyplot (no global state, no display needed), saved at one dpi.
Shared by minidyn.evaluation.plots (one run's analyses) and minidyn.studies.figures (a study)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

PAPER = "Wang et al. 2019"


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kw):
    """(a matplotlib Figure width x height inches, constrained layout, on the Agg canvas; its
    axes as a 2-D array (nrows, ncols)); kw goes to Figure.subplots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save(fig, path: Path) -> str:
    """Write `fig` as a PNG at `path`; its file name."""
    fig.savefig(path, dpi=110)
    return path.name


def line_colours(n: int) -> list:
    """n distinct RGBA colours: tab20 for up to 20 (its 10 strong hues first, then their light
    partners), evenly spaced on `turbo` beyond that."""
    from matplotlib import colormaps

    if n <= 20:
        tab = colormaps["tab20"].colors
        return [tab[i] for i in list(range(0, 20, 2)) + list(range(1, 20, 2))][:n]
    return [colormaps["turbo"](v) for v in np.linspace(0, 1, n)]
