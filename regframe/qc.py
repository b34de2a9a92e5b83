"""Quality-control pictures: checkerboards, colour overlays, metric curves, deformation.

Needs matplotlib (``pip install 'regframe[viz]'``).  Every picture is drawn in
physical space (mm axes, true aspect ratio whatever the spacing) and, for 3-D
images, as the three orthogonal planes in radiological orientation as 3D
Slicer and ITK-SNAP show them (see :mod:`regframe._views`): axial with the
patient's right on screen left and anterior up, coronal and sagittal with
superior up; each plane is labelled with its position in mm and patient
directions at its edges.  Every function writes a PNG and returns its path;
nothing is shown on screen.

Colours: in overlays the fixed image is magenta and the moving image green
(grey where they agree); in checkerboards fixed tiles are grey and moving
tiles green-tinted, with thin tile borders so the tiles stay visible when the
images agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._optional import require
from ._views import View, draw_view, plane_views
from .image import Image

__all__ = ["checkerboard", "overlay", "slices", "registration_report", "plot_metric_history"]

#: Tint of the moving image's tiles in a checkerboard (RGB multipliers).
_MOVING_TINT = np.array([0.72, 1.0, 0.72])
_TILE_EDGE = dict(color="#ffcc00", linewidth=0.5, alpha=0.8)


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


def slices(image: Image) -> list[NDArray[np.float64]]:
    """2-D pictures of an image: itself in 2-D, axial, coronal and sagittal planes in 3-D.

    Oriented for ``imshow(origin="upper")`` (row 0 at the top) as the QC
    pictures show them; :func:`regframe._views.plane_views` gives their
    physical extents.
    """
    a = np.asarray(image.array, dtype=np.float64)
    return [v.take(a) for v in plane_views(image)]


def _tile_mask(shape: tuple[int, int], tile: tuple[int, int]) -> NDArray[np.bool_]:
    yy, xx = np.indices(shape)
    return ((yy // max(1, tile[0])) + (xx // max(1, tile[1]))) % 2 == 0


def checkerboard(a: NDArray, b: NDArray, tiles: int = 8, *, tile: tuple[int, int] | None = None) -> NDArray[np.float64]:
    """Checkerboard mosaic of two equally shaped 2-D arrays (each normalised).

    ``tiles`` per side by default, or tiles of ``tile = (rows, cols)`` pixels.
    Tiles where the mask is True show ``a``.
    """
    a, b = _normalise(a), _normalise(b)
    if tile is None:
        tile = (max(1, a.shape[0] // tiles), max(1, a.shape[1] // tiles))
    return np.where(_tile_mask(a.shape, tile), a, b)


def overlay(a: NDArray, b: NDArray) -> NDArray[np.float64]:
    """Magenta/green overlay of two 2-D arrays: ``a`` magenta, ``b`` green, grey where they agree."""
    a, b = _normalise(a), _normalise(b)
    return np.stack([a, b, a], axis=-1)


# ----------------------------------------------------------------- drawing helpers
def _pixel_mm(view: View, shape: tuple[int, int]) -> tuple[float, float]:
    left, right, bottom, top = view.extent
    return abs(right - left) / shape[1], abs(top - bottom) / shape[0]


def _checker_panel(ax: Any, view: View, f: NDArray, m: NDArray, tiles: int) -> None:
    """Fixed tiles grey, moving tiles green-tinted, tile borders drawn (square tiles in mm)."""
    px, py = _pixel_mm(view, f.shape)
    side = max(f.shape[1] * px, f.shape[0] * py) / tiles  # mm
    tile = (max(1, int(round(side / py))), max(1, int(round(side / px))))
    mask = _tile_mask(f.shape, tile)
    fn, mn = _normalise(f), _normalise(m)
    rgb = np.where(mask[..., None], fn[..., None], mn[..., None] * _MOVING_TINT)
    draw_view(ax, view, rgb)
    left, right, bottom, top = view.extent
    for r in range(tile[0], f.shape[0], tile[0]):
        ax.plot([left, right], [top + (bottom - top) * r / f.shape[0]] * 2, **_TILE_EDGE)
    for c in range(tile[1], f.shape[1], tile[1]):
        ax.plot([left + (right - left) * c / f.shape[1]] * 2, [bottom, top], **_TILE_EDGE)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)


def _is_nonlinear(transform: Any) -> bool:
    if transform is None:
        return False
    if not getattr(transform, "is_linear", True):
        return True
    parts = getattr(transform, "transforms", None)
    return bool(parts) and any(_is_nonlinear(t) for t in parts)


# ---------------------------------------------------------------------- metric curve
def _segments(levels: Sequence[int] | None, stages: Sequence[int] | None,
              n: int) -> list[tuple[tuple[int, int], int, int, int]]:
    """``((stage, part), level, start, stop)`` runs of equal stage and level.

    A level that goes back within one stage index starts a new ``part``
    (``register("affine")`` without stage indices runs a rigid, then an
    affine part).
    """
    if n == 0:
        return []
    lv = np.zeros(n, dtype=np.int64) if levels is None or len(levels) != n else np.asarray(levels, dtype=np.int64)
    st = np.zeros(n, dtype=np.int64) if stages is None or len(stages) != n else np.asarray(stages, dtype=np.int64)
    out = []
    part, start = 0, 0
    for i in range(1, n + 1):
        if i < n and st[i] == st[i - 1] and lv[i] == lv[i - 1]:
            continue
        out.append(((int(st[start]), part), int(lv[start]), start, i))
        if i < n:
            part = 0 if st[i] != st[i - 1] else part + int(lv[i] < lv[i - 1])
            start = i
    return out


def _stage_name(key: tuple[int, int], stage_names: Mapping[int, str] | Sequence[str] | None,
                n_stages: int) -> str:
    stage, part = key
    name = ""
    if stage_names is not None:
        try:
            name = str(stage_names[stage])
        except (KeyError, IndexError):
            name = ""
    if not name and n_stages > 1:
        name = f"stage {stage + 1}"
    return name + (f" part {part + 1}" if part else "")


def _plot_history(ax: Any, values: Sequence[float], levels: Sequence[int] | None,
                  stages: Sequence[int] | None = None,
                  stage_names: Mapping[int, str] | Sequence[str] | None = None, fontsize: int = 7) -> None:
    """Metric per iteration: one colour per stage, lighter to darker per level, boundaries marked.

    Levels are counted as in the progress log: 1-based, ``"level 2/3"`` of the stage.
    """
    v = np.asarray(values, dtype=np.float64)
    segs = _segments(levels, stages, v.size)
    if not segs:
        ax.plot(np.arange(v.size), v)
        return
    keys = list(dict.fromkeys(k for k, *_ in segs))
    n_levels = {k: max(lv for t, lv, *_ in segs if t == k) + 1 for k in keys}
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    it = np.arange(v.size)
    previous = None
    for key, level, a, b in segs:
        colour = palette[keys.index(key) % len(palette)]
        shade = 0.45 + 0.55 * (level + 1) / n_levels[key]
        name = _stage_name(key, stage_names, len(keys))
        label = f"{name + ' ' if name else ''}level {level + 1}/{n_levels[key]}"
        ax.plot(it[a:b], v[a:b], color=colour, alpha=shade, linewidth=1.2, label=label)
        if a > 0:
            new_stage = key != previous
            ax.axvline(a - 0.5, color="k" if new_stage else "0.6", linewidth=1.0 if new_stage else 0.6,
                       linestyle="-" if new_stage else ":")
        previous = key
    ax.legend(fontsize=fontsize, loc="best", title="solid line: new stage; dotted: new level",
              title_fontsize=fontsize - 1)


def _history_lists(history: Sequence[Any]) -> tuple[list[float], list[int], list[int]]:
    return ([float(h.value) for h in history], [int(h.level) for h in history],
            [int(getattr(h, "stage", 0)) for h in history])


def _from_result(result: Any, history: Sequence[Any] | None, transform: Any,
                 stage_names: Mapping[int, str] | Sequence[str] | None) -> tuple[Any, Any, Any]:
    """History, transform and stage names of a RegistrationResult (explicit arguments win)."""
    if result is None:
        return history, transform, stage_names
    records = getattr(result, "stages", ()) or ()
    names = [str(getattr(r, "kind", "")) for r in records] or None
    return (result.history if history is None else history,
            result.transform if transform is None else transform,
            names if stage_names is None else stage_names)


# ------------------------------------------------------------------------- reports
def registration_report(
    fixed: Image,
    moving_before: Image,
    moving_after: Image,
    path: str | Path,
    *,
    values: Sequence[float] | None = None,
    levels: Sequence[int] | None = None,
    stages: Sequence[int] | None = None,
    history: Sequence[Any] | None = None,
    stage_names: Mapping[int, str] | Sequence[str] | None = None,
    transform: Any = None,
    inverse_transform: Any = None,
    result: Any = None,
    tiles: int = 8,
    title: str = "regframe registration",
) -> Path:
    """One PNG: per plane, checkerboards and overlays before/after; the metric curve; the deformation.

    Parameters
    ----------
    fixed : Image
    moving_before, moving_after : Image
        The moving image resampled onto the fixed grid with the initial and the
        final transform.
    path : path-like
        Output PNG.
    values, levels, stages : sequences, optional
        Metric value, level and stage index per iteration.
    history : sequence of RegistrationState, optional
        ``result.history``; gives ``values``, ``levels`` and ``stages``
        (``state.stage``, 0 when absent).
    stage_names : mapping or sequence, optional
        Name of each stage index for the legend (e.g. ``["rigid", "bspline"]``).
    transform : Transform, optional
        The final fixed-to-moving transform.  When it is non-linear (a
        B-spline, a displacement field, or a composite holding one) two
        columns are added: the deformed grid and the Jacobian-determinant map.
    inverse_transform : Transform, optional
        The moving-to-fixed inverse of a non-linear ``transform`` (symmetric
        registrations: ``result.inverse_transform``); adds the map of the
        inverse-consistency error ``|T^-1(T(x)) - x|``.
    result : RegistrationResult, optional
        Gives ``history``, ``transform``, ``inverse_transform`` and
        ``stage_names`` (the ``kind`` of each of ``result.stages``) unless
        they are given explicitly.
    tiles : int
        Checkerboard tiles along the longer side of each plane (square in mm).
    title : str
    """
    from .quality import draw_deformation, draw_inverse_consistency

    plt = _plt()
    history, transform, stage_names = _from_result(result, history, transform, stage_names)
    inverse = inverse_transform if inverse_transform is not None else getattr(result, "inverse_transform", None)
    if history is not None:
        values, levels, stages = _history_lists(history)
    views = plane_views(fixed)
    f_arr = np.asarray(fixed.array, dtype=np.float64)
    b_arr = np.asarray(moving_before.array, dtype=np.float64)
    a_arr = np.asarray(moving_after.array, dtype=np.float64)
    deform = _is_nonlinear(transform)
    consistency = deform and inverse is not None
    n_rows = len(views)
    n_cols = 4 + 2 * deform + consistency + (values is not None)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.3 * n_cols, 3.5 * n_rows), squeeze=False)
    for r, view in enumerate(views):
        f, b, a = view.take(f_arr), view.take(b_arr), view.take(a_arr)
        panels = [("checkerboard before", "chk", b), ("checkerboard after", "chk", a),
                  ("overlay before", "ovl", b), ("overlay after", "ovl", a)]
        for c, (name, kind, m) in enumerate(panels):
            ax = axes[r, c]
            if kind == "chk":
                _checker_panel(ax, view, f, m, tiles)
                legend = "fixed grey | moving green"
            else:
                draw_view(ax, view, overlay(f, m))
                legend = "fixed magenta | moving green"
            ax.set_title(f"{view.title}\n{name}: {legend}", fontsize=7)
        if deform:
            draw_deformation(axes[r, 4], axes[r, 5], transform, fixed, view, background=f)
        if consistency:
            draw_inverse_consistency(axes[r, 6], transform, inverse, fixed, view)
    if values is not None:
        ax = axes[0, n_cols - 1]
        _plot_history(ax, values, levels, stages, stage_names, fontsize=6)
        ax.set_title("metric per iteration", fontsize=8)
        ax.set_xlabel("iteration", fontsize=7)
        ax.tick_params(labelsize=6)
        for r in range(1, n_rows):
            axes[r, n_cols - 1].set_axis_off()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_metric_history(
    values: Sequence[float] | None = None,
    path: str | Path | None = None,
    *,
    levels: Sequence[int] | None = None,
    stages: Sequence[int] | None = None,
    history: Sequence[Any] | None = None,
    stage_names: Mapping[int, str] | Sequence[str] | None = None,
    result: Any = None,
) -> Path:
    """Plot the metric value per iteration into ``path`` (coloured by stage, levels and stages marked).

    ``history`` (or ``result``, a RegistrationResult) replaces ``values``,
    ``levels`` and ``stages``; see :func:`registration_report`.
    """
    from .errors import InvalidInputError

    if path is None:
        raise InvalidInputError("plot_metric_history(): 'path' (the output PNG) is required; got None.")
    history, _, stage_names = _from_result(result, history, None, stage_names)
    if history is not None:
        values, levels, stages = _history_lists(history)
    if values is None:
        raise InvalidInputError("plot_metric_history(): give 'values' or 'history'; got neither.")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    _plot_history(ax, values, levels, stages, stage_names)
    ax.set_xlabel("iteration")
    ax.set_ylabel("metric value")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
