"""Negative squared normalised correlation (ITK ``CorrelationImageToImageMetricv4``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE, n_chunks, reduce_in_order, run_chunks
from . import _bspline_grid_kernels as _gk
from . import _bspline_kernels as _bk
from . import _linear_fused_kernels as _k
from . import _sample_kernels as _sk
from .base import ImageMetric, SampleBatch, _State

__all__ = ["NormalizedCorrelation"]

_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class _CorrelationStats:
    f1: NDArray[np.float64]
    m1: NDArray[np.float64]
    fm: float
    f2: float
    m2: float


class NormalizedCorrelation(ImageMetric):
    """ITK's correlation metric, ``value = -fm^2 / (f2 m2)`` (in ``[-1, 0]``).

    With ``f1 = f - mean(f)`` and ``m1 = m - mean(m)`` over the valid samples,
    ``fm = sum f1 m1``, ``f2 = sum f1^2``, ``m2 = sum m1^2``.  Note the
    *square*: as in ITK, anti-correlated images also score -1.

    Parameters
    ----------
    gradient : {"exact", "central_difference"}, default "exact"
        Moving-image gradient (see :class:`~regframe.metrics.ImageMetric`).
    min_overlap : float, default 0.01
        Smallest valid fraction of samples before
        :class:`~regframe.errors.NoOverlapError`.

    Notes
    -----
    Per-sample weight ``u_s = d value / d m_s = -2 fm/(f2 m2) (f1_s - (fm/m2) m1_s)``
    (the mean terms drop out because ``sum f1 = sum m1 = 0``), so the gradient
    is ``sum_s u_s g_s^T J_s``; ITK's derivative is its negative.  As in ITK,
    when ``f2 * m2 <= DBL_EPSILON`` (no variation among the valid samples) the
    value and gradient are 0.  A constant fixed or moving image raises
    :class:`~regframe.errors.ConstantImageError` in :meth:`initialize`.

    The fused kernels (linear transforms; a ``BSplineTransform`` with exact
    gradients) accumulate the sums in one pass on intensities shifted by the
    fixed sample mean and the moving image mean (well conditioned), with three
    gradient sums weighted by ``1``, ``f'`` and ``m'``; the general path
    centres exactly in two passes.
    """

    requires_variation = True

    def on_initialize(self) -> None:
        st = self._require("on_initialize")
        self._fixed_ref = float(np.mean(st.fixed_values))
        self._moving_ref = float(np.mean(st.moving_pack.data))

    # ---------------------------------------------------------------- general path
    def accumulate(self, batch: SampleBatch) -> _CorrelationStats:
        f1 = batch.fixed_values - np.mean(batch.fixed_values)
        m1 = batch.moving_values - np.mean(batch.moving_values)
        # elementwise sums, not BLAS dot products (whose threads spin for 10-30 ms on a loaded machine)
        return _CorrelationStats(f1=f1, m1=m1, fm=float(np.sum(f1 * m1)), f2=float(np.sum(f1 * f1)),
                                 m2=float(np.sum(m1 * m1)))

    def finalize(
        self, stats: _CorrelationStats, batch: SampleBatch, *, with_gradient: bool
    ) -> tuple[float, NDArray[np.float64] | None]:
        fm, f2, m2 = stats.fm, stats.f2, stats.m2
        if f2 * m2 <= _EPS:
            return 0.0, np.zeros(batch.n_valid) if with_gradient else None
        value = -fm * fm / (f2 * m2)
        if not with_gradient:
            return value, None
        weights = (-2.0 * fm / (f2 * m2)) * (stats.f1 - (fm / m2) * stats.m1)
        return value, weights

    # ------------------------------------------------------------------ fused paths
    def _correlation(
        self, sums: NDArray[np.float64], n_samples: int
    ) -> tuple[float, float, float, float, float]:
        """``(value, alpha, beta, fbar, mbar)`` from the six shifted sums of the fused kernels.

        The gradient is ``alpha (G_f - fbar G_1) + beta (G_m - mbar G_1)`` for the
        gradient sums ``G`` weighted by ``1``, ``f'`` and ``m'``; ``alpha = beta = 0``
        (and value 0) when the valid samples do not vary, as in ITK.
        """
        n_valid = int(sums[0])
        self._check_overlap(n_valid, n_samples)
        sf, sm, sff, smm, sfm = sums[1], sums[2], sums[3], sums[4], sums[5]
        fbar, mbar = sf / n_valid, sm / n_valid
        f2 = sff - sf * fbar
        m2 = smm - sm * mbar
        fm = sfm - sf * mbar
        if f2 * m2 <= _EPS:
            return 0.0, 0.0, 0.0, fbar, mbar
        return -fm * fm / (f2 * m2), -2.0 * fm / (f2 * m2), 2.0 * fm * fm / (f2 * m2 * m2), fbar, mbar

    def _evaluate_linear(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        pts, dense, gsize, kmat, kvec, size3, c3, a, o = self._linear_args(st)
        mode = self._mode(with_gradient)
        phys = self._physical(st)
        n = st.points.shape[0]
        part = np.zeros((n_chunks(n), 6 + 3 * _sk.BLOCK))
        run_chunks(
            _k.correlation_linear_chunks, _k.correlation_linear, n, part.shape[0],
            pts, dense, gsize, st.fixed_values, self._fixed_ref, self._moving_ref,
            kmat, kvec, size3, c3, a, o, *st.moving_pack.args(), *st.moving_mask.args(),
            self._path(st), mode, CHUNK_SIZE, part,
        )
        t = reduce_in_order(part)
        value, alpha, beta, fbar, mbar = self._correlation(t, st.points.shape[0])
        if not with_gradient:
            return value, None
        if alpha == 0.0 and beta == 0.0:
            return value, np.zeros(st.transform.n_parameters)
        blk = _sk.BLOCK
        g0 = t[6 : 6 + blk]
        gf = t[6 + blk : 6 + 2 * blk]
        gm = t[6 + 2 * blk : 6 + 3 * blk]
        sums = alpha * (gf - fbar * g0) + beta * (gm - mbar * g0)
        return value, self._linear_gradient(st, sums, phys)

    def _evaluate_bspline(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        """One pass: the six sums and three gradient sums (weights ``1, f', m'``) over the supports."""
        n_par = st.transform.n_parameters
        grid = self._grid_support(st)
        args = self._bspline_args(st) if grid is None else self._grid_args(st, grid)
        chunk, blocks = self._bspline_blocks(st)
        sums = np.zeros(6)
        g = np.zeros((3, n_par))
        refs = (self._fixed_ref, self._moving_ref)
        for lo, hi in blocks:
            if grid is not None:  # samples on the fixed grid: separable supports
                acc, part = _gk.sums_bspline_grid(
                    _bk.CORRELATION, st.points[lo:hi], grid.index[lo:hi], st.fixed_values[lo:hi],
                    *refs, *args, with_gradient, grid.rowwise, chunk,
                )
            else:
                acc, part = _bk.sums_bspline(
                    _bk.CORRELATION, st.points[lo:hi], st.fixed_values[lo:hi], *refs, *args,
                    with_gradient, chunk,
                )
            sums += reduce_in_order(acc)
            if with_gradient:
                g += reduce_in_order(part.reshape(-1, 3, n_par))
        value, alpha, beta, fbar, mbar = self._correlation(sums, st.points.shape[0])
        if not with_gradient:
            return value, None
        if alpha == 0.0 and beta == 0.0:
            return value, np.zeros(n_par)
        return value, alpha * (g[1] - fbar * g[0]) + beta * (g[2] - mbar * g[0])
