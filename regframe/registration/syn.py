"""Symmetric diffeomorphic registration (SyN, Avants et al. 2008), greedy variant of ANTs.

Both images are pulled to a *middle* space sampled on the fixed grid (the
virtual domain): ``F`` maps the virtual grid to the fixed image, ``M`` to the
(prealigned) moving image, each kept as a displacement field together with
its inverse.  Every iteration

1. warps the fixed image by ``F`` and the moving image by ``A o M`` (``A`` the
   linear prealignment),
2. evaluates a :class:`~regframe.metrics.dense.DenseMetric` and its exact
   derivatives with respect to both warped images,
3. forms the two descent directions ``-dE/dI * grad(I o phi)`` (the gradient
   with respect to a small displacement composed on the right), smooths
   them with a Gaussian (``update_sigma`` voxels), ramps them to zero over
   the outer voxels of the grid and scales them so that the largest update
   is ``step`` voxels,
4. composes ``F <- F o (id + dF)``, ``M <- M o (id + dM)``, holding the
   update back where a field's Jacobian determinant would leave
   ``[min_jacobian, 1/min_jacobian]`` (fold prevention),
5. optionally smooths the total fields (``total_sigma`` voxels),

over a coarse-to-fine schedule, with ANTs' windowed convergence test; at the
end the inverses are computed by damped Newton iteration (tracking them every
iteration, or refining them at every level, cost 15-30 % of the time for the
same residual), and where a field and its inverse disagree between the grid
points (strong local compression, which linear interpolation of the inverse
does not follow) the field is smoothed locally and inverted again.  The
result maps fixed points to moving points, ``A o M o F^-1``, and its inverse,
``F o M^-1 o A^-1``, comes from the same two half-way fields, not from
inverting the result afterwards.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from .._parallel import CHUNK_SIZE, ordered_map
from .._validation import check_choice
from ..errors import InvalidInputError, NotInvertibleError, RegframeWarning, ShapeError
from ..image import Image
from ..metrics.dense import DenseMetric
from ..transforms.base import Transform
from ..transforms.composite import CompositeTransform
from ..transforms.displacement import DisplacementFieldTransform
from . import _syn_kernels as _k
from .method import RegistrationState
from .pyramid import LevelSchedule, level_image

__all__ = ["syn_register", "SyNResult", "default_syn_schedule"]

#: Newton iterations that compute the inverse fields at the end.
_REFINE_ITERATIONS = 20
#: Iterations per level, coarse to fine, of the default three-level schedule.
_DEFAULT_ITERATIONS = (40, 20, 10)
#: ANTs' ``SyN[0.25, 3, 0]`` smooths the update with a Gaussian of *variance* 3 voxels^2.
_ANTS_UPDATE_SIGMA = float(np.sqrt(3.0))
#: Default band ``[m, 1/m]`` kept for ``det J`` of each half-way field (fold prevention).
_MIN_JACOBIAN = 0.25
#: Voxels over which a held-back update ramps back to full strength.
_HOLD_RAMP = 4
#: Width (voxels) of the ramp that brings updates to zero at the grid border.
_TAPER_WIDTH = 4.0
#: Fixed-point sweeps that start the Newton inversion of a field.
_FIXED_POINT_SWEEPS = 4
#: Inverse consistency between the grid points (voxels) above which a field is smoothed locally at the end.
_CONSISTENCY_TOLERANCE = 0.1
#: Sigma (voxels) of that local smoothing.
_CONSISTENCY_SIGMA = 1.5
#: Largest inverse residual (voxels) accepted without a warning.
_WARN_RESIDUAL = 0.01
#: Target residual (voxels) of the refined inverse fields.
_REFINE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SyNResult:
    """Frozen result of :func:`syn_register`.

    Attributes
    ----------
    forward : CompositeTransform
        Fixed -> moving (ITK convention), ``A o M o F^-1``: the initial linear
        transform ``A`` (when given), then two
        :class:`DisplacementFieldTransform` links on the fixed grid (``M``:
        middle -> prealigned moving, acting second; ``F^-1``: fixed -> middle,
        acting first), so that ``resample(moving, forward, reference=fixed)``
        aligns moving to fixed.
    inverse : CompositeTransform
        Moving -> fixed, ``F o M^-1 o A^-1``, built from the same half-way
        fields (not inverted after the fact).
    final_value : float
        Metric value at the last iteration of the last level.
    iterations_per_level : tuple of int
    history : tuple of float
        Metric value of every iteration, all levels in order.
    converged : tuple of bool
        Per level: whether the windowed convergence test stopped it.
    elapsed : float
        Wall time in seconds.
    inverse_residual : float
        Largest ``|F(F^-1(y)) - y|`` and ``|M(M^-1(y)) - y|`` over the fixed
        grid after the last refinement, in voxels of the fixed grid.
    """

    forward: Transform
    inverse: Transform
    final_value: float
    iterations_per_level: tuple[int, ...]
    history: tuple[float, ...] = field(repr=False)
    converged: tuple[bool, ...] = ()
    elapsed: float = 0.0
    inverse_residual: float = 0.0

    @property
    def n_iterations(self) -> int:
        """Total number of iterations over all levels."""
        return int(sum(self.iterations_per_level))


def default_syn_schedule(image: Image) -> LevelSchedule:
    """ANTs' ``4x2x1`` shrink factors with ``2x1x0`` voxel smoothing, fewer levels for small images.

    The coarsest level keeps at least 16 voxels along the shortest axis.
    """
    shortest = min(image.size)
    factors: list[int] = [1]
    while len(factors) < 3 and shortest // (2 * factors[0]) >= 16:
        factors.insert(0, 2 * factors[0])
    sigmas = tuple(float(f) / 2.0 if f > 1 else 0.0 for f in factors)
    return LevelSchedule(tuple(factors), sigmas, sigmas_in_physical_units=False)


# ---------------------------------------------------------------------------
# field helpers (all fields flat, interleaved, in index units of their grid)
# ---------------------------------------------------------------------------
def _sample(src: NDArray, nch: int, src_size: NDArray, grid_size: NDArray, mat: NDArray, off: NDArray,
            disp: NDArray | None = None, want_grad: bool = False) -> tuple[NDArray, NDArray | None]:
    """Channels of ``src`` at ``mat @ (x + disp(x)) + off`` for every grid voxel ``x``."""
    nv = int(np.prod(grid_size))
    d = grid_size.shape[0]
    out = np.empty(nv * nch)
    disp = np.empty(0) if disp is None else disp
    if not want_grad and d in (2, 3):
        fast = _k.map_interp_2d if d == 2 else _k.map_interp_3d
        fast(src, nch, src_size, disp, grid_size, mat, off, out, CHUNK_SIZE)
        return out, None
    grad = np.empty(nv * d if want_grad else 0)
    _k.map_interp(src, nch, src_size, disp, grid_size, mat, off, out, grad, want_grad, CHUNK_SIZE)
    return out, (grad if want_grad else None)


def _times_matrix(field: NDArray, mat: NDArray) -> NDArray:
    """``mat @ v`` for every vector of a flat interleaved field (elementwise: no BLAS call)."""
    d = mat.shape[0]
    out = np.empty_like(field)
    for i in range(d):
        acc = mat[i, 0] * field[0::d]
        for j in range(1, d):
            acc += mat[i, j] * field[j::d]
        out[i::d] = acc
    return out


#: The Gaussian smoothing filters a field in this many slabs (threads share them) when it has at least
#: ``_SMOOTH_PARALLEL_MIN`` values; every line is filtered alike whatever the split.
_SMOOTH_SLABS, _SMOOTH_PARALLEL_MIN = 8, 32768


def _filter_slab(src: NDArray, out: NDArray, weights: NDArray, axis: int, slab: tuple[slice, ...]) -> None:
    """``out[slab]`` = ``src[slab]`` correlated with ``weights`` along ``axis`` (edge-replicating)."""
    ndimage.correlate1d(src[slab], weights, axis=axis, output=out[slab], mode="nearest")


@functools.lru_cache(maxsize=8)
def _gaussian_weights(sigma: float) -> NDArray:
    """Normalised Gaussian weights of ``sigma`` voxels over ``[-r, r]``, ``r = int(4 sigma + 0.5)`` (scipy's)."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    out = phi / phi.sum()
    out.flags.writeable = False
    return out


class _Grid:
    """A voxel grid with identity maps, the helpers of field arithmetic on it."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.size = np.asarray(image.size, dtype=np.int64)
        self.d = image.ndim
        self.nv = int(np.prod(self.size))
        self.eye = np.eye(self.d)
        self.zero = np.zeros(self.d)
        self.shape = tuple(int(v) for v in self.size[::-1])
        self.index_space = Image(np.zeros(self.shape))

    def compose(self, a: NDArray, b: NDArray) -> NDArray:
        """Field of ``(id + b) o (id + a)``: ``a(x) + b(x + a(x))``."""
        return a + _sample(b, self.d, self.size, self.size, self.eye, self.zero, a)[0]

    def rough_inverse(self, u: NDArray) -> NDArray:
        """Start of the Newton inversion: ``_FIXED_POINT_SWEEPS`` fixed-point steps ``w <- -u(y + w)`` from 0.

        Each sweep is one interpolation of the whole field and shrinks the error
        by about ``|du/dx|``; on smooth fields four leave a few per cent of the voxels
        (instead of most) for the Newton kernel, at half the total cost.
        """
        w = -u
        for _ in range(_FIXED_POINT_SWEEPS - 1):
            w = -_sample(u, self.d, self.size, self.size, self.eye, self.zero, w)[0]
        return w

    def max_norm(self, u: NDArray) -> float:
        """Largest vector length of an interleaved field."""
        sq = u[0 :: self.d] * u[0 :: self.d]
        for a in range(1, self.d):
            sq += u[a :: self.d] * u[a :: self.d]
        return float(np.sqrt(np.max(sq, initial=0.0)))

    def newton_inverse(self, u: NDArray, v: NDArray) -> tuple[NDArray, float]:
        """Refine ``v ~ inverse(u)`` by damped Newton iteration per voxel (robust where ``u`` compresses).

        The iteration of :func:`~regframe.transforms.displacement.newton_invert`
        as one kernel on the field in index units; returns the field and the
        largest residual.
        """
        out = np.empty(self.nv * self.d)
        res = np.empty(self.nv)
        _k.invert_field(u, self.size, v, _REFINE_TOLERANCE, _REFINE_ITERATIONS, out, res, CHUNK_SIZE)
        return out, float(np.max(res, initial=0.0))

    def consistent_inverse(self, u: NDArray, border: NDArray) -> tuple[NDArray, NDArray, float]:
        """The inverse of ``u`` (Newton), with ``u`` smoothed locally where the pair is inconsistent between
        the grid points.

        The inverse is exact at the grid points; between them both fields are
        interpolated, and where ``u`` compresses strongly its inverse bends
        faster than linear interpolation follows (up to 0.3 voxels at the cell
        centres of EM sections, amplified by the other half-way map).  Where
        :meth:`midpoint_inverse_error` exceeds ``_CONSISTENCY_TOLERANCE``
        (and 2 voxels around, with a smooth edge), ``u`` is blended towards its
        Gaussian smoothing (``_CONSISTENCY_SIGMA`` voxels, zero on the border),
        which spreads the compression, and inverted again.  Returns ``u``, its
        inverse and the largest Newton residual.
        """
        v, res = self.newton_inverse(u, self.rough_inverse(u))
        bad = self.midpoint_inverse_error(u, v) > _CONSISTENCY_TOLERANCE
        if not np.any(bad):
            return u, v, res
        wide = ndimage.maximum_filter(bad.reshape(self.shape), size=5, mode="nearest")
        weight = np.clip(ndimage.gaussian_filter(wide.astype(np.float64), 1.0, mode="nearest"), 0.0, 1.0)
        u = u + np.repeat(weight.reshape(-1), self.d) * (self.smooth(u, _CONSISTENCY_SIGMA) * border - u)
        v, res = self.newton_inverse(u, v)
        return u, v, res

    def midpoint_inverse_error(self, u: NDArray, v: NDArray) -> NDArray:
        """``|v(z + u(z)) + u(z)|`` at the cell centres ``z = x + 1/2`` (voxels, one per voxel ``x``): the
        inverse consistency between the grid points, where interpolation makes it worst."""
        half = np.full(self.d, 0.5)
        u_mid = _sample(u, self.d, self.size, self.size, self.eye, half)[0]
        v_at = _sample(v, self.d, self.size, self.size, self.eye, half, u_mid)[0]
        e = u_mid + v_at
        return np.sqrt(np.sum(e.reshape(-1, self.d) ** 2, axis=1))

    def jacobian_det(self, u: NDArray) -> NDArray:
        """``det(I + du/dx)`` of a field at every voxel (central differences, index units)."""
        out = np.empty(self.nv)
        kernel = {2: _k.jacobian_det_2d, 3: _k.jacobian_det_3d}.get(self.d, _k.jacobian_det)
        kernel(u, self.size, out, CHUNK_SIZE)
        return out

    def limit_folding(self, upd: NDArray, u: NDArray, new_u: NDArray, lowest: float,
                      det0: NDArray | None = None) -> tuple[NDArray, NDArray, NDArray | None]:
        """Hold the update back where it would push ``det J`` of the field out of ``[lowest, 1/lowest]``.

        ``new_u`` is ``u`` composed with ``upd``; ``det0``, when known, is
        :meth:`jacobian_det` of ``u``.  Voxels where the new determinant leaves
        the band *and* moves further from 1 than before get a zero update, as do
        the voxels within 2 of them (the determinant depends on the neighbours),
        ramped back to 1 over a few voxels (a smooth weight, so the held-back
        update does not fold at the edge of the region).  Returns the update,
        the composed field and its determinant (None when the update was held
        back: it changed).  The weights and the composition are computed in the
        box around the held-back voxels only (the same values: the weight is 1
        beyond it).
        """
        det1 = self.jacobian_det(new_u)
        out_low = det1 < lowest
        out_high = det1 > 1.0 / lowest
        if not (np.any(out_low) or np.any(out_high)):
            return upd, new_u, det1
        if det0 is None:
            det0 = self.jacobian_det(u)
        bad = ((out_low & (det1 < det0)) | (out_high & (det1 > det0))).reshape(self.shape)
        if not np.any(bad):
            return upd, new_u, det1
        # the box of the bad voxels, widened by every reach below (2 + _HOLD_RAMP voxels of dilation, the
        # Gaussian's 4 sigma) and 2 more, so that the weight is exactly 1 on and beyond its edges
        reach = 2 + _HOLD_RAMP + 4 * int(np.ceil(_HOLD_RAMP / 2.0)) + 2
        box = []
        for axis in range(self.d):
            hit = np.nonzero(np.any(bad, axis=tuple(a for a in range(self.d) if a != axis)))[0]
            box.append(slice(max(int(hit[0]) - reach, 0), min(int(hit[-1]) + reach + 1, self.shape[axis])))
        box_t = tuple(box)
        # the determinant at a voxel depends on its neighbours' displacements: freeze 2 voxels
        # around, and ramp the weight up smoothly outside (a steep ramp would itself compress)
        frozen = ndimage.maximum_filter(bad[box_t], size=5, mode="nearest")
        wide = ndimage.maximum_filter(frozen, size=2 * _HOLD_RAMP + 1, mode="nearest")
        weight = 1.0 - ndimage.gaussian_filter(wide.astype(np.float64), _HOLD_RAMP / 2.0, mode="nearest")
        weight[frozen] = 0.0
        sub_shape = weight.shape
        sub_upd = upd.reshape(self.shape + (self.d,))[box_t] * np.clip(weight, 0.0, 1.0)[..., None]
        upd = upd.copy()
        upd.reshape(self.shape + (self.d,))[box_t] = sub_upd
        # compose inside the box: u sampled at x + upd(x), x the box voxels (global index = local + start)
        start = np.array([sl.start for sl in box_t][::-1], dtype=np.float64)
        sub_flat = np.ascontiguousarray(sub_upd).reshape(-1)
        sampled = _sample(u, self.d, self.size, np.asarray(sub_shape[::-1], dtype=np.int64), self.eye, start,
                          sub_flat)[0]
        new_u = new_u.copy()
        new_u.reshape(self.shape + (self.d,))[box_t] = (sub_flat + sampled).reshape(sub_shape + (self.d,))
        return upd, new_u, None

    def smooth(self, u: NDArray, sigma: float) -> NDArray:
        """Gaussian smoothing of every component (sigma in voxels, truncated at 4 sigma), edge-replicating.

        ``scipy.ndimage.gaussian_filter``'s passes, by ``correlate1d`` with the
        weights kept per sigma (the wrapper's per-call work was a fifth of the
        smoothing time on small grids).
        """
        if sigma <= 0:
            return u
        weights = _gaussian_weights(float(sigma))
        arr = u.reshape(self.shape + (self.d,))
        out = np.empty_like(arr)
        for axis in range(self.d):
            # lines along `axis` are independent: slabs cut across another axis are filtered in parallel
            across = 1 if axis == 0 else 0
            n = self.shape[across]
            pieces = min(n, _SMOOTH_SLABS) if u.size >= _SMOOTH_PARALLEL_MIN else 1
            slabs = [(slice(None),) * across + (slice(n * k // pieces, n * (k + 1) // pieces),) for k in range(pieces)]
            ordered_map(functools.partial(_filter_slab, arr if axis == 0 else out, out, weights, axis), slabs)
        return out.reshape(-1)

    def border_weights(self, width: float) -> NDArray:
        """Per-component weights ramping from 0 on the grid border to 1 at ``width`` voxels inside.

        Multiplying updates by them keeps the domain boundary fixed (the field
        continues as zero outside the grid, as a ``DisplacementFieldTransform``
        does) without a steep step at the border.
        """
        w = np.ones(self.shape)
        for ax in range(self.d):
            n = self.shape[ax]
            i = np.arange(n, dtype=np.float64)
            ramp = np.clip(np.minimum(i, n - 1 - i) / max(width, 1.0), 0.0, 1.0)
            shape = [1] * self.d
            shape[ax] = n
            w = w * ramp.reshape(shape)
        return np.repeat(w.reshape(-1), self.d)

    def descent(self, d_energy: NDArray, values: NDArray) -> NDArray:
        """``-dE/dI * grad I`` interleaved ``(nv*d,)``: ``grad`` by central differences in index units, one-sided
        on the border (``numpy.gradient``'s values), in one kernel."""
        out = np.empty(self.nv * self.d)
        _k.descent_direction(d_energy, values, self.size, out, CHUNK_SIZE)
        return out

    def resample_field(self, u: NDArray, coarse: _Grid) -> NDArray:
        """A field of ``coarse`` (index units) sampled on this grid, in this grid's index units."""
        p2i_c = coarse.image.physical_to_index_matrix
        i2p_f = self.image.index_to_physical_matrix
        mat = p2i_c @ i2p_f
        off = p2i_c @ (self.image.origin - coarse.image.origin)
        vals = _sample(u, self.d, coarse.size, self.size, mat, off)[0]
        to_fine = self.image.physical_to_index_matrix @ coarse.image.index_to_physical_matrix
        return _times_matrix(vals.reshape(-1), to_fine)


@dataclass
class _Side:
    """One image pulled to the middle: its level image, index map and the two fields."""

    image: NDArray
    size: NDArray
    mat: NDArray
    off: NDArray
    mask: NDArray | None
    u: NDArray
    v: NDArray
    #: ``det J`` of ``u`` when known (kept between iterations by the fold prevention)
    det: NDArray | None = None
    #: image and mask interleaved (made on first use)
    stacked: NDArray | None = None

    def warp(self, grid_size: NDArray, source: NDArray | None = None) -> NDArray:
        """``source`` (default: the image) on its grid, pulled to the middle grid through ``A o (id + u)``."""
        src = self.image if source is None else source
        return _sample(src, 1, self.size, grid_size, self.mat, self.off, self.u)[0]

    def pull(self, grid_size: NDArray) -> tuple[NDArray, NDArray | None]:
        """The image and its mask (None without one) pulled to the middle grid, by one interpolation of both."""
        if self.mask is None:
            return self.warp(grid_size), None
        if self.stacked is None:
            self.stacked = np.ascontiguousarray(np.stack([self.image, self.mask], -1)).reshape(-1)
        both = _sample(self.stacked, 2, self.size, grid_size, self.mat, self.off, self.u)[0]
        return np.ascontiguousarray(both[0::2]), both[1::2]


# ---------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------
def _affine_of(transform: Transform | None, d: int, scale: float, where: str) -> tuple[NDArray, NDArray]:
    """``(matrix, offset)`` of a linear transform (probed at ``d + 1`` points, checked at more)."""
    if transform is None:
        return np.eye(d), np.zeros(d)
    if not isinstance(transform, Transform):
        raise InvalidInputError(
            f"{where}: 'initial_transform' must be a regframe Transform or None; got {type(transform).__name__}."
        )
    if transform.ndim != d:
        raise ShapeError(f"{where}: 'initial_transform' must be {d}-D like the images; got {transform.ndim}-D.")
    probe = np.vstack([np.zeros(d), scale * np.eye(d)])
    mapped = transform.transform_points(probe)
    off = mapped[0]
    mat = (mapped[1:] - off).T / scale
    check = np.random.default_rng(0).uniform(-scale, scale, (8, d))
    err = np.max(np.abs(transform.transform_points(check) - (check @ mat.T + off)))
    if err > 1e-6 * max(scale, 1.0):
        raise InvalidInputError(
            f"{where}: 'initial_transform' must be linear (affine, rigid, ... or a composite of them); "
            f"got a {type(transform).__name__} that is not affine (deviation {err:.3g}). Pass the "
            "linear prealignment and run deformable stages after SyN, not before."
        )
    if abs(np.linalg.det(mat)) < 1e-12:
        raise NotInvertibleError(f"{where}: the initial transform is singular (det {np.linalg.det(mat):.3g}).")
    return mat, off


def _normalise(image: Image, lo: float, hi: float) -> Image:
    arr = np.asarray(image.array, dtype=np.float64)
    return image.with_array(np.clip((arr - lo) / (hi - lo), 0.0, 1.0), copy=False)


def _robust_range(image: Image, where: str, name: str) -> tuple[float, float]:
    arr = np.asarray(image.array, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{where}: '{name}' must be finite; got NaN or infinite values. Fill them first.")
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if not hi > lo:
        lo, hi = float(arr.min()), float(arr.max())
    if not hi > lo:
        raise InvalidInputError(f"{where}: '{name}' is constant; a registration needs image structure.")
    return float(lo), float(hi)


def _check_mask(mask: Image | None, image: Image, where: str, name: str) -> Image | None:
    if mask is None:
        return None
    if not isinstance(mask, Image):
        raise InvalidInputError(f"{where}: '{name}' must be a regframe Image or None; got {type(mask).__name__}.")
    if mask.ndim != image.ndim:
        raise ShapeError(f"{where}: '{name}' must be {image.ndim}-D; got {mask.ndim}-D.")
    if not np.any(np.asarray(mask.array) != 0):
        raise InvalidInputError(f"{where}: '{name}' is empty (all zero); pass None to use the whole image.")
    return mask


def _check_iterations(n_iterations: Sequence[int] | int, n_levels: int, where: str) -> tuple[int, ...]:
    its = (n_iterations,) * n_levels if isinstance(n_iterations, (int, np.integer)) else tuple(n_iterations)
    if len(its) != n_levels or any(isinstance(i, bool) or int(i) != i or i < 0 for i in its):
        raise InvalidInputError(
            f"{where}: 'n_iterations' must be one non-negative integer per level ({n_levels} levels); "
            f"got {n_iterations!r}."
        )
    return tuple(int(i) for i in its)


def _converged(values: list[float], window: int, threshold: float) -> bool:
    """ANTs-style windowed test: relative slope of the last ``window`` values above ``-threshold``."""
    if len(values) < window:
        return False
    y = np.asarray(values[-window:])
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    slope = float(np.dot(x, y - y.mean()) / np.dot(x, x))
    scale = max(abs(float(y.mean())), 1e-12)
    return slope / scale > -threshold


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------
def syn_register(
    fixed: Image,
    moving: Image,
    *,
    initial_transform: Transform | None = None,
    metric: str = "ncc",
    radius: int = 2,
    step: float = 0.25,
    update_sigma: float = _ANTS_UPDATE_SIGMA,
    total_sigma: float = 0.0,
    min_jacobian: float = _MIN_JACOBIAN,
    schedule: LevelSchedule | None = None,
    n_iterations: Sequence[int] | int | None = None,
    convergence_threshold: float = 1e-6,
    convergence_window: int = 10,
    n_bins: int = 32,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    callbacks: Sequence[Callable[[RegistrationState], Any]] = (),
    seed: int = 0,
) -> SyNResult:
    """Symmetric diffeomorphic registration of ``moving`` to ``fixed`` (ANTs' ``SyN[step, update, total]``).

    Parameters
    ----------
    fixed, moving : Image
        2-D or 3-D images (any geometry; the middle space is sampled on the
        fixed grid).
    initial_transform : Transform, optional
        Linear prealignment, fixed -> moving (e.g. the result of
        ``register(..., transform="affine")``); copied, never modified.
    metric : {"ncc", "mse", "mattes"}
        Dense metric (:class:`~regframe.metrics.dense.DenseMetric`): local
        normalized correlation (ANTs' CC), mean squares or Mattes mutual
        information (32 bins).  Intensities are scaled to ``[0, 1]`` by their
        0.5 and 99.5 percentiles (one common range for ``"mse"``).
    radius : int
        Window radius of ``"ncc"`` in voxels.
    step : float
        Largest update per iteration, in voxels of the current level.
    update_sigma, total_sigma : float
        Gaussian sigmas (voxels of the current level) of the update and
        total fields (0: none).  ANTs' ``SyN[0.25, 3, 0]`` gives *variances*
        (voxels^2), so the default ``update_sigma`` is ``sqrt(3) = 1.732``.
    min_jacobian : float
        Fold prevention: where an update would push the Jacobian determinant
        of a half-way field below ``min_jacobian`` (or above its reciprocal)
        and further from 1, the update is held back there (smoothly), so both
        fields stay invertible on their grid and the inverse exact (0: off).
        Both half-way fields in ``[0.25, 4]`` (the default) keep the result's ``det J``
        positive even on the disc -> C deformation.
    schedule : LevelSchedule, optional
        Shrink factors and smoothing; default :func:`default_syn_schedule`.
    n_iterations : int or sequence of int, optional
        Iterations per level (a single int for every level).  Default
        ``(40, 20, 10)`` (ANTs' ``SyN`` preset runs ``40x20x0``), keeping the
        last entries when the schedule has fewer levels (40 per level beyond 3).
    convergence_threshold, convergence_window : float, int
        A level stops when the least-squares slope of its last
        ``convergence_window`` values, relative to their mean, is above
        ``-convergence_threshold`` (ANTs' ``1e-6, 10``).
    n_bins : int
        Histogram bins of ``"mattes"``.
    fixed_mask, moving_mask : Image, optional
        Binary masks in the images' spaces; voxels where either warped mask is
        zero are ignored (for ``"ncc"``, windows centred there).
    callbacks : sequence of callables
        ``callback(state: RegistrationState) -> bool | None`` after every
        iteration (``parameters`` is empty); returning True stops the run.
    seed : int
        Accepted for interface symmetry with :func:`register` (the method is
        deterministic and draws no random numbers).

    Returns
    -------
    SyNResult

    Raises
    ------
    InvalidInputError
        For bad images, masks, a non-linear ``initial_transform`` or bad options.
    """
    where = "syn_register()"
    t0 = time.perf_counter()
    for name, im in (("fixed", fixed), ("moving", moving)):
        if not isinstance(im, Image):
            raise InvalidInputError(f"{where}: '{name}' must be a regframe Image; got {type(im).__name__}.")
    if fixed.ndim != moving.ndim:
        raise ShapeError(f"{where}: fixed ({fixed.ndim}-D) and moving ({moving.ndim}-D) must have the same dimension.")
    check_choice(metric, ("ncc", "mse", "mattes"), where=where, name="metric")
    for name, val in (("step", step), ("update_sigma", update_sigma), ("total_sigma", total_sigma)):
        if not np.isfinite(val) or val < 0 or (name == "step" and val == 0):
            raise InvalidInputError(f"{where}: '{name}' must be finite and {'> 0' if name == 'step' else '>= 0'}; got {val!r}.")
    if not (np.isfinite(min_jacobian) and 0.0 <= min_jacobian < 1.0):
        raise InvalidInputError(f"{where}: 'min_jacobian' must be in [0, 1) (0: no fold prevention); got {min_jacobian!r}.")
    if convergence_window < 2:
        raise InvalidInputError(f"{where}: 'convergence_window' must be >= 2; got {convergence_window!r}.")
    d = fixed.ndim
    fixed_mask = _check_mask(fixed_mask, fixed, where, "fixed_mask")
    moving_mask = _check_mask(moving_mask, moving, where, "moving_mask")
    extent = float(max(np.max(np.abs(fixed.origin)), np.max(fixed.spacing * np.asarray(fixed.size)), 1.0))
    a_mat, a_off = _affine_of(initial_transform, d, extent, where)
    if schedule is None:
        schedule = default_syn_schedule(fixed)
    elif not isinstance(schedule, LevelSchedule):
        raise InvalidInputError(f"{where}: 'schedule' must be a LevelSchedule; got {type(schedule).__name__}.")
    if n_iterations is None:
        n_iterations = _DEFAULT_ITERATIONS[-schedule.n_levels :] if schedule.n_levels <= 3 else _DEFAULT_ITERATIONS[0]
    iterations = _check_iterations(n_iterations, schedule.n_levels, where)

    f_lo, f_hi = _robust_range(fixed, where, "fixed")
    m_lo, m_hi = _robust_range(moving, where, "moving")
    if metric == "mse":
        f_lo = m_lo = min(f_lo, m_lo)
        f_hi = m_hi = max(f_hi, m_hi)
    fixed_n = _normalise(fixed, f_lo, f_hi)
    moving_n = _normalise(moving, m_lo, m_hi)
    dense = DenseMetric(metric, radius=int(radius), n_bins=int(n_bins))

    grid: _Grid | None = None
    sides: list[_Side] = []
    history: list[float] = []
    per_level: list[int] = []
    converged: list[bool] = []
    stopped = False
    value = float("nan")
    for li in range(schedule.n_levels):
        level = schedule.level(li, d)
        fl = level_image(fixed_n, level)
        ml = level_image(moving_n, level)
        new_grid = _Grid(fl)
        if grid is None:
            zero = np.zeros(new_grid.nv * d)
            fields = [(zero, zero), (zero.copy(), zero.copy())]
        else:
            fields = [(new_grid.resample_field(s.u, grid), new_grid.resample_field(s.v, grid)) for s in sides]
        grid = new_grid
        i2p_v = fl.index_to_physical_matrix
        mats = [
            (np.eye(d), np.zeros(d)),
            (ml.physical_to_index_matrix @ a_mat @ i2p_v,
             ml.physical_to_index_matrix @ (a_mat @ fl.origin + a_off - ml.origin)),
        ]
        sides = []
        for (img, mask), (mat, off), (u, v) in zip(((fl, fixed_mask), (ml, moving_mask)), mats, fields):
            mask_flat = None
            if mask is not None:
                # mask in its own space -> continuous index of the level image's grid
                p2i = mask.physical_to_index_matrix
                mmat = p2i @ img.index_to_physical_matrix
                moff = p2i @ (img.origin - mask.origin)
                src = np.ascontiguousarray((np.asarray(mask.array) != 0).astype(np.float64).reshape(-1))
                mask_flat = _sample(src, 1, np.asarray(mask.size, dtype=np.int64),
                                    np.asarray(img.size, dtype=np.int64), mmat, moff)[0]
            sides.append(_Side(np.ascontiguousarray(img.array, dtype=np.float64).reshape(-1),
                               np.asarray(img.size, dtype=np.int64), mat, off, mask_flat, u, v))
        border = grid.border_weights(_TAPER_WIDTH)
        values: list[float] = []
        n_done = 0
        level_converged = False
        for it in range(iterations[li]):
            pulled = [s.pull(grid.size) for s in sides]
            warped = [img_w for img_w, _ in pulled]
            weights = None
            for _, mask_w in pulled:
                if mask_w is not None:
                    wm = (mask_w >= 0.5).astype(np.float64)
                    weights = wm if weights is None else weights * wm
            ev = dense.evaluate(warped[0], warped[1], tuple(grid.size), weights)
            value = ev.value
            values.append(value)
            history.append(value)
            n_done = it + 1
            for s, img_w, dE in zip(sides, warped, (ev.d_fixed, ev.d_moving)):
                upd = grid.descent(dE, img_w)
                upd = grid.smooth(upd, update_sigma)
                upd *= border
                norm = grid.max_norm(upd)
                if norm > 0:
                    upd *= step / norm
                    new_u = grid.compose(upd, s.u)
                    if min_jacobian > 0:
                        upd, new_u, s.det = grid.limit_folding(upd, s.u, new_u, min_jacobian, s.det)
                    s.u = new_u
            if total_sigma > 0:
                for s in sides:
                    s.u = grid.smooth(s.u, total_sigma)
                    s.u *= border
                    s.det = None
            state = RegistrationState(level=li, iteration=it, value=value, gradient_norm=float("nan"),
                                      parameters=np.zeros(0))
            if any(cb(state) is True for cb in callbacks):
                stopped = True
                break
            if _converged(values, convergence_window, convergence_threshold):
                level_converged = True
                break
        residual = 0.0
        if stopped or li == schedule.n_levels - 1:  # the inverses are needed only at the end
            for s in sides:
                s.u, s.v, res = grid.consistent_inverse(s.u, border)
                residual = max(residual, res)
        per_level.append(n_done)
        converged.append(level_converged)
        if stopped:
            break
    assert grid is not None
    # the result on the finest grid reached (the full-resolution fixed grid unless stopped early)
    if grid.image.size != fixed.size:
        final = _Grid(fixed)
        fields = [(final.resample_field(s.u, grid), final.resample_field(s.v, grid)) for s in sides]
        residual = 0.0
        for s, (u, v) in zip(sides, fields):
            s.u = u
            s.v, res = final.newton_inverse(u, v)
            residual = max(residual, res)
        grid = final
    if residual > _WARN_RESIDUAL:
        warnings.warn(
            f"syn_register(): the half-way fields could not be inverted exactly (largest residual "
            f"{residual:.3g} voxels, expected <= {_WARN_RESIDUAL}); the deformation folds or is too "
            "compressed for its grid, so 'inverse' is inaccurate there. Regularise it: total_sigma=0.5-1 "
            "(voxels), a larger update_sigma or fewer iterations.",
            RegframeWarning,
            stacklevel=2,
        )
    f_side, m_side = sides
    i2p = fixed.index_to_physical_matrix

    def physical(field_idx: NDArray) -> DisplacementFieldTransform:
        return DisplacementFieldTransform.from_array(_times_matrix(field_idx, i2p).reshape(grid.shape + (d,)), fixed)

    # the half-way maps stay separate links: det J of the chain is the product of two positive
    # determinants, while one field resampled from their composition can fold between voxels
    forward_links: list[Transform] = [physical(m_side.u), physical(f_side.v)]   # M o F^-1
    inverse_links: list[Transform] = [physical(f_side.u), physical(m_side.v)]   # F o M^-1
    if initial_transform is not None:
        forward_links.insert(0, initial_transform.copy())
        inverse_links.append(initial_transform.copy().inverse())
    forward = CompositeTransform(d, forward_links)
    inverse = CompositeTransform(d, inverse_links)
    del seed
    return SyNResult(
        forward=forward,
        inverse=inverse,
        final_value=float(value),
        iterations_per_level=tuple(per_level),
        history=tuple(history),
        converged=tuple(converged),
        elapsed=time.perf_counter() - t0,
        inverse_residual=float(residual),
    )
