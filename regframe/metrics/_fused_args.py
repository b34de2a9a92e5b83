"""Kernel arguments of the metric engine's fused paths (private).

What the fused numba kernels are given: the prepared state of an initialised
metric (:class:`_State`), the moving image's index map padded to 3-D, the
position and map arguments for a linear transform and the conversion of the
kernels' gradient sums back to parameters, the arguments of the B-spline
kernels (and their chunk blocks), and the folding of a linear initial transform
into the moving image so that a B-spline stage on it takes the fused B-spline
path.  :class:`~regframe.metrics.base.ImageMetric` inherits :class:`FusedArgs`;
the kernel conventions are in :mod:`._sample_kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._parallel import scatter_chunk_size
from ..image import Image
from ..interpolators import Interpolator
from ..transforms.base import Transform
from ..transforms.bspline import BSplineTransform
from ..transforms.composite import CompositeTransform
from ._bspline_grid import GridSupport, grid_support
from ._images import ImagePack, MaskPack, fold_linear
from .sampling import SampleSet

__all__ = ["FusedArgs", "bspline_state"]

_NO_POINTS = {2: np.zeros((0, 2)), 3: np.zeros((0, 3))}

#: Chunks per call of a fused B-spline kernel (bounds the per-chunk parameter rows).
_BSPLINE_BLOCK_CHUNKS = 32


def _pad(v: NDArray[Any], fill: float = 0.0) -> NDArray[np.float64]:
    """Pad a 2-vector to 3 (kernels work in padded 3-D)."""
    out = np.full(3, fill, dtype=np.float64)
    out[: v.shape[0]] = v
    return out


def _index_map(pack: ImagePack, a: NDArray[np.float64], o: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(kmat, kvec)`` with ``ci = kmat @ x + kvec`` for ``y = a @ x + o``, padded to 3-D."""
    d = a.shape[0]
    kmat = np.zeros((3, 3))
    kmat[:d, :d] = pack.p2i @ a
    kvec = _pad(pack.p2i @ (o - pack.origin))
    return kmat, kvec


@dataclass
class _State:
    """Everything :meth:`ImageMetric.initialize` prepares (private)."""

    fixed: Image
    moving: Image
    transform: Transform
    samples: SampleSet
    points: NDArray[np.float64]
    fixed_values: NDArray[np.float64]
    moving_pack: ImagePack
    moving_mask: MaskPack
    fixed_mask: MaskPack
    interpolator: Interpolator | None  # None: the built-in linear kernel is used
    dense: bool  # samples = every fixed voxel in raster order (positions implicit)


def bspline_state(st: _State) -> _State | None:
    """The state the fused B-spline kernels evaluate, or None when the transform does not fit.

    See :meth:`regframe.metrics.base.ImageMetric._bspline_view` (which also
    checks the interpolator and gradient mode).
    """
    transform = st.transform
    if type(transform) is BSplineTransform:
        return st
    if not isinstance(transform, CompositeTransform) or len(transform) < 2:
        return None
    flags = transform.optimize_flags
    bspline = transform[len(transform) - 1]
    if type(bspline) is not BSplineTransform or not flags[-1] or any(flags[:-1]):
        return None
    rest = CompositeTransform(transform.ndim, transform.transforms[:-1])
    if not rest.is_linear:
        return None
    zero = np.zeros((1, transform.ndim))
    a = np.asarray(rest.jacobian_position(zero)[0], dtype=np.float64)
    o = np.asarray(rest.transform_points(zero)[0], dtype=np.float64)
    if not np.all(np.isfinite(a)) or abs(np.linalg.det(a)) < 1e-12:
        return None
    return replace(st, transform=bspline, moving_pack=fold_linear(st.moving_pack, a, o),
                   moving_mask=fold_linear(st.moving_mask, a, o) if st.moving_mask.present else st.moving_mask)


