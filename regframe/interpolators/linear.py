"""Multilinear interpolation with ITK semantics and exact gradients."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE
from . import _kernels as _k
from .base import Interpolator

__all__ = ["LinearInterpolator"]


class LinearInterpolator(Interpolator):
    """Multilinear interpolation, as ITK's ``LinearInterpolateImageFunction``.

    Parameters
    ----------
    default_value : float, default 0.0
        Value returned outside the buffer.

    Notes
    -----
    With continuous index ``ci`` (per axis) the cell is ``base = max(floor(ci),
    0)``, the fraction ``f = max(ci - base, 0)`` and the upper neighbour
    ``min(base + 1, size - 1)``.  The result is multilinear interpolation
    inside the voxel-centre span and constant (edge-clamped) extrapolation in
    the half-voxel skirt ``[-0.5, 0)`` and ``[size - 1, size - 0.5)``; beyond
    the skirt points are outside (``default_value``, ``inside=False``).
    Values are combined axis by axis as ``a + f (b - a)``, ITK's form.

    The gradient is the exact derivative of this interpolant: piecewise
    constant along each axis within a cell (the multilinear derivative),
    zero along axes where the interpolant is constant (skirt, single-voxel
    axes).  Exactly on a grid line ``ci == k`` the cell of the value is used,
    i.e. the derivative is the right-sided one (``v[k+1] - v[k]``, times the
    other axes' weights), except on the last voxel centre ``k == size - 1``
    where it is 0.  Index-space derivatives are returned as physical
    covariant vectors ``physical_to_index_matrix.T @ g_index``.

    2-D and 3-D images use specialised kernels (3-4x faster than the n-D
    one, bitwise identical results); other dimensions use the n-D kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from regframe import Image
    >>> img = Image(np.array([[0.0, 1.0], [2.0, 3.0]]), spacing=(2.0, 1.0))
    >>> interp = LinearInterpolator().set_image(img)
    >>> v, g, inside = interp.evaluate_with_gradient([[1.0, 0.5]])
    >>> v.tolist(), g.tolist(), inside.tolist()
    ([1.5], [[0.5, 2.0]], [True])
    """

    name = "linear"

    def _evaluate(self, points: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        d = points.shape[1]
        args = (points, self._data, self._size, self._p2i, self._origin, self._default_value)
        if d == 3:
            values, _, inside = _k.linear3_values_gradients(*args, False)
            return values, inside
        if d == 2:
            values, _, inside = _k.linear2_values_gradients(*args, False)
            return values, inside
        return _k.linear_values(*args, CHUNK_SIZE)

    def _evaluate_with_gradient(
        self, points: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        d = points.shape[1]
        args = (points, self._data, self._size, self._p2i, self._origin, self._default_value)
        if d == 3:
            return _k.linear3_values_gradients(*args, True)
        if d == 2:
            return _k.linear2_values_gradients(*args, True)
        return _k.linear_values_gradients(*args, CHUNK_SIZE)
