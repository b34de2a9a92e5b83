"""Quality-control pictures: checkerboards, colour overlays, metric curves, grids.

Needs matplotlib (``pip install 'regframe[viz]'``).  3-D images are shown as
their three orthogonal central slices.  Every function writes a PNG and returns
its path; nothing is shown on screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ._optional import require
from .image import Image

__all__ = ["checkerboard", "overlay", "slices", "registration_report", "plot_metric_history"]


def _plt():
    mpl = require("matplotlib", "QC pictures")
    mpl.use("Agg", force=False)
    return require("matplotlib.pyplot", "QC pictures")


def _normalise(a: NDArray) -> NDArray[np.float64]:
    a = np.asarray(a, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros_like(a)
    lo, hi = np.percentile(finite, [1.0, 99.0])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _plot_history(ax, values: Sequence[float], levels: Sequence[int] | None, fontsize: int = 9) -> None:
    """Metric per iteration, one line per run of equal level (stages stay separate)."""
    v = np.asarray(values, dtype=np.float64)
    it = np.arange(v.size)
    if levels is None or len(levels) != v.size or v.size == 0:
        ax.plot(it, v)
        return
    lv = np.asarray(levels)
    breaks = np.flatnonzero(np.diff(lv) != 0) + 1
    colours = {}
    for seg in np.split(np.arange(v.size), breaks):
        level = int(lv[seg[0]])
        first = level not in colours
        line = ax.plot(it[seg], v[seg], color=colours.get(level), label=f"level {level}" if first else None)
        colours.setdefault(level, line[0].get_color())
    ax.legend(fontsize=fontsize)


def slices(image: Image) -> list[NDArray[np.float64]]:
    """2-D views of an image: itself in 2-D, the three central slices in 3-D."""
    a = np.asarray(image.array, dtype=np.float64)
    if a.ndim == 2:
        return [a]
    k, j, i = (n // 2 for n in a.shape)
    return [a[k], a[:, j, :], a[:, :, i]]


def checkerboard(a: NDArray, b: NDArray, tiles: int = 8) -> NDArray[np.float64]:
    """Checkerboard mosaic of two equally shaped 2-D arrays (each normalised)."""
    a, b = _normalise(a), _normalise(b)
    yy, xx = np.indices(a.shape)
    ty = max(1, a.shape[0] // tiles)
    tx = max(1, a.shape[1] // tiles)
    mask = ((yy // ty) + (xx // tx)) % 2 == 0
    return np.where(mask, a, b)


def overlay(a: NDArray, b: NDArray) -> NDArray[np.float64]:
    """Magenta/green overlay of two 2-D arrays: grey where they agree."""
    a, b = _normalise(a), _normalise(b)
    return np.stack([a, b, a], axis=-1)


def registration_report(
    fixed: Image,
    moving_before: Image,
    moving_after: Image,
    path: str | Path,
    *,
    values: Sequence[float] | None = None,
    levels: Sequence[int] | None = None,
    title: str = "regframe registration",
) -> Path:
    """One PNG: checkerboard and overlay before/after for each view, and the metric curve.

    Parameters
    ----------
    fixed : Image
    moving_before, moving_after : Image
        The moving image resampled onto the fixed grid with the initial and the
        final transform.
    path : path-like
        Output PNG.
    values, levels : sequences, optional
        Metric value and level per iteration (from ``result.history``).
    """
    plt = _plt()
    views_f, views_b, views_a = slices(fixed), slices(moving_before), slices(moving_after)
    n_rows = len(views_f)
    n_cols = 4 + (1 if values is not None else 0)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 3.2 * n_rows), squeeze=False)
    for r, (f, b, a) in enumerate(zip(views_f, views_b, views_a)):
        panels = [
            (checkerboard(f, b), "checkerboard before"),
            (checkerboard(f, a), "checkerboard after"),
            (overlay(f, b), "overlay before"),
            (overlay(f, a), "overlay after"),
        ]
        for c, (img, name) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.set_axis_off()
    if values is not None:
        ax = axes[0, n_cols - 1]
        _plot_history(ax, values, levels, fontsize=7)
        ax.set_title("metric per iteration", fontsize=9)
        ax.set_xlabel("iteration")
        for r in range(1, n_rows):
            axes[r, n_cols - 1].set_axis_off()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_metric_history(values: Sequence[float], path: str | Path, *, levels: Sequence[int] | None = None) -> Path:
    """Plot the metric value per iteration into ``path``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    _plot_history(ax, values, levels)
    ax.set_xlabel("iteration")
    ax.set_ylabel("metric value")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
