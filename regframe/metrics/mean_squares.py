"""Mean squared intensity difference (ITK ``MeanSquaresImageToImageMetricv4``)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE, n_chunks, reduce_in_order, run_chunks
from . import _bspline_grid_kernels as _gk
from . import _bspline_kernels as _bk
from . import _linear_fused_kernels as _k
from ._sample_kernels import BLOCK
from .base import PointwiseMetric, _State

__all__ = ["MeanSquares"]

class MeanSquares(PointwiseMetric):
    """Mean of squared differences, ``value = (1/N) sum_s (f_s - m_s)^2``.

    ``N`` is the number of valid samples (mapped inside the moving image and
    mask).  The value is minimised (0 for identical images).

    Parameters
    ----------
    gradient : {"exact", "central_difference"}, default "exact"
        Moving-image gradient (see :class:`~regframe.metrics.ImageMetric`).
    min_overlap : float, default 0.01
        Smallest valid fraction of samples before
        :class:`~regframe.errors.NoOverlapError`.

    Notes
    -----
    Gradient: ``d value / d p = (2/N) sum_s (m_s - f_s) g_s^T J_s`` with
    ``g_s`` the moving gradient at ``T(x_s)`` and ``J_s = dT(x_s)/dp``; the
    per-sample weight is ``u_s = 2 (m_s - f_s) / N``.  ITK's
    ``GetDerivative()`` is the negative of this (:meth:`itk_derivative`).

    With a linear transform and linear interpolation the whole evaluation is
    one fused numba pass (map, interpolate, accumulate ``sum u g (x - c)^T``);
    likewise for a :class:`~regframe.transforms.bspline.BSplineTransform` with
    the exact gradient (map through the ``4**d`` support, interpolate, scatter
    ``u g w_k`` into per-chunk partial parameter vectors).

    Examples
    --------
    >>> import numpy as np
    >>> from regframe import Image, TranslationTransform
    >>> from regframe.metrics import MeanSquares
    >>> y, x = np.mgrid[0:32, 0:32]
    >>> img = Image(np.exp(-((x - 15.0) ** 2 + (y - 17.0) ** 2) / 40.0))
    >>> metric = MeanSquares().initialize(img, img, TranslationTransform(2))
    >>> metric.value()
    0.0
    """

    def pointwise_value(
        self, fixed_values: NDArray[np.float64], moving_values: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        r = moving_values - fixed_values
        return r * r

    def pointwise_derivative(
        self, fixed_values: NDArray[np.float64], moving_values: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return 2.0 * (moving_values - fixed_values)

    def _evaluate_linear(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        pts, dense, gsize, kmat, kvec, size3, c3, a, o = self._linear_args(st)
        mode = self._mode(with_gradient)
        phys = self._physical(st)
        n = st.points.shape[0]
        part = np.zeros((n_chunks(n), 2 + BLOCK))
        run_chunks(
            _k.mean_squares_linear_chunks, _k.mean_squares_linear, n, part.shape[0],
            pts, dense, gsize, st.fixed_values, kmat, kvec, size3, c3, a, o,
            *st.moving_pack.args(), *st.moving_mask.args(), self._path(st), mode, CHUNK_SIZE, part,
        )
        total = reduce_in_order(part)
        n_valid = int(total[1])
        self._check_overlap(n_valid, st.points.shape[0])
        value = total[0] / n_valid
        if not with_gradient:
            return value, None
        grad = self._linear_gradient(st, total[2:] / n_valid, phys)
        return value, grad

    def _evaluate_bspline(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        n = st.points.shape[0]
        grid = self._grid_support(st)
        args = self._bspline_args(st) if grid is None else self._grid_args(st, grid)
        chunk, blocks = self._bspline_blocks(st)
        value_sum = 0.0
        n_valid = 0.0
        grad = np.zeros(st.transform.n_parameters) if with_gradient else None
        for lo, hi in blocks:
            if grid is not None:  # samples on the fixed grid: separable supports
                acc, part = _gk.sums_bspline_grid(
                    _bk.MEAN_SQUARES, st.points[lo:hi], grid.index[lo:hi], st.fixed_values[lo:hi],
                    0.0, 0.0, *args, with_gradient, grid.rowwise, chunk,
                )
            else:
                acc, part = _bk.sums_bspline(
                    _bk.MEAN_SQUARES, st.points[lo:hi], st.fixed_values[lo:hi], 0.0, 0.0, *args,
                    with_gradient, chunk,
                )
            total = reduce_in_order(acc)
            value_sum += total[0]
            n_valid += total[1]
            if with_gradient:
                grad += reduce_in_order(part)
        n_valid_int = int(n_valid)
        self._check_overlap(n_valid_int, n)
        value = value_sum / n_valid_int
        if not with_gradient:
            return value, None
        return value, grad / n_valid_int
