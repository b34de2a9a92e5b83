"""Deformation quality measures: Jacobian determinant, folding, inverse consistency.

Every measure is evaluated at the voxel centres of a reference image (usually
the fixed image), in blocks so memory stays bounded for large volumes.  The
transform maps reference (fixed) points to moving points, as everywhere in
regframe.  The plotting helpers need matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._optional import require
from ._views import View, draw_view, plane_views
from .errors import InvalidInputError, ShapeError
from .image import Image
from .transforms.base import Transform

__all__ = [
    "jacobian_determinant",
    "folding_fraction",
    "inverse_consistency_error",
    "InverseConsistency",
    "plot_deformation",
    "draw_deformation",
    "draw_inverse_consistency",
]

#: Points evaluated per block (bounds the ``(n, d, d)`` Jacobian temporaries).
_BLOCK = 1 << 18


def _check(transform: Transform, reference: Image, where: str) -> None:
    if not isinstance(transform, Transform):
        raise InvalidInputError(f"{where}: 'transform' must be a regframe Transform; got {type(transform).__name__}.")
    if not isinstance(reference, Image):
        raise InvalidInputError(
            f"{where}: 'reference' must be a regframe Image (the grid to evaluate on); got "
            f"{type(reference).__name__}. Convert SimpleITK images with regframe.from_sitk()."
        )
    if transform.ndim != reference.ndim:
        raise ShapeError(
            f"{where}: transform ({transform.ndim}-D) and reference ({reference.ndim}-D) must have the "
            "same dimension."
        )


def _det(jac: NDArray[np.float64]) -> NDArray[np.float64]:
    """Determinants of ``(n, d, d)`` stacks by the explicit formula (exact sign for d <= 3)."""
    d = jac.shape[1]
    if d == 2:
        return jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
    if d == 3:
        return (
            jac[:, 0, 0] * (jac[:, 1, 1] * jac[:, 2, 2] - jac[:, 1, 2] * jac[:, 2, 1])
            - jac[:, 0, 1] * (jac[:, 1, 0] * jac[:, 2, 2] - jac[:, 1, 2] * jac[:, 2, 0])
            + jac[:, 0, 2] * (jac[:, 1, 0] * jac[:, 2, 1] - jac[:, 1, 1] * jac[:, 2, 0])
        )
    return np.linalg.det(jac)


def jacobian_determinant(transform: Transform, reference: Image) -> Image:
    """Determinant of the spatial Jacobian ``det(dT/dx)`` at every voxel of ``reference``.

    Analytic (from ``transform.jacobian_position``), not finite differences:
    for a B-spline it is the exact determinant of the spline map (what
    transformix's ``ComputeDeterminantOfSpatialJacobian`` computes).  Values
    ``> 1`` mean local expansion from fixed to moving space, ``< 1``
    compression, ``<= 0`` folding.

    Parameters
    ----------
    transform : Transform
        Fixed-to-moving transform (any transform implementing
        ``jacobian_position``, composites included).
    reference : Image
        Grid of the output (usually the fixed image).

    Returns
    -------
    Image
        float64 determinant image with the geometry of ``reference``.

    Examples
    --------
    >>> import numpy as np
    >>> from regframe import AffineTransform, Image
    >>> t = AffineTransform(2)
    >>> t.parameters = [2.0, 0.0, 0.0, 1.5, 0.0, 0.0]
    >>> float(jacobian_determinant(t, Image(np.zeros((4, 4)))).array.max())
    3.0
    """
    where = "jacobian_determinant()"
    _check(transform, reference, where)
    points = reference.voxel_points()
    out = _det_at(transform, points)
    return reference.with_array(out.reshape(reference.shape), copy=False)


def folding_fraction(
    transform_or_determinant: Transform | Image,
    reference: Image | None = None,
    *,
    mask: Image | NDArray[Any] | None = None,
) -> float:
    """Fraction of voxels where the Jacobian determinant is ``<= 0`` (the map folds).

    Parameters
    ----------
    transform_or_determinant : Transform or Image
        A transform (then ``reference`` is required) or a determinant image
        from :func:`jacobian_determinant`.
    reference : Image, optional
        Evaluation grid when a transform is given.
    mask : Image or array, optional
        Only voxels where the mask is non-zero are counted (array of the
        determinant image's shape, or an Image on the same grid).

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    where = "folding_fraction()"
    if isinstance(transform_or_determinant, Transform):
        if reference is None:
            raise InvalidInputError(f"{where}: 'reference' is required when a transform is given; got None.")
        det = jacobian_determinant(transform_or_determinant, reference).array
    elif isinstance(transform_or_determinant, Image):
        det = transform_or_determinant.array
    else:
        raise InvalidInputError(
            f"{where}: expected a Transform or a determinant Image; got {type(transform_or_determinant).__name__}."
        )
    sel = np.ones(det.shape, dtype=bool)
    if mask is not None:
        m = np.asarray(mask.array if isinstance(mask, Image) else mask)
        if m.shape != det.shape:
            raise ShapeError(f"{where}: 'mask' must have shape {det.shape}; got {m.shape}.")
        sel = m != 0
    n = int(np.count_nonzero(sel))
    if n == 0:
        raise InvalidInputError(f"{where}: the mask selects no voxel; got an empty mask.")
    return float(np.count_nonzero(det[sel] <= 0.0)) / n


@dataclass(frozen=True)
class InverseConsistency:
    """Result of :func:`inverse_consistency_error` (physical units).

    Attributes
    ----------
    image : Image
        ``|backward(forward(x)) - x|`` at every voxel of the reference.
    mean, rms, max, p95 : float
        Statistics of ``image`` over the evaluated voxels.
    """

    image: Image
    mean: float
    rms: float
    max: float
    p95: float


def inverse_consistency_error(
    forward: Transform,
    backward: Transform,
    reference: Image,
    *,
    mask: Image | NDArray[Any] | None = None,
) -> InverseConsistency:
    """Inverse-consistency error of a forward/backward transform pair.

    ``e(x) = |backward(forward(x)) - x|`` at every voxel centre ``x`` of
    ``reference``.  ``forward`` maps fixed points to moving points (the
    result of registering moving to fixed) and ``backward`` maps moving points
    to fixed points (registering fixed to moving, or ``forward.inverse()``);
    a perfectly consistent pair gives 0 everywhere.

    Parameters
    ----------
    forward, backward : Transform
    reference : Image
        Grid of ``x`` (the fixed image).
    mask : Image or array, optional
        Restrict the statistics to non-zero voxels (same grid as ``reference``).

    Returns
    -------
    InverseConsistency
    """
    where = "inverse_consistency_error()"
    _check(forward, reference, where)
    _check(backward, reference, where)
    err = _roundtrip_error(forward, backward, reference.voxel_points())
    image = reference.with_array(err.reshape(reference.shape), copy=False)
    sel = err
    if mask is not None:
        m = np.asarray(mask.array if isinstance(mask, Image) else mask)
        if m.shape != reference.shape:
            raise ShapeError(f"{where}: 'mask' must have shape {reference.shape}; got {m.shape}.")
        sel = err[m.reshape(-1) != 0]
        if sel.size == 0:
            raise InvalidInputError(f"{where}: the mask selects no voxel; got an empty mask.")
    return InverseConsistency(
        image=image,
        mean=float(np.mean(sel)),
        rms=float(np.sqrt(np.mean(sel * sel))),
        max=float(np.max(sel)),
        p95=float(np.percentile(sel, 95.0)),
    )


def _roundtrip_error(forward: Transform, backward: Transform, points: NDArray[np.float64]) -> NDArray[np.float64]:
    """``|backward(forward(x)) - x|`` per point, in blocks of ``_BLOCK`` points."""
    err = np.empty(points.shape[0])
    for start in range(0, points.shape[0], _BLOCK):
        block = np.ascontiguousarray(points[start : start + _BLOCK])
        back = backward.transform_points(forward.transform_points(block))
        err[start : start + _BLOCK] = np.sqrt(np.sum((back - block) ** 2, axis=1))
    return err


def _det_at(transform: Transform, points: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.empty(points.shape[0])
    for start in range(0, points.shape[0], _BLOCK):
        block = np.ascontiguousarray(points[start : start + _BLOCK])
        out[start : start + _BLOCK] = _det(transform.jacobian_position(block))
    return out


def draw_deformation(
    ax_grid: Any,
    ax_det: Any,
    transform: Transform,
    reference: Image,
    view: View,
    *,
    background: NDArray[Any] | None = None,
    grid_lines: int = 14,
) -> None:
    """Draw one plane's deformed grid and Jacobian-determinant map on two matplotlib axes.

    Parameters
    ----------
    ax_grid, ax_det : matplotlib axes
    transform : Transform
        Fixed-to-moving transform.
    reference : Image
        The fixed image (the grid the view indexes).
    view : View
        The plane (from :func:`regframe._views.plane_views`).
    background : 2-D array, optional
        The plane's picture of the fixed image, shown faintly under the grid.
    grid_lines : int
        Grid lines along the longer side of the plane (square cells in mm).
    """
    rows, cols = view.index.shape[:2]
    pts = view.points(reference)
    h, v = view.axes
    if background is not None:
        draw_view(ax_grid, view, background, alpha=0.35)
    else:
        draw_view(ax_grid, view, np.ones((rows, cols)), vmin=0.0, vmax=1.0)
    left, right, bottom, top = view.extent
    cell = max(abs(right - left), abs(top - bottom)) / grid_lines  # mm
    step_r = max(1, int(round(cell / (abs(top - bottom) / rows))))
    step_c = max(1, int(round(cell / (abs(right - left) / cols))))
    grid = pts.reshape(rows, cols, -1)
    lines = [grid[r] for r in range(0, rows, step_r)] + [grid[:, c] for c in range(0, cols, step_c)]
    for line in lines:
        mapped = transform.transform_points(np.ascontiguousarray(line))
        ax_grid.plot(mapped[:, h], mapped[:, v], color="tab:orange", linewidth=0.6)
    ax_grid.set_title(f"{view.title}\ndeformed grid: fixed grid mapped by T (mm)", fontsize=7)
    det = _det_at(transform, pts).reshape(rows, cols)
    spread = max(float(np.max(np.abs(det - 1.0))), 1e-6)
    im = draw_view(ax_det, view, det, cmap="RdBu_r", vmin=1.0 - spread, vmax=1.0 + spread)
    if np.any(det <= 0):
        ax_det.contour(det <= 0, levels=[0.5], colors="k", linewidths=0.8, origin="upper", extent=view.extent)
    ax_det.figure.colorbar(im, ax=ax_det, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    ax_det.set_title(f"{view.title}\ndet(dT/dx) in [{det.min():.3f}, {det.max():.3f}]\n"
                     "red: expansion, blue: compression, black: folding", fontsize=7)


def draw_inverse_consistency(ax: Any, forward: Transform, backward: Transform, reference: Image, view: View) -> None:
    """Draw one plane's inverse-consistency error ``|backward(forward(x)) - x|`` (mm) on a matplotlib axis.

    Parameters
    ----------
    ax : matplotlib axis
    forward, backward : Transform
        Fixed-to-moving transform and its inverse (moving to fixed), e.g. a
        result's ``transform`` and ``inverse_transform``.
    reference : Image
        The fixed image (the grid the view indexes).
    view : View
        The plane (from :func:`regframe._views.plane_views`).
    """
    rows, cols = view.index.shape[:2]
    err = _roundtrip_error(forward, backward, view.points(reference)).reshape(rows, cols)
    im = draw_view(ax, view, err, cmap="magma", vmin=0.0, vmax=max(float(err.max()), 1e-6))
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    ax.set_title(f"{view.title}\ninverse consistency |T^-1(T(x)) - x| (mm)\nmean {err.mean():.3g}, max {err.max():.3g}",
                 fontsize=7)


def plot_deformation(
    transform: Transform,
    reference: Image,
    path: str | Path,
    *,
    background: Image | None = None,
    grid_lines: int = 14,
    grid_step: int | None = None,
    title: str = "deformation",
) -> Path:
    """PNG with the deformed grid and the Jacobian-determinant map, per plane.

    Left: the lines of a regular grid on ``reference`` mapped by the transform
    (fixed to moving space), over ``background`` (an image on the reference
    grid, e.g. the fixed image) when given.  Right: ``det(dT/dx)`` on the
    plane (diverging colour map centred on 1; folding, ``<= 0``, outlined in
    black).  3-D references give the axial, coronal and sagittal planes
    through the centre, in physical aspect and radiological orientation (see
    :mod:`regframe.qc`); the grid shows the in-plane components.

    Parameters
    ----------
    transform : Transform
    reference : Image
    path : path-like
        Output PNG.
    background : Image, optional
        Image on the reference grid shown faintly under the deformed grid.
    grid_lines : int
        Grid lines along the longer side of each plane.
    grid_step : int, optional
        Grid line every ``grid_step`` voxels of the longest axis instead
        (overrides ``grid_lines``).
    title : str

    Returns
    -------
    Path
    """
    where = "plot_deformation()"
    _check(transform, reference, where)
    if background is not None and (not isinstance(background, Image) or background.shape != reference.shape):
        raise ShapeError(
            f"{where}: 'background' must be an Image on the reference grid (shape {reference.shape}); got "
            f"{getattr(background, 'shape', type(background).__name__)}. Resample it onto the reference first."
        )
    mpl = require("matplotlib", "deformation pictures")
    mpl.use("Agg", force=False)
    plt = require("matplotlib.pyplot", "deformation pictures")
    if grid_step is not None:
        grid_lines = max(1, int(round(max(reference.size) / max(1, int(grid_step)))))
    views = plane_views(reference)
    fig, axes = plt.subplots(len(views), 2, figsize=(9.5, 4.2 * len(views)), squeeze=False)
    bg = None if background is None else np.asarray(background.array, dtype=np.float64)
    for r, view in enumerate(views):
        draw_deformation(axes[r, 0], axes[r, 1], transform, reference, view,
                         background=None if bg is None else view.take(bg), grid_lines=grid_lines)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
