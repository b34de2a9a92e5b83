"""Display planes of an image: physical extent and radiological orientation (no plotting).

A :class:`View` says, for every pixel of a 2-D picture, which voxel of the
image it shows, and where the picture lies in physical space (an ``imshow``
``extent`` in mm, for ``origin="upper"``).  3-D images give the three
orthogonal planes as 3D Slicer and ITK-SNAP show them, for images in ITK's
LPS physical frame (+x patient's left, +y posterior, +z superior):

* axial: patient's right on screen left, anterior up;
* coronal: patient's right on screen left, superior up;
* sagittal: anterior on screen left, superior up.

Each plane uses the image axes closest to the world axes (an oblique image is
shown along its nearest axes, as Slicer does with "slice to volume" off).
2-D images are shown with x to the right and y down.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .image import Image

__all__ = ["View", "draw_view", "plane_views"]

_WORLD = "xyz"
# plane: (normal axis, horizontal axis, vertical axis, vertical increases downward, edge letters L R T B)
_PLANES = {
    "axial": (2, 0, 1, True, ("R", "L", "A", "P")),
    "coronal": (1, 0, 2, False, ("R", "L", "S", "I")),
    "sagittal": (0, 1, 2, False, ("A", "P", "S", "I")),
}


@dataclass(frozen=True)
class View:
    """One displayed plane.

    Attributes
    ----------
    name : str
        ``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"image"`` (2-D).
    index : (rows, cols, ndim) ndarray of int
        Voxel index (x, y[, z] order) shown at each pixel (row 0 at the top).
    extent : (left, right, bottom, top)
        Physical extent (mm) of the picture for ``imshow(origin="upper")``.
    letters : (left, right, top, bottom) or None
        Patient directions at the picture's edges (3-D only).
    axes : (int, int)
        World axes (0 = x, 1 = y, 2 = z) along the picture's columns and rows.
    title : str
        Plane name and slice position, e.g. ``"axial z = -12.5 mm (index 31 of 64)"``.
    """

    name: str
    index: NDArray[np.int64]
    extent: tuple[float, float, float, float]
    letters: tuple[str, str, str, str] | None
    axes: tuple[int, int]
    title: str

    def take(self, array: NDArray) -> NDArray:
        """The picture of an array of the image's shape (numpy order: z, y, x)."""
        idx = self.index[..., ::-1]  # numpy axis order
        return np.asarray(array)[tuple(idx[..., a] for a in range(idx.shape[-1]))]

    def points(self, image: Image) -> NDArray[np.float64]:
        """Physical points ``(rows * cols, ndim)`` of the pixels."""
        return image.index_to_physical(self.index.reshape(-1, self.index.shape[-1]).astype(np.float64))

    @property
    def axis_labels(self) -> tuple[str, str]:
        """Axis labels in mm for the columns and rows."""
        return f"{_WORLD[self.axes[0]]} (mm)", f"{_WORLD[self.axes[1]]} (mm)"


def _nearest_axes(direction: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Image axis closest to each world axis (a permutation) and the sign of their alignment."""
    d = direction.shape[0]
    best = max(itertools.permutations(range(d)), key=lambda p: sum(abs(direction[w, p[w]]) for w in range(d)))
    perm = np.array(best)
    return perm, np.sign(direction[np.arange(d), perm]) + (direction[np.arange(d), perm] == 0)


def _view(image: Image, name: str, h_world: int, v_world: int, down: bool,
          normal: tuple[int, int, int] | None, letters: tuple[str, str, str, str] | None) -> View:
    perm, sign = _nearest_axes(image.direction)
    size = image.size
    ah, av = int(perm[h_world]), int(perm[v_world])
    cols = np.arange(size[ah])
    rows = np.arange(size[av])
    if sign[h_world] < 0:  # world coordinate increases to the right
        cols = cols[::-1]
    if (sign[v_world] > 0) != down:  # world coordinate increases downward (axial) or upward
        rows = rows[::-1]
    index = np.zeros((rows.size, cols.size, image.ndim), dtype=np.int64)
    index[..., ah] = cols[None, :]
    index[..., av] = rows[:, None]
    title = name
    if normal is not None:
        n_world, an, k = normal
        index[..., an] = k
    # physical coordinate of the picture's first/last column and row (centre line of the picture)
    mid_r, mid_c = rows.size // 2, cols.size // 2
    ends = image.index_to_physical(np.array([index[mid_r, 0], index[mid_r, -1], index[0, mid_c],
                                             index[-1, mid_c]], dtype=np.float64))
    half_h = 0.5 * abs(image.direction[h_world, ah]) * image.spacing[ah]
    half_v = 0.5 * abs(image.direction[v_world, av]) * image.spacing[av]
    left, right = ends[0, h_world] - half_h, ends[1, h_world] + half_h
    first, last = ends[2, v_world], ends[3, v_world]
    step = np.sign(last - first) if last != first else (1.0 if down else -1.0)
    extent = (float(left), float(right), float(last + step * half_v), float(first - step * half_v))
    if normal is not None:
        pos = float(image.index_to_physical(index[mid_r, mid_c][None, :].astype(np.float64))[0, n_world])
        title = f"{name} {_WORLD[n_world]} = {pos:.1f} mm (index {k} of {size[an]})"
    return View(name, index, extent, letters, (h_world, v_world), title)


def plane_views(image: Image, center: tuple[int, ...] | None = None) -> list[View]:
    """The displayed planes of an image: itself in 2-D, axial, coronal and sagittal in 3-D.

    Parameters
    ----------
    image : Image
    center : tuple of int, optional
        Voxel index (x, y, z) the three planes pass through (default: the
        central voxel).
    """
    if image.ndim == 2:
        return [_view(image, "image", 0, 1, True, None, None)]
    perm, _ = _nearest_axes(image.direction)
    c = tuple(n // 2 for n in image.size) if center is None else tuple(int(v) for v in center)
    out = []
    for name, (n_world, h_world, v_world, down, letters) in _PLANES.items():
        an = int(perm[n_world])
        out.append(_view(image, name, h_world, v_world, down, (n_world, an, c[an]), letters))
    return out


def draw_view(ax: Any, view: View, picture: NDArray, **kwargs: Any) -> Any:
    """``imshow`` a picture of ``view`` on a matplotlib axes, in mm, with axis labels and patient directions."""
    kw = dict(cmap="gray", interpolation="nearest")
    kw.update(kwargs)
    im = ax.imshow(picture, origin="upper", extent=view.extent, aspect="equal", **kw)
    ax.set_xlabel(view.axis_labels[0], fontsize=7, labelpad=1)
    ax.set_ylabel(view.axis_labels[1], fontsize=7, labelpad=1)
    ax.tick_params(labelsize=6, length=2, pad=1)
    if view.letters is not None:
        from matplotlib import patheffects  # only reached with matplotlib loaded (ax is its Axes)

        style = dict(transform=ax.transAxes, color="yellow", fontsize=8, fontweight="bold",
                     path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
        left, right, top, bottom = view.letters
        ax.text(0.02, 0.5, left, ha="left", va="center", **style)
        ax.text(0.98, 0.5, right, ha="right", va="center", **style)
        ax.text(0.5, 0.98, top, ha="center", va="top", **style)
        ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    return im
