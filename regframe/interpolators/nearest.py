"""Nearest-neighbour interpolation (ITK's ``NearestNeighborInterpolateImageFunction``)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE
from . import _kernels as _k
from .base import Interpolator

__all__ = ["NearestNeighborInterpolator"]


class NearestNeighborInterpolator(Interpolator):
    """Value of the nearest voxel; the continuous index is rounded half up.

    Parameters
    ----------
    default_value : float, default 0.0
        Value returned outside the buffer.

    Notes
    -----
    The interpolant is piecewise constant, so :meth:`evaluate_with_gradient`
    returns zero gradients (its derivative almost everywhere).  Use it for
    label images and masks, not for gradient-based metrics.
    """

    name = "nearest"

    def _evaluate(self, points: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        return _k.nearest_values(
            points, self._data, self._size, self._p2i, self._origin, self._default_value, CHUNK_SIZE
        )

    def _evaluate_with_gradient(
        self, points: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        values, inside = self._evaluate(points)
        return values, np.zeros(points.shape), inside
