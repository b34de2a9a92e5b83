"""Negative squared normalised correlation (ITK ``CorrelationImageToImageMetricv4``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE, reduce_in_order
from . import _kernels as _k
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

    The fused linear-transform kernel accumulates the sums in one pass on
    intensities shifted by the fixed sample mean and the moving image mean
    (well conditioned); the general path centres exactly in two passes.
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
        return _CorrelationStats(f1=f1, m1=m1, fm=float(f1 @ m1), f2=float(f1 @ f1), m2=float(m1 @ m1))

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

    # ------------------------------------------------------------------ fused path
    def _evaluate_linear(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        transform = st.transform
        pts, dense, gsize, kmat, kvec, size3, c3, a, o = self._linear_args(st)
        mode = self._mode(with_gradient)
        phys = self._physical(st)
        part = _k.correlation_linear(
            pts, dense, gsize, st.fixed_values, self._fixed_ref, self._moving_ref,
            kmat, kvec, size3, c3, a, o, *st.moving_pack.args(), *st.moving_mask.args(),
            phys, mode, CHUNK_SIZE,
        )
        t = reduce_in_order(part)
        n_valid = int(t[0])
        self._check_overlap(n_valid, st.points.shape[0])
        sf, sm, sff, smm, sfm = t[1], t[2], t[3], t[4], t[5]
        fbar, mbar = sf / n_valid, sm / n_valid
        f2 = sff - sf * fbar
        m2 = smm - sm * mbar
        fm = sfm - sf * mbar
        grad_zero = np.zeros(transform.n_parameters) if with_gradient else None
        if f2 * m2 <= _EPS:
            return 0.0, grad_zero
        value = -fm * fm / (f2 * m2)
        if not with_gradient:
            return value, None
        blk = _k.BLOCK
        g0 = t[6 : 6 + blk]
        gf = t[6 + blk : 6 + 2 * blk]
        gm = t[6 + 2 * blk : 6 + 3 * blk]
        alpha = -2.0 * fm / (f2 * m2)
        beta = 2.0 * fm * fm / (f2 * m2 * m2)
        sums = alpha * (gf - fbar * g0) + beta * (gm - mbar * g0)
        return value, self._linear_gradient(st, sums, phys)
