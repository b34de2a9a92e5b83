"""The metric contract and the image-metric engine.

Tiers (see ``docs/architecture.md`` and the style guide, section 4.6):

* :class:`Metric` - the contract every metric follows (``initialize``,
  ``value``, ``value_and_gradient``).  The value is **minimised**; the
  gradient is the **true** gradient ``d value / d parameters`` (ITK v4 metrics
  return its negative: see :meth:`Metric.itk_derivative`).
* :class:`ImageMetric` - the engine (ITK's threader, deterministic): samples
  on the fixed image, fixed values, moving values and gradients at the mapped
  points, validity, and the chain rule
  ``gradient = transform.jacobian_vjp(x, u[:, None] * grad_M(T(x)))`` with the
  per-sample weights ``u_s = d value / d m_s`` that a subclass supplies through
  :meth:`ImageMetric.accumulate` and :meth:`ImageMetric.finalize`.
* :class:`PointwiseMetric` - the easiest extension: a mean of a per-sample
  cost ``c(f, m)``; implement ``pointwise_value`` and ``pointwise_derivative``.

Built-in metrics additionally fuse the point map, the linear interpolation and
the accumulation into one numba kernel when the transform is linear and the
moving interpolator is linear (the common rigid/affine case); the fused and
the general path compute the same quantities (tested).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from .._parallel import CHUNK_SIZE
from .._validation import check_choice
from ..errors import ConstantImageError, InvalidInputError, NoOverlapError, NonFiniteError, ShapeError
from ..image import Image
from ..interpolators import (
    Interpolator,
    LinearInterpolator,
    NotInitializedError,
    make_interpolator,
)
from ..transforms.base import Transform
from ..transforms.linear import MatrixOffsetTransformBase
from . import _sample_kernels as _k
from ._fused_args import FusedArgs, _index_map, _State, bspline_state
from ._images import ImagePack, MaskPack, as_image
from .sampling import FullSampler, Sampler, SampleSet

__all__ = ["Metric", "ImageMetric", "PointwiseMetric", "SampleBatch", "GradientMode"]

GradientMode = Literal["exact", "central_difference"]
_GRADIENT_MODES = ("exact", "central_difference")
_MODE_CODE = {"exact": 1, "central_difference": 2}


class Metric(ABC):
    """Abstract base of every metric.

    Subclasses must implement :meth:`initialize`, :meth:`value` and
    :meth:`value_and_gradient`, and keep the conventions: the value is to be
    minimised and the gradient is ``d value / d parameters`` at the current
    parameters of the transform given to :meth:`initialize`, in the
    coordinates ``transform.update_parameters`` consumes.
    """

    @abstractmethod
    def initialize(
        self,
        fixed: Image,
        moving: Image,
        transform: Transform,
        *,
        interpolator: str | Interpolator = "linear",
        sampler: Sampler | None = None,
        fixed_mask: Image | NDArray[Any] | None = None,
        moving_mask: Image | NDArray[Any] | None = None,
    ) -> Metric:
        """Bind images, transform, interpolator, sampler and masks; returns ``self``."""
        raise NotImplementedError(f"{type(self).__name__}.initialize()")

    @abstractmethod
    def value(self) -> float:
        """Metric value at the transform's current parameters (to be minimised)."""
        raise NotImplementedError(f"{type(self).__name__}.value()")

    @abstractmethod
    def value_and_gradient(self) -> tuple[float, NDArray[np.float64]]:
        """Value and true gradient ``d value / d parameters``, shape ``(n_parameters,)``."""
        raise NotImplementedError(f"{type(self).__name__}.value_and_gradient()")

    def itk_derivative(self) -> NDArray[np.float64]:
        """What ITK v4's ``GetDerivative()`` returns: the *negative* gradient.

        ITK's v4 metrics minimise the same value but return
        ``-d value / d parameters`` (a descent direction); use this only for
        comparisons with ITK.
        """
        return -self.value_and_gradient()[1]