class FusedArgs:
    """Argument assembly of the fused kernels, mixed into :class:`~regframe.metrics.base.ImageMetric`."""

    @staticmethod
    def _bspline_args(st: _State) -> tuple[Any, ...]:
        """Transform and moving-image arguments of the fused B-spline kernels.

        Returns ``(params, n_grid, origin, p2i, grid_size, max_limit, band_lo,
        band_hi, nudged)`` followed by :meth:`_moving_args`, in the order of
        :mod:`regframe.metrics._bspline_kernels` (after ``points``).
        """
        transform = st.transform
        params = np.ascontiguousarray(transform._get_parameters(), dtype=np.float64)
        return (params, int(transform.n_control_points), *transform._kernel_grid(),
                *FusedArgs._moving_args(st))

    @staticmethod
    def _moving_args(st: _State) -> tuple[Any, ...]:
        """The moving image for the B-spline kernels.

        ``(kmat, kvec, size3, data, p2i, origin, mask..., has_mask)``.
        """
        d = st.transform.ndim
        pack = st.moving_pack
        kmat, kvec = _index_map(pack, np.eye(d), np.zeros(d))
        return (kmat, kvec, pack.size3, pack.data, pack.p2i, pack.origin, *st.moving_mask.args())

    def _grid_args(self, st: _State, grid: GridSupport) -> tuple[Any, ...]:
        """Arguments of the separable kernels: ``(rows, ok, start, w, n_grid, grid_size)`` + :meth:`_moving_args`."""
        transform = st.transform
        return (*grid.kernel_args(transform), int(transform.n_control_points),
                transform._kernel_grid()[2], *self._moving_args(st))

    @staticmethod
    def _bspline_blocks(st: _State) -> tuple[int, list[tuple[int, int]]]:
        """Chunk size and the sample ranges of successive fused B-spline kernel calls.

        Each call owns one row of parameter partials per chunk; blocks of
        :data:`_BSPLINE_BLOCK_CHUNKS` chunks bound that memory.  Both depend
        only on the problem, never on the thread count.
        """
        n = st.points.shape[0]
        chunk = scatter_chunk_size(st.transform.n_parameters)
        block = _BSPLINE_BLOCK_CHUNKS * chunk
        return chunk, [(lo, min(lo + block, n)) for lo in range(0, n, block)]

    def _grid_support(self, st: _State) -> GridSupport | None:
        """Separable supports of the sample set in the B-spline grid (cached), or None.

        Kept while the sample points and the control grid stay the same
        (the coefficients do not matter).
        """
        transform = st.transform
        assert isinstance(transform, BSplineTransform)
        key = transform._get_fixed_parameters().tobytes()
        hit = getattr(self, "_grid_cache", None)
        if hit is not None and hit[0] is st.points and hit[1] == key:
            return hit[2]
        support = grid_support(st.samples, st.fixed.size, transform)
        self._grid_cache = (st.points, key, support)
        return support

    @staticmethod
    def _linear_args(st: _State) -> tuple[Any, ...]:
        """Position and map arguments of the fused kernels for a linear transform.

        Returns ``(points, dense, grid_size, kmat, kvec, size3, center3, a, o)``
        in the kernels' conventions (:mod:`regframe.metrics._sample_kernels`).  For a
        dense sample set the positions are implicit grid indices: the fixed
        grid geometry is folded into the maps (``A F``, ``A O_f + o``) and the
        centre is 0; :meth:`_linear_gradient` converts the sums back.
        """
        transform = st.transform
        d = transform.ndim
        a = np.asarray(transform.compute_matrix(), dtype=np.float64)
        o = np.asarray(transform.offset, dtype=np.float64)
        if st.dense:
            f = st.fixed.index_to_physical_matrix
            a, o = a @ f, a @ st.fixed.origin + o
            points, dense = _NO_POINTS[d], True
            grid = np.asarray(st.fixed.size, dtype=np.int64)
            center = np.zeros(d)
        else:
            points, dense = st.points, False
            grid = np.ones(d, dtype=np.int64)
            center = np.asarray(transform.center, dtype=np.float64)
        kmat, kvec = _index_map(st.moving_pack, a, o)
        return (
            points, dense, _pad(grid, 1).astype(np.int64), kmat, kvec, st.moving_pack.size3,
            _pad(center), np.ascontiguousarray(a), np.ascontiguousarray(o),
        )

    @staticmethod
    def _linear_gradient(st: _State, sums: NDArray[np.float64], physical: bool) -> NDArray[np.float64]:
        """``sum_s J_s^T v_s`` from one gradient-sum block of a fused kernel.

        ``sums`` = ``[sum v (x - c)^T (3x3 row-major), sum v (3)]`` (3-D
        padded).  Index-space gradients (``physical`` False, the fast path)
        are mapped with ``p2i.T``; dense positions with
        ``x - c = F idx + (O_f - c)``.
        """
        transform = st.transform
        d = transform.ndim
        outer = sums[:9].reshape(3, 3)[:d, :d]
        vsum = sums[9 : 9 + d]
        if not physical:
            p2i = st.moving_pack.p2i
            outer = p2i.T @ outer
            vsum = p2i.T @ vsum
        if st.dense:
            f = st.fixed.index_to_physical_matrix
            c = np.asarray(transform.center, dtype=np.float64)
            outer = outer @ f.T + np.outer(vsum, st.fixed.origin - c)
        da = np.asarray(transform.compute_matrix_derivatives(), dtype=np.float64)
        dt = np.asarray(transform.compute_translation_derivatives(), dtype=np.float64)
        return da.reshape(da.shape[0], -1) @ outer.reshape(-1) + dt @ vsum
