"""Surface points of an image: where it crosses a level along the grid edges."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..errors import InvalidInputError
from ..image import Image

__all__ = ["surface_points"]


def surface_points(image: Image, level: float = 0.5, *, sigma: float = 0.0) -> NDArray[np.float64]:
    """Physical points where ``image`` crosses ``level`` along the voxel-grid edges.

    These are the vertices marching cubes would place (linear interpolation
    of the crossing on each grid edge whose end values straddle the level),
    without the triangles.  For a binary mask, a small Gaussian smoothing
    (``sigma`` in voxels, e.g. 1) turns the voxel staircase into a smooth
    surface.

    Parameters
    ----------
    image : Image
    level : float, default 0.5
    sigma : float, default 0
        Gaussian smoothing in voxels before the crossings are found.

    Returns
    -------
    (n, ndim) ndarray of float64
        Physical points, ordered by edge axis and then voxel order.

    Raises
    ------
    InvalidInputError
        When the image never crosses ``level``.
    """
    if not isinstance(image, Image):
        raise InvalidInputError(f"surface_points(): 'image' must be a regframe Image; got {type(image).__name__}.")
    values = np.asarray(image.array, dtype=np.float64)
    if sigma > 0:
        values = ndimage.gaussian_filter(values, float(sigma))
    values = values - float(level)
    found = []
    for axis in range(values.ndim):
        v0 = values[tuple(slice(0, -1) if a == axis else slice(None) for a in range(values.ndim))]
        v1 = values[tuple(slice(1, None) if a == axis else slice(None) for a in range(values.ndim))]
        cross = (v0 > 0) != (v1 > 0)
        idx = np.argwhere(cross).astype(np.float64)
        a, b = v0[cross], v1[cross]
        idx[:, axis] += a / (a - b)
        found.append(idx)
    index = np.concatenate(found)
    if index.shape[0] == 0:
        raise InvalidInputError(
            f"surface_points(): the image never crosses level {level} (values {values.min() + level:g} "
            f"to {values.max() + level:g}); choose a level inside the intensity range."
        )
    return image.index_to_physical(index[:, ::-1])
