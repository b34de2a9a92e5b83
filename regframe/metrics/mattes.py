"""Mattes mutual information (ITK ``MattesMutualInformationImageToImageMetricv4``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE, n_chunks, reduce_in_order, run_chunks
from .._validation import check_positive_int
from . import _bspline_grid_kernels as _gk
from . import _bspline_kernels as _bk
from . import _linear_fused_kernels as _k
from . import _parzen_kernels as _pk
from ._bspline_grid import GridSupport
from ._sample_kernels import BLOCK
from .base import GradientMode, ImageMetric, SampleBatch, _State

__all__ = ["MattesMutualInformation"]

_EPS = float(np.finfo(np.float64).eps)

#: Samples per histogram chunk: every chunk owns a full ``B x B`` partial
#: histogram, so chunks are larger than :data:`regframe._parallel.CHUNK_SIZE`.
HISTOGRAM_CHUNK_SIZE: int = 8192

#: Pass 1 of the B-spline path keeps each sample's support (8 + 96 bytes) for pass 2 when
#: that fits in this budget; larger sample sets locate the support again in pass 2.
_SUPPORT_BYTES = 104
_SUPPORT_CACHE_LIMIT = 64 * 2**20


@dataclass(frozen=True)
class _MattesStats:
    value: float
    log_ratio: NDArray[np.float64]  # (B*B,) ln(p_ij / pm_j) on populated bins, else 0
    n_used: int
    joint: NDArray[np.float64]  # (B, B), rows = fixed bins


class MattesMutualInformation(ImageMetric):
    """Mattes mutual information, ``value = -MI`` (ITK v4 formulation).

    Parameters
    ----------
    n_bins : int or "auto", default 50
        Histogram bins per image (>= 5; ITK clamps to 5).  ``"auto"`` picks
        ``clip(round(0.8 * n ** (1/3)), 16, 64)`` for ``n`` samples at each
        :meth:`initialize` (fewer bins at coarse pyramid levels, where a
        50-bin joint histogram would be mostly empty).
    gradient : {"exact", "central_difference"}, default "exact"
        Moving-image gradient (see :class:`~regframe.metrics.ImageMetric`).
    min_overlap : float, default 0.01
        Smallest valid fraction of samples before
        :class:`~regframe.errors.NoOverlapError`.

    Notes
    -----
    Exactly ITK's formulas (``itk_design.md`` section 3.4):

    * Intensity ranges, computed once in :meth:`initialize`: fixed min/max
      over the voxels of the sample set (all voxels, the masked ones, or the
      nearest voxel of each jittered sample), moving min/max over all moving
      voxels (or those in the moving mask).
    * Bins with padding 2: ``bs = (max - min) / (B - 4)``,
      ``n_min = min / bs - 2``; Parzen coordinate ``t = v / bs - n_min``.
    * Fixed: box window, bin ``clamp(trunc(t_f), 2, B - 3)``.  Moving: cubic
      B-spline window over bins ``i - 1 .. i + 2`` with
      ``i = clamp(trunc(t), 2, B - 3)``.  Samples whose moving value is
      outside the moving range are rejected (not counted).
    * ``p_ij = joint_ij / S`` (``S`` = histogram mass), ``pf_i = count_i / S``,
      ``pm_j = sum_i p_ij``, and with natural logs over bins where ``p_ij``,
      ``pf_i`` and ``pm_j`` exceed ``DBL_EPSILON``:
      ``MI = sum p_ij (ln(p_ij / pm_j) - ln pf_i)``; ``value = -MI``.

    Gradient from per-sample weights (no ``B x B x P`` array)::

        d value / d p = (1 / (bs_m N)) sum_s w_s g_s^T J_s,
        w_s = sum_{b=0..3} B3'(k_b - t_s) ln(p[i_f(s), k_b] / pm[k_b]),

    which is ITK's derivative with the opposite sign (ITK returns ``+dMI/dp``;
    see :meth:`itk_derivative`).  ``N`` counts the samples used.  With a linear
    transform and linear interpolation both passes (histogram, weights) are
    fused numba kernels that interpolate on the fly.
    """

    requires_variation = True

    def __init__(
        self, n_bins: int | str = 50, *, gradient: GradientMode = "exact", min_overlap: float = 0.01
    ) -> None:
        super().__init__(gradient=gradient, min_overlap=min_overlap)
        self.auto_bins = isinstance(n_bins, str) and n_bins == "auto"
        self.n_bins = 50 if self.auto_bins else check_positive_int(
            n_bins, where="MattesMutualInformation()", name="n_bins", minimum=5
        )

    def __repr__(self) -> str:
        bins = "'auto'" if self.auto_bins else self.n_bins
        return f"MattesMutualInformation(n_bins={bins}, gradient={self.gradient!r})"

    @staticmethod
    def auto_bin_count(n_samples: int) -> int:
        """Bins chosen by ``n_bins="auto"`` for ``n_samples`` samples."""
        return int(np.clip(round(0.8 * float(n_samples) ** (1.0 / 3.0)), 16, 64))

    # ------------------------------------------------------------------- set-up
    def on_initialize(self) -> None:
        st = self._require("on_initialize")
        if self.auto_bins:
            self.n_bins = self.auto_bin_count(st.samples.n_samples)
        b = self.n_bins
        if st.samples.on_grid:
            franges = st.fixed_values
        else:
            idx, _ = st.fixed.physical_to_nearest_index(st.points)
            size = np.asarray(st.fixed.size, dtype=np.int64)
            idx = np.clip(idx, 0, size - 1)
            strides = np.cumprod(np.r_[1, size[:-1]])
            franges = np.ascontiguousarray(st.fixed.array, dtype=np.float64).reshape(-1)[idx @ strides]
        if st.moving_mask.present:
            mvals = st.moving_pack.data[st.moving_mask.contains(st.moving.voxel_points())]
        else:
            mvals = st.moving_pack.data
        self._fixed_min, self._fixed_max = float(np.min(franges)), float(np.max(franges))
        self._moving_min, self._moving_max = float(np.min(mvals)), float(np.max(mvals))
        self._fixed_bin_size = (self._fixed_max - self._fixed_min) / (b - 4)
        self._fixed_nmin = self._fixed_min / self._fixed_bin_size - 2.0
        self._moving_bin_size = (self._moving_max - self._moving_min) / (b - 4)
        self._moving_nmin = self._moving_min / self._moving_bin_size - 2.0
        t = st.fixed_values / self._fixed_bin_size - self._fixed_nmin
        self._fixed_bins = np.ascontiguousarray(np.clip(np.trunc(t), 2, b - 3).astype(np.int32))
        self._last_joint: NDArray[np.float64] | None = None

    @property
    def joint_histogram(self) -> NDArray[np.float64] | None:
        """Parzen joint histogram ``(n_bins, n_bins)`` of the last evaluation (rows = fixed bins)."""
        return None if self._last_joint is None else self._last_joint.copy()

    def _moving_bin_args(self) -> tuple[float, float, float, float, int]:
        return (self._moving_min, self._moving_max, self._moving_bin_size, self._moving_nmin, self.n_bins)

    def _stats(self, joint_part, count_part, used_part, n_samples: int) -> _MattesStats:
        b = self.n_bins
        n_used = int(round(float(np.sum(used_part))))  # integer counts: exact in any order
        self._check_overlap(n_used, n_samples)
        value, log_ratio, joint = _pk.mattes_statistics(
            np.ascontiguousarray(joint_part), np.ascontiguousarray(count_part), b, _EPS
        )
        joint = joint.reshape(b, b)
        self._last_joint = joint
        return _MattesStats(value=float(value), log_ratio=log_ratio, n_used=n_used, joint=joint)

    # ---------------------------------------------------------------- general path
    def accumulate(self, batch: SampleBatch) -> _MattesStats:
        fbins = self._fixed_bins[batch.indices]
        valid = np.ones(batch.n_valid, dtype=np.bool_)
        joint, count, used = _pk.mattes_histogram(
            fbins, batch.moving_values, valid, *self._moving_bin_args(), HISTOGRAM_CHUNK_SIZE
        )
        return self._stats(joint, count, used, batch.n_samples)

    def finalize(
        self, stats: _MattesStats, batch: SampleBatch, *, with_gradient: bool
    ) -> tuple[float, NDArray[np.float64] | None]:
        if not with_gradient:
            return stats.value, None
        fbins = self._fixed_bins[batch.indices]
        valid = np.ones(batch.n_valid, dtype=np.bool_)
        w = _pk.mattes_weights(
            fbins, batch.moving_values, valid, *self._moving_bin_args(), stats.log_ratio, CHUNK_SIZE
        )
        return stats.value, w / (self._moving_bin_size * stats.n_used)

    # ------------------------------------------------------------------ fused path
    def _support_caches(self, n: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Per-sample B-spline supports (first node, 1-D weights) kept by pass 1 for pass 2."""
        if n == 0:
            return np.empty(0, dtype=np.int64), np.empty((0, 12))
        caches = getattr(self, "_supports", None)
        if caches is None or caches[0].shape[0] != n:
            caches = (np.empty(n, dtype=np.int64), np.empty((n, 12)))
            self._supports = caches
        return caches

    def _release_buffers(self) -> None:
        self._caches = self._supports = None

    def _sample_caches(self, n: int) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
        """Per-sample buffers of the two-pass linear path, reused between evaluations."""
        if n == 0:
            return np.empty(0), np.empty(0, dtype=np.int64), np.empty((0, 3))
        caches = getattr(self, "_caches", None)
        if caches is None or caches[1].shape[0] != n:
            caches = (np.empty(n), np.empty(n, dtype=np.int64), np.empty((n, 3)))
            self._caches = caches
        return caches

    def _evaluate_linear(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        pts, dense, gsize, kmat, kvec, size3, c3, a, o = self._linear_args(st)
        phys = self._physical(st)
        # pass 1 caches each sample's Parzen coordinate and moving gradient for pass 2
        cache_t, cache_k, cache_g = self._sample_caches(st.points.shape[0] if with_gradient else 0)
        n, b = st.points.shape[0], self.n_bins
        nc = n_chunks(n, HISTOGRAM_CHUNK_SIZE)
        joint, count, used = np.zeros((nc, b * b)), np.zeros((nc, b)), np.zeros(nc)
        run_chunks(
            _k.mattes_linear_histogram_chunks, _k.mattes_linear_histogram, n, nc,
            pts, dense, gsize, self._fixed_bins, kmat, kvec, size3, a, o,
            *st.moving_pack.args(), *st.moving_mask.args(), self._path(st), self._mode(with_gradient),
            *self._moving_bin_args(), cache_t, cache_k, cache_g, HISTOGRAM_CHUNK_SIZE, joint, count, used,
        )
        stats = self._stats(joint, count, used, n)
        if not with_gradient:
            return stats.value, None
        part = np.zeros((n_chunks(n), BLOCK))
        run_chunks(
            _k.mattes_linear_gradient_chunks, _k.mattes_linear_gradient, n, part.shape[0],
            pts, dense, gsize, self._fixed_bins, c3, cache_t, cache_k, cache_g, b, stats.log_ratio,
            CHUNK_SIZE, part,
        )
        sums = reduce_in_order(part) / (self._moving_bin_size * stats.n_used)
        return stats.value, self._linear_gradient(st, sums, phys)

    def _evaluate_bspline(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        """Fused path for a B-spline transform: histogram pass (caching), then weight-and-scatter pass."""
        grid = self._grid_support(st)
        if grid is not None:
            return self._evaluate_bspline_grid(st, grid, with_gradient)
        n = st.points.shape[0]
        cache_t, cache_k, cache_g = self._sample_caches(n if with_gradient else 0)
        n_support = n if with_gradient and n * _SUPPORT_BYTES <= _SUPPORT_CACHE_LIMIT else 0
        cache_base, cache_w = self._support_caches(n_support)
        joint, count, used = _bk.mattes_bspline_histogram(
            st.points, self._fixed_bins, *self._bspline_args(st), *self._moving_bin_args(),
            cache_t, cache_k, cache_g, cache_base, cache_w, HISTOGRAM_CHUNK_SIZE,
        )
        stats = self._stats(joint, count, used, n)
        if not with_gradient:
            return stats.value, None
        grad = np.zeros(st.transform.n_parameters)
        grid = st.transform._kernel_grid()
        chunk, blocks = self._bspline_blocks(st)
        for lo, hi in blocks:
            part = _bk.mattes_bspline_gradient(
                st.points[lo:hi], self._fixed_bins[lo:hi], st.transform.n_control_points, *grid,
                cache_t[lo:hi], cache_k[lo:hi], cache_g[lo:hi], cache_base[lo:hi] if n_support else cache_base,
                cache_w[lo:hi] if n_support else cache_w, self.n_bins, stats.log_ratio, chunk,
            )
            grad += reduce_in_order(part)
        return stats.value, grad / (self._moving_bin_size * stats.n_used)

    def _evaluate_bspline_grid(
        self, st: _State, grid: GridSupport, with_gradient: bool
    ) -> tuple[float, NDArray[np.float64] | None]:
        """The B-spline path for samples on the fixed grid (separable supports, row-wise transpose)."""
        n = st.points.shape[0]
        transform = st.transform
        rows, ok, start, weights = grid.kernel_args(transform)
        grid_size = transform._kernel_grid()[2]
        cache_t, cache_k, cache_g = self._sample_caches(n if with_gradient else 0)
        b = self.n_bins
        nc = n_chunks(n, HISTOGRAM_CHUNK_SIZE)
        joint, count, used = np.zeros((nc, b * b)), np.zeros((nc, b)), np.zeros(nc)
        run_chunks(
            _gk.mattes_bspline_grid_histogram_chunks, _gk.mattes_bspline_grid_histogram, n, nc,
            st.points, grid.index, self._fixed_bins, rows, ok, start, weights, grid_size,
            *self._moving_args(st), *self._moving_bin_args(), cache_t, cache_k, cache_g,
            HISTOGRAM_CHUNK_SIZE, joint, count, used,
        )
        stats = self._stats(joint, count, used, n)
        if not with_gradient:
            return stats.value, None
        grad = np.zeros(transform.n_parameters)
        chunk, blocks = self._bspline_blocks(st)
        for lo, hi in blocks:
            n_grid = int(transform.n_control_points)
            part = np.zeros((n_chunks(hi - lo, chunk), transform.ndim * n_grid))
            run_chunks(
                _gk.mattes_bspline_grid_gradient_chunks, _gk.mattes_bspline_grid_gradient, hi - lo,
                part.shape[0], grid.index[lo:hi], self._fixed_bins[lo:hi], start, weights, n_grid,
                grid_size, cache_t[lo:hi], cache_k[lo:hi], cache_g[lo:hi], self.n_bins,
                stats.log_ratio, grid.rowwise, chunk, part,
            )
            grad += reduce_in_order(part)
        return stats.value, grad / (self._moving_bin_size * stats.n_used)
