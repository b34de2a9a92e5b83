"""ITK's ``CentralDifferenceImageFunction`` on the linear interpolant (ITK-parity mode)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._parallel import CHUNK_SIZE
from .._validation import as_points
from ..image import Image
from . import _kernels as _k
from .linear import LinearInterpolator

__all__ = ["central_difference_gradient"]


def central_difference_gradient(
    image: Image | LinearInterpolator, points: ArrayLike
) -> NDArray[np.float64]:
    """Physical image gradient by ITK's central differences of the linear interpolant.

    Reproduces ``CentralDifferenceImageFunction::Evaluate(point)`` as used by
    ITK v4 metrics with ``UseMovingImageGradientFilter = false``: for each
    **world** axis ``a`` the probes are ``y -/+ 0.5 * spacing[a] * e_a``
    (image spacing used as the step along the world axis, also for oblique
    images); the component is 0 when either probe is outside the buffer
    (ITK rule ``[-0.5, size - 0.5)``), otherwise
    ``(M(y+) - M(y-)) / (y+[a] - y-[a])`` (probe distance as computed in floating
    point, ~``spacing[a]``) with ``M`` the ITK linear interpolant.
    The result is already a physical gradient.

    Parameters
    ----------
    image : Image or LinearInterpolator
        The image, or a linear interpolator with an image set (reuses its
        float64 copy of the values).
    points : (n, ndim) array_like of float
        Physical points.  The centre point itself is not tested for being
        inside (ITK does not either); callers mask invalid samples.

    Returns
    -------
    (n, ndim) ndarray of float64

    Notes
    -----
    This is a finite-difference approximation of a piecewise-linear function,
    not the derivative of the interpolant; use
    :meth:`LinearInterpolator.evaluate_with_gradient` for exact gradients.
    """
    if isinstance(image, LinearInterpolator):
        interp = image
        img = interp._require_image("central_difference_gradient")
    elif isinstance(image, Image):
        interp = LinearInterpolator().set_image(image)
        img = image
    else:
        raise TypeError(
            "central_difference_gradient(): 'image' must be a regframe.Image or a "
            f"LinearInterpolator with an image set; got {type(image).__name__}."
        )
    pts = as_points(points, img.ndim, where="central_difference_gradient")
    return _k.linear_central_difference(
        pts, interp._data, interp._size, interp._p2i, interp._origin, interp._spacing, CHUNK_SIZE
    )
