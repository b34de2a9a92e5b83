"""Dense (voxelwise) metrics between two images sampled on one grid.

Used by symmetric diffeomorphic registration (SyN): both images are warped
onto a common grid and the metric returns its value (to *minimise*) together
with its exact derivatives with respect to every warped intensity, ``dE/df``
and ``dE/dm``.  The derivative with respect to a displacement follows by the
chain rule (``dE/du(x) = dE/dm(x) * dm_w/du(x)``).

* ``"ncc"``: local normalized cross-correlation of ANTs (``CC``): windows of
  ``(2 radius + 1)**d`` voxels around every voxel (clipped at the grid
  border), ``E = -(1/W) sum_w weight_w A_w^2 / (B_w C_w)`` with the centred
  cross and auto sums ``A, B, C`` of the window.  Box sums are separable
  running sums (memory and time ``O(voxels)`` whatever the radius).
* ``"mse"``: ``E = (1/W) sum_x weight_x (f - m)^2``.
* ``"mattes"``: ``E = -MI`` of a joint histogram with cubic B-spline Parzen
  windows on *both* axes (so both images get a derivative, as symmetric
  registration needs), bins over fixed intensity ranges.

``W`` is the sum of the weights (a mask: 1 inside, 0 outside).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE, reduce_in_order
from .._validation import check_choice
from ..errors import EmptyMaskError, InvalidInputError, ShapeError
from . import _dense_kernels as _k

__all__ = ["DenseMetric", "DenseEvaluation", "DENSE_METRIC_KINDS"]

DENSE_METRIC_KINDS = ("ncc", "mse", "mattes")

#: Padding bins on each side of the Mattes histogram (cubic Parzen support).
_PAD = 2


@dataclass(frozen=True)
class DenseEvaluation:
    """Value and voxelwise derivatives of a :class:`DenseMetric`.

    Attributes
    ----------
    value : float
        Metric value (to minimise).
    d_fixed, d_moving : ndarray
        ``dE/df`` and ``dE/dm`` per voxel, flat in raster order (x fastest).
    """

    value: float
    d_fixed: NDArray[np.float64]
    d_moving: NDArray[np.float64]


@dataclass(frozen=True)
class DenseMetric:
    """A voxelwise metric between two images on one grid.

    Parameters
    ----------
    kind : {"ncc", "mse", "mattes"}
    radius : int
        Window radius in voxels for ``"ncc"`` (ANTs' default 2: 5x5(x5)).
    n_bins : int
        Histogram bins per axis for ``"mattes"``.
    fixed_range, moving_range : (float, float)
        Intensity ranges mapped onto the Mattes bins (values are clipped).
    """

    kind: str = "ncc"
    radius: int = 2
    n_bins: int = 32
    fixed_range: tuple[float, float] = (0.0, 1.0)
    moving_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        where = "DenseMetric()"
        check_choice(self.kind, DENSE_METRIC_KINDS, where=where, name="kind")
        if isinstance(self.radius, bool) or not isinstance(self.radius, (int, np.integer)) or self.radius < 1:
            raise InvalidInputError(f"{where}: 'radius' must be an integer >= 1 (voxels); got {self.radius!r}.")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, (int, np.integer)) or self.n_bins < 8:
            raise InvalidInputError(f"{where}: 'n_bins' must be an integer >= 8; got {self.n_bins!r}.")
        for name in ("fixed_range", "moving_range"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise InvalidInputError(f"{where}: '{name}' must be finite (low, high) with high > low; got {(lo, hi)}.")

    def evaluate(
        self,
        fixed: NDArray[np.float64],
        moving: NDArray[np.float64],
        size: tuple[int, ...],
        weights: NDArray[np.float64] | None = None,
    ) -> DenseEvaluation:
        """Value and exact derivatives with respect to every intensity.

        Parameters
        ----------
        fixed, moving : ndarray
            Intensities on one grid, flat in raster order (x fastest) or
            shaped in numpy order; float64.
        size : tuple of int
            Grid size in ITK order ``(nx, ny[, nz])``.
        weights : ndarray, optional
            Per-voxel weights (a mask); for ``"ncc"`` they weight the windows
            by their centre voxel.  Default: all ones.

        Raises
        ------
        ShapeError
            If the arrays do not have ``prod(size)`` voxels.
        EmptyMaskError
            If the weights sum to zero.
        """
        where = f"DenseMetric({self.kind!r}).evaluate()"
        nv = int(np.prod(size))
        f = np.ascontiguousarray(fixed, dtype=np.float64).reshape(-1)
        m = np.ascontiguousarray(moving, dtype=np.float64).reshape(-1)
        if f.size != nv or m.size != nv:
            raise ShapeError(f"{where}: expected {nv} voxels (size {tuple(size)}); got {f.size} and {m.size}.")
        if weights is None:
            w = np.ones(nv)
        else:
            w = np.ascontiguousarray(weights, dtype=np.float64).reshape(-1)
            if w.size != nv:
                raise ShapeError(f"{where}: 'weights' must have {nv} voxels; got {w.size}.")
        total = float(np.sum(w))
        if not total > 0:
            raise EmptyMaskError(f"{where}: the weights (mask) must have a positive sum; got {total}. Check the masks overlap.")
        sz = np.asarray(size, dtype=np.int64)
        if self.kind == "mse":
            r = f - m
            value = float(np.sum(w * r * r)) / total
            dm = (-2.0 / total) * w * r
            return DenseEvaluation(value, -dm, dm)
        if self.kind == "ncc":
            return self._ncc(f, m, sz, w, total)
        return self._mattes(f, m, w, total)

    # ------------------------------------------------------------------ ncc
    def _ncc(self, f: NDArray, m: NDArray, size: NDArray, w: NDArray, total: float) -> DenseEvaluation:
        nv = f.size
        sums = box_sums(np.stack([f, m, f * f, m * m, f * m]), size, self.radius, overwrite=True)
        cc = np.empty(nv)
        coef = np.empty((7, nv))
        scale_sq = max(float(np.max(np.abs(f))), 1e-300) * max(float(np.max(np.abs(m))), 1e-300)
        _k.cc_window_terms(sums, w, size, int(self.radius), 1e-12 * scale_sq, cc, coef)
        del sums
        boxed = box_sums(coef, size, self.radius, overwrite=True)
        del coef
        d_f = np.empty(nv)
        d_m = np.empty(nv)
        _k.cc_derivatives(f, m, boxed, 1.0 / total, d_f, d_m)
        return DenseEvaluation(-float(np.sum(cc)) / total, d_f, d_m)

    # --------------------------------------------------------------- mattes
    def _bin_coordinates(self, values: NDArray, rng: tuple[float, float]) -> tuple[NDArray, float]:
        lo, hi = rng
        width = (hi - lo) / (self.n_bins - 2 * _PAD - 1)
        return _PAD + (np.clip(values, lo, hi) - lo) / width, 1.0 / width

    def _mattes(self, f: NDArray, m: NDArray, w: NDArray, total: float) -> DenseEvaluation:
        nb = int(self.n_bins)
        a, sa = self._bin_coordinates(f, self.fixed_range)
        b, sb = self._bin_coordinates(m, self.moving_range)
        # clipped values have a zero derivative
        sa_v = np.where((f > self.fixed_range[0]) & (f < self.fixed_range[1]), sa, 0.0)
        sb_v = np.where((m > self.moving_range[0]) & (m < self.moving_range[1]), sb, 0.0)
        joint = reduce_in_order(_k.mattes_histogram(a, b, w, nb, CHUNK_SIZE)).reshape(nb, nb) / total
        pf = joint.sum(axis=1)
        pm = joint.sum(axis=0)
        nz = joint > 0
        ratio = np.zeros_like(joint)
        ratio[nz] = np.log(joint[nz] / np.outer(pf, pm)[nz])
        mi = float(np.sum(joint[nz] * ratio[nz]))
        table = np.ascontiguousarray((-ratio / total).reshape(-1))
        d_f = np.empty(f.size)
        d_m = np.empty(f.size)
        _k.mattes_derivatives(a, b, w, table, nb, d_f, d_m)
        return DenseEvaluation(-mi, d_f * sa_v, d_m * sb_v)


def box_sums(
    channels: NDArray[np.float64], size: NDArray[np.int64], radius: int, *, overwrite: bool = False
) -> NDArray[np.float64]:
    """Windowed sums (radius ``radius`` voxels, clipped) of every row of ``channels``.

    Parameters
    ----------
    channels : (k, n_voxels) ndarray
    size : (d,) int64, ITK order
    radius : int
    overwrite : bool
        Allow using ``channels`` (contiguous float64) as a work buffer (saves
        one copy); it is never modified otherwise.
    """
    src = np.ascontiguousarray(channels, dtype=np.float64)
    cur = src if overwrite and src is channels else np.empty_like(src)
    nxt = np.empty_like(src)
    inner = 1
    d = size.shape[0]
    for a in range(d):
        n_len = int(size[a])
        outer = int(np.prod(size[a + 1 :])) if a + 1 < d else 1
        _k.box_sum_axis(src if a == 0 else cur, nxt, outer, n_len, inner, int(radius))
        cur, nxt = nxt, cur
        inner *= n_len
    return cur