@dataclass(frozen=True)
class SampleBatch:
    """The valid samples of one evaluation, handed to :meth:`ImageMetric.accumulate`.

    Attributes
    ----------
    fixed_values : (n_valid,) ndarray of float64
        Fixed intensities ``f_s`` at the sample points.
    moving_values : (n_valid,) ndarray of float64
        Moving intensities ``m_s = M(T(x_s))``.
    indices : (n_valid,) ndarray of int64
        Positions of these samples in the metric's sample set (for looking up
        per-sample data precomputed in :meth:`ImageMetric.on_initialize`).
    n_samples : int
        Number of samples tried (valid or not).
    """

    fixed_values: NDArray[np.float64]
    moving_values: NDArray[np.float64]
    indices: NDArray[np.int64]
    n_samples: int

    @property
    def n_valid(self) -> int:
        """Number of valid samples."""
        return int(self.moving_values.shape[0])


class ImageMetric(Metric, FusedArgs):
    """Engine of every image-to-image metric (template method).

    Parameters
    ----------
    gradient : {"exact", "central_difference"}, default "exact"
        How the moving-image gradient is obtained.  ``"exact"``: the exact
        derivative of the interpolant, so the metric gradient is the
        derivative of the metric value (finite differences confirm it).
        ``"central_difference"``: ITK's ``CentralDifferenceImageFunction`` on
        the linear interpolant (world-axis probes ``+-spacing/2``, zero when a
        probe leaves the buffer), as ITK v4 uses with its gradient filters off;
        use it to reproduce ITK numbers.
    min_overlap : float, default 0.01
        Smallest fraction of samples that must map inside the moving image
        (and moving mask); below it :class:`~regframe.errors.NoOverlapError`
        is raised.  At least one valid sample is always required.

    Notes
    -----
    **What happens once** (:meth:`initialize`): the sampler draws points
    ``x_s`` on the fixed grid (the fixed mask is applied there, in the fixed
    image's physical space), the fixed values ``f_s`` are computed (voxel
    values on the grid, linear interpolation for jittered points), and
    :meth:`on_initialize` lets the subclass precompute.

    **What happens per evaluation**: ``y_s = T(x_s)``; moving value ``m_s``
    and physical gradient ``g_s`` at ``y_s``; a sample is *valid* when ``y_s``
    is inside the moving buffer (ITK's half-voxel rule) and the moving mask.
    The valid samples go to :meth:`accumulate`; :meth:`finalize` returns the
    value and, for gradients, per-sample weights ``u_s = d value / d m_s``;
    the engine then returns ``sum_s J_s^T (u_s g_s)`` computed by
    ``transform.jacobian_vjp`` (never a dense ``(n, ndim, P)`` Jacobian).

    All reductions are deterministic: numpy single-threaded sums in the
    general path and fixed-size chunk partials reduced in chunk order in the
    kernels, so results are bit-identical for any number of numba threads.

    Subclasses must implement :meth:`accumulate` and :meth:`finalize`; they
    may override :meth:`on_initialize`.  Built-ins also override the private
    ``_evaluate_linear`` with a fused kernel.
    """

    #: True when a constant fixed or moving image makes the metric undefined
    #: (raises :class:`~regframe.errors.ConstantImageError` in ``initialize``).
    requires_variation: ClassVar[bool] = False

    def __init__(self, *, gradient: GradientMode = "exact", min_overlap: float = 0.01) -> None:
        where = f"{type(self).__name__}()"
        self.gradient = check_choice(gradient, _GRADIENT_MODES, where=where, name="gradient")
        try:
            mo = float(min_overlap)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{where}: 'min_overlap' must be a number in [0, 1]; got {min_overlap!r}."
            ) from exc
        if not (0.0 <= mo <= 1.0):
            raise InvalidInputError(f"{where}: 'min_overlap' must be in [0, 1]; got {min_overlap!r}.")
        self.min_overlap = mo
        self._state: _State | None = None
        self._n_valid = 0
        self._method = "value"
        #: Use the fused linear-transform kernels when possible (tests switch it off
        #: to compare with the general path).
        self._fused = True

    # ------------------------------------------------------------------ setup
    def initialize(
        self,
        fixed: Image,
        moving: Image,
        transform: Transform,
        *,
        interpolator: str | Interpolator = "linear",
        sampler: Sampler | None = None,
        fixed_mask: Image | NDArray[Any] | None = None,
        moving_mask: Image | NDArray[Any] | None = None,
    ) -> ImageMetric:
        """Prepare the metric for evaluations.

        Parameters
        ----------
        fixed, moving : Image
            Fixed and moving images (same dimension as the transform).
        transform : Transform
            Maps fixed-space points to moving space.  The metric keeps a
            reference and is evaluated at its *current* parameters.
        interpolator : {"linear", "bspline", "nearest"} or Interpolator, default "linear"
            Moving-image interpolator (an instance is copied, never modified).
            The fixed values at jittered points always use linear
            interpolation (ITK's default fixed interpolator).
        sampler : Sampler, optional
            Default :class:`~regframe.metrics.FullSampler` (every voxel).
        fixed_mask, moving_mask : Image or array, optional
            Non-zero = inside.  An array must have the image's shape; an
            :class:`Image` may have its own geometry (nearest-voxel lookup).

        Returns
        -------
        self

        Raises
        ------
        TypeError
            Wrong argument types.
        ShapeError
            Dimensions of images, masks and transform disagree.
        NonFiniteError
            NaN/inf in the moving image or at fixed sample points.
        EmptyMaskError
            A mask (or the sampler) leaves no sample.
        ConstantImageError
            For metrics with :attr:`requires_variation`, a constant image.
        """
        where = f"{type(self).__name__}.initialize()"
        fixed = as_image(fixed, where=where, name="fixed")
        moving = as_image(moving, where=where, name="moving")
        if not isinstance(transform, Transform):
            raise TypeError(
                f"{where}: 'transform' must be a regframe Transform; got {type(transform).__name__}."
            )
        if not (fixed.ndim == moving.ndim == transform.ndim):
            raise ShapeError(
                f"{where}: fixed image, moving image and transform must have the same dimension; "
                f"got {fixed.ndim}-D fixed, {moving.ndim}-D moving and a {transform.ndim}-D "
                f"{type(transform).__name__}."
            )
        if sampler is None:
            sampler = FullSampler()
        if not isinstance(sampler, Sampler):
            raise TypeError(
                f"{where}: 'sampler' must be a regframe.metrics Sampler (FullSampler, "
                f"RegularSampler, RandomSampler); got {type(sampler).__name__}."
            )
        interp = make_interpolator(interpolator)
        if type(interp) is LinearInterpolator:
            interp_obj: Interpolator | None = None
        else:
            interp_obj = interp.copy().set_image(moving)
        if moving.has_nonfinite():
            bad = int(np.sum(~np.isfinite(moving.array)))
            raise NonFiniteError(
                f"{where}: the moving image must be finite; got {bad} NaN/inf voxel(s). Replace "
                "them (e.g. Image.with_array(np.nan_to_num(image.array))) before registering."
            )
        fmask = MaskPack.from_mask(fixed_mask, fixed, where=where, name="fixed_mask")
        mmask = MaskPack.from_mask(moving_mask, moving, where=where, name="moving_mask")
        samples, points, fvals = self._samples(fixed, sampler, fmask, fixed_mask)
        if not np.all(np.isfinite(fvals)):
            bad = int(np.sum(~np.isfinite(fvals)))
            raise NonFiniteError(
                f"{where}: the fixed image must be finite at the sample points; got {bad} NaN/inf "
                "value(s). Exclude them with 'fixed_mask' or replace them (np.nan_to_num)."
            )
        mpack = ImagePack.from_image(moving)
        if self.requires_variation:
            self._check_variation(fvals, "fixed", "at the sample points", where)
            mvals = mpack.data if not mmask.present else mpack.data[
                mmask.contains(moving.voxel_points())
            ]
            if mvals.size == 0:
                raise InvalidInputError(
                    f"{where}: the moving mask must contain at least one moving voxel centre; got "
                    "none. Check the mask geometry against the moving image."
                )
            self._check_variation(mvals, "moving", "inside the moving mask" if mmask.present else "", where)
        self._state = _State(
            fixed=fixed,
            moving=moving,
            transform=transform,
            samples=samples,
            points=np.ascontiguousarray(points),
            fixed_values=np.ascontiguousarray(fvals, dtype=np.float64),
            moving_pack=mpack,
            moving_mask=mmask,
            fixed_mask=fmask,
            interpolator=interp_obj,
            dense=bool(samples.on_grid and points.shape[0] == fixed.n_voxels),
        )
        self._n_valid = 0
        self.on_initialize()
        return self

    def _samples(
        self, fixed: Image, sampler: Sampler, fmask: MaskPack, fixed_mask: Any
    ) -> tuple[SampleSet, NDArray[np.float64], NDArray[np.float64]]:
        """Sample set, points and fixed values; reused when the same fixed image, mask and sampler return.

        Re-initialising on the same level image (pyramid stages, rotation
        searches) draws the identical seeded samples, so they are kept (a few
        entries, keyed by object identity and the sampler's parameters).
        """
        key = (id(fixed), id(fixed_mask), repr(sampler))
        cache = getattr(self, "_sample_cache", None)
        if cache is None:
            cache = self._sample_cache = {}
        hit = cache.get(key)
        if hit is not None and hit[0] is fixed and hit[1] is fixed_mask:
            return hit[2]
        samples = sampler.sample(fixed, fmask.image if fmask.present else None)
        points = samples.points
        if samples.on_grid:
            fvals = np.ravel(fixed.array)[samples.voxels].astype(np.float64)  # (no full float64 copy)
        else:
            fpack = ImagePack.from_image(fixed)
            kmat, kvec = _index_map(fpack, np.eye(fixed.ndim), np.zeros(fixed.ndim))
            fvals, inside = _k.sample_values(points, kmat, kvec, fpack.size3, fpack.data)
            if not inside.all():  # the sampler already drops points outside; be safe
                keep = np.flatnonzero(inside)
                points, fvals = points[keep], fvals[keep]
                samples = SampleSet(points, samples.voxels[keep], False, samples.n_candidates)
        # (not flagged read-only: numba compiles a second specialisation for read-only arrays)
        if sampler.seed is not None:  # a fresh seed per call must draw fresh samples
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[key] = (fixed, fixed_mask, (samples, points, fvals))
        return samples, points, fvals

    @staticmethod
    def _check_variation(values: NDArray[np.float64], which: str, where_txt: str, where: str) -> None:
        lo, hi = float(np.min(values)), float(np.max(values))
        if not (hi - lo > np.finfo(float).eps * max(1.0, abs(hi), abs(lo))):
            raise ConstantImageError(
                f"{where}: the {which} image must vary{(' ' + where_txt) if where_txt else ''}; got "
                f"a constant intensity {lo:g}. This metric is undefined on constant images; check "
                "the image (and mask), or use MeanSquares."
            )

    def _release_buffers(self) -> None:
        """Drop per-evaluation scratch buffers (kept between evaluations for speed); built-ins override.

        :class:`~regframe.registration.RegistrationMethod` calls it when a
        level's optimisation ends, so the buffers of a finished level do not
        add to the memory of the next level's (or stage's) image pyramid.
        Evaluations afterwards allocate them again.
        """

    def on_initialize(self) -> None:
        """Hook called at the end of :meth:`initialize`; subclasses may override.

        The sample set and fixed values are available as
        :attr:`sample_points` and :attr:`fixed_values`.
        """

    # --------------------------------------------------------------- accessors
    def _require(self, method: str) -> _State:
        if self._state is None:
            raise NotInitializedError(
                f"{type(self).__name__}.{method}(): the metric is not initialised; call "
                "initialize(fixed, moving, transform) first."
            )
        return self._state

    @property
    def is_initialized(self) -> bool:
        """True after :meth:`initialize`."""
        return self._state is not None

    @property
    def transform(self) -> Transform:
        """The transform being evaluated (the object passed to :meth:`initialize`)."""
        return self._require("transform").transform

    @property
    def fixed(self) -> Image:
        """The fixed image."""
        return self._require("fixed").fixed

    @property
    def moving(self) -> Image:
        """The moving image."""
        return self._require("moving").moving

    @property
    def n_parameters(self) -> int:
        """Number of transform parameters (length of the gradient)."""
        return self.transform.n_parameters

    @property
    def virtual_domain(self) -> Image:
        """The grid on which samples are drawn: the fixed image (ITK's default virtual domain).

        Optimizers estimate parameter scales on it as ITK does (the ``2**d``
        corners for linear transforms, the central region for local-support
        ones) instead of on every sample point.
        """
        return self._require("virtual_domain").fixed

    @property
    def sample_points(self) -> NDArray[np.float64]:
        """Fixed-space sample points ``(n_samples, ndim)`` (a copy)."""
        return self._require("sample_points").points.copy()

    @property
    def fixed_values(self) -> NDArray[np.float64]:
        """Fixed intensities at the sample points (a copy)."""
        return self._require("fixed_values").fixed_values.copy()

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self._require("n_samples").points.shape[0])

    @property
    def n_valid(self) -> int:
        """Valid samples of the last evaluation (ITK's ``GetNumberOfValidPoints``)."""
        return self._n_valid

    # -------------------------------------------------------------- evaluation
    def value(self) -> float:
        """Metric value at the transform's current parameters (to be minimised).

        Raises
        ------
        NoOverlapError
            Too few samples map inside the moving image (and moving mask).
        """
        st = self._require("value")
        self._method = "value"
        if self._fused and self._linear_fast_path(st):
            return float(self._evaluate_linear(st, False)[0])
        view = self._bspline_view(st, False) if self._fused else None
        if view is not None:
            return float(self._evaluate_bspline(view, False)[0])
        return float(self._evaluate_general(st, False, "value")[0])

    def value_and_gradient(self) -> tuple[float, NDArray[np.float64]]:
        """Value and true gradient ``d value / d parameters``.

        Returns
        -------
        value : float
        gradient : (n_parameters,) ndarray of float64
            In the coordinates ``transform.update_parameters`` consumes.  ITK
            returns the negative (see :meth:`itk_derivative`).

        Raises
        ------
        NoOverlapError
            Too few samples map inside the moving image (and moving mask).
        """
        st = self._require("value_and_gradient")
        self._method = "value_and_gradient"
        if self._fused and self._linear_fast_path(st):
            value, grad = self._evaluate_linear(st, True)
        elif self._fused and (view := self._bspline_view(st, True)) is not None:
            value, grad = self._evaluate_bspline(view, True)
        else:
            value, grad = self._evaluate_general(st, True, "value_and_gradient")
        return float(value), np.asarray(grad, dtype=np.float64)

    def _linear_fast_path(self, st: _State) -> bool:
        return (
            st.interpolator is None
            and isinstance(st.transform, MatrixOffsetTransformBase)
            and type(self)._evaluate_linear is not ImageMetric._evaluate_linear
        )

    def _bspline_fast_path(self, st: _State, with_gradient: bool) -> bool:
        """Fused B-spline path: a B-spline (see :meth:`_bspline_view`), linear interpolator, exact gradient."""
        return self._bspline_view(st, with_gradient) is not None

    def _bspline_view(self, st: _State, with_gradient: bool) -> _State | None:
        """The state the fused B-spline kernels evaluate, or None when they do not apply.

        ``st`` itself for exactly a :class:`BSplineTransform`.  For a
        :class:`CompositeTransform` whose only optimised member is a B-spline
        applied first (the last added, ITK's order) and whose other members
        are linear, ``T(x) = A B(x) + o`` (a B-spline stage on a linear
        initial transform): a state with the B-spline as the transform and
        ``A, o`` folded into the moving image's (and moving mask's)
        physical-to-index map, ``p2i' = p2i A``, ``origin' = A^-1 (origin -
        o)``.  The kernels' index ``p2i' (y - origin') = p2i (A y + o -
        origin)`` and physical gradient ``p2i'^T g = A^T grad m`` are then
        those of the composite (the chain rule), and its parameters are the
        B-spline's, so value and gradient are unchanged.
        """
        if not (st.interpolator is None and (not with_gradient or self.gradient == "exact")
                and type(self)._evaluate_bspline is not ImageMetric._evaluate_bspline):
            return None
        return bspline_state(st)

    def _mode(self, with_gradient: bool) -> int:
        return _MODE_CODE[self.gradient] if with_gradient else 0

    def _physical(self, st: _State) -> bool:
        """Kernels take the physical path (else the index-space fast path, which also tests a moving mask)."""
        return self.gradient == "central_difference"

    def _path(self, st: _State) -> bool | None:
        """The kernels' ``physical`` argument: True, or None for the fast path.

        None (not False) lets numba compile only the path a call takes (see
        :mod:`regframe.metrics._sample_kernels`).
        """
        return True if self._physical(st) else None

    def _sample_moving(
        self, st: _State, mapped: NDArray[np.float64], with_gradient: bool
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """Moving values, gradients and validity at already-mapped points."""
        d = mapped.shape[1]
        eye, zero = np.eye(d), np.zeros(d)
        kmat, kvec = _index_map(st.moving_pack, eye, zero)
        if st.interpolator is None:
            return _k.sample_moving(
                mapped, kmat, kvec, st.moving_pack.size3, eye, zero, *st.moving_pack.args(),
                *st.moving_mask.args(), self._path(st), self._mode(with_gradient), CHUNK_SIZE,
            )
        interp = st.interpolator
        if with_gradient and self.gradient == "exact":
            values, grads, inside = interp._evaluate_with_gradient(mapped)
        else:
            values, inside = interp._evaluate(mapped)
            grads = np.zeros_like(mapped)
            if with_gradient:  # ITK central differences on the linear interpolant
                none = MaskPack.none(d)
                _, grads, _ = _k.sample_moving(
                    mapped, kmat, kvec, st.moving_pack.size3, eye, zero, *st.moving_pack.args(),
                    *none.args(), True, 2, CHUNK_SIZE,
                )
        valid = inside & st.moving_mask.contains(mapped)
        return values, grads, valid

    def _check_overlap(self, n_valid: int, n_samples: int, method: str | None = None) -> None:
        """Record ``n_valid``; raise :class:`NoOverlapError` when below ``min_overlap``."""
        method = method or self._method
        self._n_valid = int(n_valid)
        need = max(1, int(math.ceil(self.min_overlap * n_samples)))
        if n_valid < need:
            frac = n_valid / n_samples if n_samples else 0.0
            st = self._state
            masked = " and the moving mask" if st is not None and st.moving_mask.present else ""
            raise NoOverlapError(
                f"{type(self).__name__}.{method}(): too few samples map inside the moving image"
                f"{masked}: expected at least {need} of {n_samples} ({self.min_overlap:.1%}); got "
                f"{n_valid} ({frac:.2%} overlap). The transform moves the fixed image (almost) out "
                "of the moving image: start from a better initial transform (e.g. a centred or "
                "moments initializer), or lower 'min_overlap'.",
                n_valid=int(n_valid),
                n_samples=int(n_samples),
            )

    def _evaluate_general(
        self, st: _State, with_gradient: bool, method: str
    ) -> tuple[float, NDArray[np.float64] | None]:
        transform = st.transform
        points = st.points
        mapped = transform._transform_points(points)
        values, grads, valid = self._sample_moving(st, mapped, with_gradient)
        idx = np.flatnonzero(valid)
        n = points.shape[0]
        self._check_overlap(idx.size, n, method)
        all_valid = idx.size == n
        batch = SampleBatch(
            fixed_values=st.fixed_values if all_valid else st.fixed_values[idx],
            moving_values=values if all_valid else values[idx],
            indices=idx,
            n_samples=n,
        )
        stats = self.accumulate(batch)
        value, weights = self.finalize(stats, batch, with_gradient=with_gradient)
        if not with_gradient:
            return float(value), None
        if weights is None:
            raise InvalidInputError(
                f"{type(self).__name__}.finalize(): must return per-sample weights when "
                "with_gradient is True; got None."
            )
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (idx.size,):
            raise ShapeError(
                f"{type(self).__name__}.finalize(): weights must have one value per valid sample "
                f"({idx.size},); got shape {weights.shape}."
            )
        if all_valid:
            vec = grads * weights[:, None]
            pts = points
        else:
            vec = grads[idx] * weights[:, None]
            pts = points[idx]
        if pts.shape[0] == 0:
            return float(value), np.zeros(transform.n_parameters)
        grad = transform._jacobian_vjp(np.ascontiguousarray(pts), np.ascontiguousarray(vec))
        return float(value), np.asarray(grad, dtype=np.float64)

    def _evaluate_linear(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        """Fused path for linear transforms and the linear interpolator (built-ins override)."""
        raise NotImplementedError  # pragma: no cover - guarded by _linear_fast_path

    def _evaluate_bspline(self, st: _State, with_gradient: bool) -> tuple[float, NDArray[np.float64] | None]:
        """Fused path for a BSplineTransform and the linear interpolator (built-ins override)."""
        raise NotImplementedError  # pragma: no cover - guarded by _bspline_fast_path


    # ------------------------------------------------------------- subclass API
    @abstractmethod
    def accumulate(self, batch: SampleBatch) -> Any:
        """Sufficient statistics of the valid samples.

        Subclasses must implement.  Called once per evaluation with all valid
        samples; the result is passed to :meth:`finalize` unchanged.  Must be
        deterministic (numpy reductions are).
        """
        raise NotImplementedError(f"{type(self).__name__}.accumulate()")

    @abstractmethod
    def finalize(
        self, stats: Any, batch: SampleBatch, *, with_gradient: bool
    ) -> tuple[float, NDArray[np.float64] | None]:
        """Value and per-sample weights from the statistics.

        Subclasses must implement.  Returns ``(value, weights)`` where
        ``weights[i] = d value / d batch.moving_values[i]`` (shape
        ``(batch.n_valid,)``) when ``with_gradient`` is True, else ``None`` may
        be returned for the weights.
        """
        raise NotImplementedError(f"{type(self).__name__}.finalize()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gradient={self.gradient!r})"


class PointwiseMetric(ImageMetric):
    """Mean of a per-sample cost: ``value = (1/N) sum_s c(f_s, m_s)`` over valid samples.

    The easiest extension: implement :meth:`pointwise_value` and
    :meth:`pointwise_derivative` (vectorised numpy); sampling, masks,
    interpolation, the chain rule and the checkers come from the engine.

    Parameters
    ----------
    gradient : {"exact", "central_difference"}, default "exact"
    min_overlap : float, default 0.01
        See :class:`ImageMetric`.
    """

    @abstractmethod
    def pointwise_value(
        self, fixed_values: NDArray[np.float64], moving_values: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Per-sample cost ``c(f, m)``, shape ``(n,)``.  Subclasses must implement."""
        raise NotImplementedError(f"{type(self).__name__}.pointwise_value()")

    @abstractmethod
    def pointwise_derivative(
        self, fixed_values: NDArray[np.float64], moving_values: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """``d c(f, m) / d m`` per sample, shape ``(n,)``.  Subclasses must implement."""
        raise NotImplementedError(f"{type(self).__name__}.pointwise_derivative()")

    def accumulate(self, batch: SampleBatch) -> float:
        cost = np.asarray(self.pointwise_value(batch.fixed_values, batch.moving_values), dtype=np.float64)
        return float(np.sum(cost))

    def finalize(
        self, stats: float, batch: SampleBatch, *, with_gradient: bool
    ) -> tuple[float, NDArray[np.float64] | None]:
        n = batch.n_valid
        value = stats / n
        if not with_gradient:
            return value, None
        deriv = np.asarray(
            self.pointwise_derivative(batch.fixed_values, batch.moving_values), dtype=np.float64
        )
        return value, deriv / n
