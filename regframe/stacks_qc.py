"""QC picture of a stack alignment: drift curves, framewise displacement and a reslice.

:func:`drift_figure` draws, for a :class:`~regframe.registration.stacks.StackResult`,
the translation of the slice centre and the rotation angle of every slice's
transform (the drift curve: a random walk or a slow bend shows here), the
framewise displacement between consecutive slices, and a reslice of the
aligned stack through its centre row (a straight, continuous reslice means a
good alignment).  Needs matplotlib (``pip install 'regframe[viz]'``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import require

__all__ = ["drift_figure", "drift_curves"]


def drift_curves(result: Any) -> dict[str, np.ndarray]:
    """Per-slice translation of the slice centre (x, y) and rotation angle (degrees).

    The angle is that of the transform's matrix (its polar rotation for
    similarity and affine kinds; for non-linear transforms, of the best linear
    fit at the domain corners and centre).
    """
    array = result.aligned.array
    origin, spacing = result.aligned.origin[:2], result.aligned.spacing[:2]
    ny, nx = array.shape[1:]
    centre = origin + 0.5 * (np.array([nx, ny]) - 1) * spacing
    probe = centre + np.array([[0, 0], [1, 0], [0, 1]]) * spacing
    tx, ty, angle = [], [], []
    for t in result.transforms:
        mapped = t.transform_points(probe)
        shift = mapped[0] - centre
        tx.append(shift[0])
        ty.append(shift[1])
        a = np.stack([(mapped[1] - mapped[0]) / spacing[0], (mapped[2] - mapped[0]) / spacing[1]], axis=1)
        u, _, vt = np.linalg.svd(a)
        r = u @ vt
        angle.append(np.degrees(np.arctan2(r[1, 0], r[0, 0])))
    return {"tx": np.array(tx), "ty": np.array(ty), "angle": np.array(angle)}


def drift_figure(result: Any, path: str | os.PathLike[str] | None = None) -> Any:
    """The drift QC figure of a stack alignment.

    Parameters
    ----------
    result : StackResult
    path : path-like, optional
        Also save the figure (PNG), atomically.

    Returns
    -------
    matplotlib.figure.Figure
    """
    require("matplotlib", "the stack QC picture")
    from matplotlib.figure import Figure

    curves = drift_curves(result)
    k = np.arange(len(result.transforms))
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplot_mosaic([["drift", "angle"], ["fd", "reslice"]])
    ax = axes["drift"]
    ax.plot(k, curves["tx"], "o-", ms=3, label="x")
    ax.plot(k, curves["ty"], "s-", ms=3, label="y")
    ax.set(xlabel="slice", ylabel="translation of the slice centre (mm)", title="drift")
    ax.legend(fontsize=8)
    ax = axes["angle"]
    ax.plot(k, curves["angle"], "o-", ms=3, color="C2")
    ax.set(xlabel="slice", ylabel="rotation (degrees)", title="rotation")
    ax = axes["fd"]
    ax.bar(k, result.framewise_displacement, color="C3")
    ax.set(xlabel="slice", ylabel="mean displacement from slice k-1 (mm)", title="framewise displacement")
    ax = axes["reslice"]
    aligned = np.asarray(result.aligned.array, dtype=np.float64)
    row = aligned[:, aligned.shape[1] // 2, :]
    sz, sx = (result.aligned.spacing[2] if result.aligned.ndim == 3 else 1.0), result.aligned.spacing[0]
    ax.imshow(row, cmap="gray", aspect=sz / sx, interpolation="nearest")
    ax.set(xlabel="x (voxels)", ylabel="slice", title="aligned stack, reslice through the centre row")
    s = result.summary()
    fig.suptitle(f"{s['n_slices']} slices: framewise displacement mean {s['framewise_displacement_mean']:.3g}, "
                 f"max {s['framewise_displacement_max']:.3g}; {s['n_failed_pairs']} failed pairs")
    if path is not None:
        path = Path(path)
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=100)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return fig
