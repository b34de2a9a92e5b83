"""Parameter-scales estimators (ITK's ``RegistrationParameterScalesFrom*``).

Scales ``s`` make parameters of different units (radians, millimetres, matrix
entries) commensurable: optimizers divide the gradient by ``s``.  Every
estimator works on any transform through its public contract only -
``update_parameters`` (shift estimators) or ``jacobian`` (Jacobian
estimator) on a *copy* of the transform, plus the class flags ``is_linear``
and ``has_local_support`` - with no special case for concrete classes.

Sample points (ITK's sampling strategies, in this order):

1. the ``points`` given to the estimator's constructor (ITK's virtual-domain
   point set), or a ``domain`` given as an ``(n, ndim)`` array of points;
2. local-support transforms (B-splines, displacement fields): for
   :meth:`~ScalesEstimator.estimate` the *central region* of the virtual
   domain (voxels within ``central_region_radius`` = 5 of the central index
   ``(size - 1) // 2``, clipped to the grid); for step scales the full
   virtual domain (every voxel centre, regularly thinned to at most
   ``max_step_points`` points - ITK always uses every voxel);
3. linear transforms: the ``2**ndim`` corner voxel centres of the domain;
4. otherwise ``n_random_samples`` (1000) voxel centres drawn with
   ``numpy.random.default_rng(seed)`` (reproducible, unlike ITK).

The domain is a :class:`regframe.Image` (only its geometry is used:
``size``, ``spacing``, ``origin``, ``direction``) or an ``(n, ndim)`` array of
physical points.
"""

from __future__ import annotations

import itertools
import math
import warnings
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_float_vector, check_positive_int
from ..errors import InvalidInputError, RegframeWarning, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from ..transforms.base import Transform

__all__ = [
    "ScalesEstimator",
    "PhysicalShiftScales",
    "IndexShiftScales",
    "JacobianScales",
    "domain_sample_points",
]

#: Dense Jacobian blocks hold at most this many float64 entries.
_JACOBIAN_BLOCK_ENTRIES = 1 << 22

#: Shifts below this times ``max(1, max |T(x)|)`` are rounding noise and count as zero
#: (64 units in the last place of the mapped coordinates).
_ROUNDING_SHIFT = 64.0 * float(np.finfo(np.float64).eps)


def _geometry(domain: Any, where: str) -> tuple[tuple[int, ...], NDArray[np.float64], NDArray[np.float64]]:
    """``(size, index_to_physical matrix, origin)`` of an Image-like domain."""
    try:
        size = tuple(int(n) for n in domain.size)
        spacing = np.asarray(domain.spacing, dtype=np.float64).reshape(-1)
        origin = np.asarray(domain.origin, dtype=np.float64).reshape(-1)
        ndim = len(size)
        direction = np.asarray(domain.direction, dtype=np.float64).reshape(ndim, ndim)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{where}: 'domain' must be an image (with size, spacing, origin and direction) or an "
            f"(n, ndim) array of physical points; got {type(domain).__name__}."
        ) from exc
    return size, direction @ np.diag(spacing), origin


def _is_points(domain: Any) -> bool:
    return isinstance(domain, (np.ndarray, list, tuple))


def domain_sample_points(
    domain: Any,
    kind: str,
    *,
    central_region_radius: int = 5,
    n_random_samples: int = 1000,
    max_points: int = 1 << 17,
    seed: int = 0,
) -> NDArray[np.float64]:
    """Physical sample points of an image domain, following ITK's strategies.

    Parameters
    ----------
    domain : Image
        The virtual domain (only its geometry is used).
    kind : {'corners', 'central_region', 'full', 'random'}
        ``corners``: the ``2**ndim`` corner voxel centres (indices ``0`` and
        ``size - 1``); ``central_region``: voxels within
        ``central_region_radius`` of the central index ``(size - 1) // 2``;
        ``full``: every voxel centre, thinned with a uniform integer stride per
        axis so that at most ``max_points`` remain; ``random``:
        ``n_random_samples`` voxel centres drawn with
        ``numpy.random.default_rng(seed)``.

    Returns
    -------
    (n, ndim) ndarray of float64
    """
    where = "domain_sample_points()"
    size, i2p, origin = _geometry(domain, where)
    ndim = len(size)
    if kind == "corners":
        idx = np.array(list(itertools.product(*[(0, n - 1) for n in size])), dtype=np.float64)
    elif kind == "central_region":
        axes = []
        for n in size:
            c = (n - 1) // 2
            axes.append(np.arange(max(c - central_region_radius, 0), min(c + central_region_radius, n - 1) + 1))
        idx = np.array(list(itertools.product(*axes)), dtype=np.float64)
    elif kind == "full":
        total = math.prod(size)
        stride = 1
        while total > max_points:
            stride += 1
            total = math.prod(len(range(0, n, stride)) for n in size)
        axes = [np.arange(0, n, stride) for n in size]
        idx = np.array(list(itertools.product(*axes)), dtype=np.float64)
    elif kind == "random":
        rng = np.random.default_rng(seed)
        idx = np.stack([rng.integers(0, n, size=n_random_samples) for n in size], axis=1).astype(np.float64)
    else:
        raise InvalidInputError(
            f"{where}: 'kind' must be one of 'corners', 'central_region', 'full', 'random'; got {kind!r}."
        )
    idx = idx.reshape(-1, ndim)
    return np.ascontiguousarray(idx @ i2p.T + origin)


class ScalesEstimator(ABC):
    """Base of the parameter-scales estimators.

    Parameters
    ----------
    points : (n, ndim) array_like, optional
        Sample points to use instead of the domain-derived ones (ITK's
        virtual-domain point set).
    central_region_radius : int, default 5
        Half-width in voxels of the central region used for local-support
        transforms.
    n_random_samples : int, default 1000
        Samples for transforms that are neither linear nor local-support.
    max_step_points : int, default 131072
        Cap on the full-domain points used for local-support step scales.
    seed : int, default 0
        Seed of the random sampling.

    Notes
    -----
    Subclasses implement :meth:`_scales_from_points` and
    :meth:`_step_scale_from_points`.  The transform passed in is never
    modified (work is done on a copy).
    """

    def __init__(
        self,
        *,
        points: ArrayLike | None = None,
        central_region_radius: int = 5,
        n_random_samples: int = 1000,
        max_step_points: int = 1 << 17,
        seed: int = 0,
    ) -> None:
        where = f"{type(self).__name__}()"
        if points is not None:
            arr = np.array(points, dtype=np.float64, copy=True)
            if arr.ndim != 2 or arr.shape[0] == 0 or not np.all(np.isfinite(arr)):
                raise ShapeError(
                    f"{where}: 'points' must be a non-empty, finite (n, ndim) array of physical "
                    f"points; got shape {arr.shape}."
                )
            points = np.ascontiguousarray(arr)
        self._points = points
        self.central_region_radius = check_positive_int(
            central_region_radius, where=where, name="central_region_radius", minimum=0
        )
        self.n_random_samples = check_positive_int(n_random_samples, where=where, name="n_random_samples")
        self.max_step_points = check_positive_int(max_step_points, where=where, name="max_step_points")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InvalidInputError(f"{where}: 'seed' must be an integer; got {seed!r}.")
        self.seed = int(seed)

    @property
    def points(self) -> NDArray[np.float64] | None:
        """User sample points (a copy) or None."""
        return None if self._points is None else self._points.copy()

    # ------------------------------------------------------------- public
    def sample_points(self, transform: Transform, domain: Any, *, purpose: str = "scales") -> NDArray[np.float64]:
        """The points used for ``purpose`` ('scales' or 'step'); see the module notes."""
        where = f"{type(self).__name__}.sample_points()"
        if self._points is not None:
            pts = self._points
        elif domain is None:
            raise InvalidInputError(
                f"{where}: a virtual domain is needed to choose sample points; got None. Pass the "
                "fixed image (or a point set) as 'domain', give the cost a 'virtual_domain', or "
                "construct the estimator with points=..."
            )
        elif _is_points(domain):
            pts = np.ascontiguousarray(np.asarray(domain, dtype=np.float64))
        elif transform.has_local_support:
            kind = "central_region" if purpose == "scales" else "full"
            pts = domain_sample_points(
                domain,
                kind,
                central_region_radius=self.central_region_radius,
                max_points=self.max_step_points,
            )
        elif transform.is_linear:
            pts = domain_sample_points(domain, "corners")
        else:
            pts = domain_sample_points(domain, "random", n_random_samples=self.n_random_samples, seed=self.seed)
        if pts.ndim != 2 or pts.shape[1] != transform.ndim:
            raise ShapeError(
                f"{where}: sample points must be (n, {transform.ndim}) to match the transform; got "
                f"shape {pts.shape}."
            )
        return pts

    def estimate(self, transform: Transform, domain: Any = None) -> NDArray[np.float64]:
        """Estimate one scale per parameter.

        Parameters
        ----------
        transform : Transform
            Transform at its current parameters (not modified).
        domain : Image or (n, ndim) array_like, optional
            Virtual domain (needed unless the estimator was given ``points``).

        Returns
        -------
        (n_parameters,) ndarray of float64
            Positive scales.
        """
        points = self.sample_points(transform, domain, purpose="scales")
        return self._scales_from_points(transform, points, domain)

    def estimate_step_scale(self, transform: Transform, step: ArrayLike, domain: Any = None) -> float:
        """Typical physical displacement caused by a parameter ``step``.

        Used for learning-rate estimation: ``learning_rate =
        maximum_step_size / estimate_step_scale(transform, direction)``.
        """
        arr = as_float_vector(step, transform.n_parameters, where=f"{type(self).__name__}.estimate_step_scale",
                              name="step")
        points = self.sample_points(transform, domain, purpose="step")
        return float(self._step_scale_from_points(transform, arr, points, domain))

    def estimate_maximum_step_size(self, domain: Any = None) -> float:
        """Default maximum physical step: the minimum spacing of the domain.

        For a point-set domain (no spacing), 1 % of the largest extent of its
        bounding box (1.0 if the points coincide).
        """
        if domain is None or _is_points(domain):
            pts = self._points if domain is None else np.asarray(domain, dtype=np.float64)
            if pts is None:
                raise InvalidInputError(
                    f"{type(self).__name__}.estimate_maximum_step_size(): 'domain' must be an image "
                    "or a point set; got None."
                )
            extent = float(np.max(np.ptp(pts, axis=0))) if len(pts) else 0.0
            return 0.01 * extent if extent > 0.0 else 1.0
        spacing = np.asarray(domain.spacing, dtype=np.float64)
        return float(np.min(spacing))

    # -------------------------------------------------------------- hooks
    @abstractmethod
    def _scales_from_points(self, transform: Transform, points: NDArray[np.float64], domain: Any) -> NDArray[np.float64]:
        """Subclasses must implement: the scales from validated sample points."""
        raise NotImplementedError(f"{type(self).__name__}._scales_from_points()")

    @abstractmethod
    def _step_scale_from_points(
        self, transform: Transform, step: NDArray[np.float64], points: NDArray[np.float64], domain: Any
    ) -> float:
        """Subclasses must implement: the step scale from validated sample points."""
        raise NotImplementedError(f"{type(self).__name__}._step_scale_from_points()")


def _supporting_parameters(transform: Transform, points: NDArray[np.float64]) -> NDArray[np.int64]:
    """Indices of parameters whose Jacobian is non-zero at some of ``points``.

    Uses ``jacobian_vjp`` with random positive weights per point (seeded), so
    signed Jacobian entries cannot cancel except on a set of measure zero.
    """
    weights = np.random.default_rng(0).uniform(0.5, 1.5, size=points.shape[0])
    mask = np.zeros(transform.n_parameters, dtype=bool)
    for d in range(transform.ndim):
        vectors = np.zeros((points.shape[0], transform.ndim))
        vectors[:, d] = weights
        mask |= transform.jacobian_vjp(points, vectors) != 0.0
    return np.flatnonzero(mask)


class _ShiftScales(ScalesEstimator):
    """Shared machinery of the shift estimators (``delta`` perturbations)."""

    def __init__(self, *, delta: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
            raise InvalidInputError(f"{type(self).__name__}(): 'delta' must be a finite number > 0; got {delta!r}.")
        self.delta = float(delta)

    @abstractmethod
    def _distances(self, displacements: NDArray[np.float64], domain: Any) -> NDArray[np.float64]:
        """Length of each displacement row in the estimator's units."""

    def _max_shift(self, work: Transform, p0: NDArray[np.float64], y0: NDArray[np.float64],
                   points: NDArray[np.float64], step: NDArray[np.float64], domain: Any) -> float:
        work.parameters = p0
        work.update_parameters(step)
        d = self._distances(work.transform_points(points) - y0, domain)
        return float(np.max(d)) if d.size else 0.0

    def _scales_from_points(self, transform: Transform, points: NDArray[np.float64], domain: Any) -> NDArray[np.float64]:
        n_par = transform.n_parameters
        work = transform.copy()
        p0 = work.parameters
        y0 = work.transform_points(points)
        local = transform.has_local_support
        indices = _supporting_parameters(transform, points) if local else np.arange(n_par)
        shifts = np.zeros(indices.size)
        for k, i in enumerate(indices):
            step = np.zeros(n_par)
            step[i] = self.delta
            shifts[k] = self._max_shift(work, p0, y0, points, step, domain)
        # Shifts at rounding level (e.g. a matrix entry at a point on the centre) count as zero.
        shifts[shifts <= _ROUNDING_SHIFT * max(1.0, float(np.max(np.abs(y0))))] = 0.0
        nonzero = shifts[shifts > 0.0]
        if nonzero.size == 0:
            warnings.warn(
                f"{type(self).__name__}.estimate(): no parameter moves any sample point; using unit "
                "scales. Check the domain overlaps the transform's support.",
                RegframeWarning,
                stacklevel=3,
            )
            return np.ones(n_par)
        min_shift = float(np.min(nonzero))
        if local:
            # ITK's B-spline rule: every scale is the smallest non-zero shift
            # (neither squared nor divided by delta).
            return np.full(n_par, min_shift)
        shifts[shifts == 0.0] = min_shift
        return (shifts / self.delta) ** 2

    def _step_scale_from_points(
        self, transform: Transform, step: NDArray[np.float64], points: NDArray[np.float64], domain: Any
    ) -> float:
        work = transform.copy()
        p0 = work.parameters
        y0 = work.transform_points(points)
        if transform.has_local_support:
            return self._max_shift(work, p0, y0, points, step, domain)
        max_abs = float(np.max(np.abs(step))) if step.size else 0.0
        if max_abs == 0.0:
            return 0.0
        factor = self.delta / max_abs
        return self._max_shift(work, p0, y0, points, factor * step, domain) / factor


class PhysicalShiftScales(_ShiftScales):
    """Scales from the physical shift of sample points (ITK ``...FromPhysicalShift``).

    For each parameter ``i`` a copy of the transform is updated by
    ``update_parameters(delta * e_i)`` (``delta = 0.01``; versors are
    *composed*), and ``shift_i = max_x ||T'(x) - T(x)||`` over the sample
    points.  Then ``s_i = (shift_i / delta)**2``; zero shifts are replaced by
    the smallest non-zero one (shifts at rounding level, below ``64 eps max(1,
    max|T(x)|)``, count as zero).  Local-support transforms perturb only the
    parameters whose Jacobian is non-zero somewhere in the central region and
    all scales equal the smallest non-zero shift (ITK's B-spline rule: not
    squared, not divided by ``delta``; ITK perturbs only the central voxel of
    a displacement field and gives it ``(shift / delta)**2`` scales - uniform
    too, so with learning-rate estimation the steps are the same).  If no
    parameter moves any point, all scales are 1 (with a
    :class:`~regframe.errors.RegframeWarning`).

    The step scale of a step ``u`` is ``max_x ||T_{f u}(x) - T(x)|| / f`` with
    ``f = delta / max|u|`` (local support: the shift of ``u`` itself), and the
    maximum step size is the minimum spacing of the domain.

    Parameters
    ----------
    delta : float, default 0.01
        Perturbation size.
    **kwargs
        See :class:`ScalesEstimator`.
    """

    def _distances(self, displacements: NDArray[np.float64], domain: Any) -> NDArray[np.float64]:
        return np.sqrt(np.sum(displacements * displacements, axis=1))


class IndexShiftScales(_ShiftScales):
    """Scales from shifts measured in continuous-index units (ITK ``...FromIndexShift``).

    As :class:`PhysicalShiftScales`, but the displacement of each sample is
    converted to continuous-index units of the ``moving`` image grid
    (``(direction @ diag(spacing))^-1 (T'(x) - T(x))``) before taking its
    length.  Without ``moving`` the virtual domain's grid is used (identical
    to ITK when fixed and moving images share their geometry).

    Parameters
    ----------
    moving : Image, optional
        Grid whose index units measure the shifts.
    delta : float, default 0.01
    **kwargs
        See :class:`ScalesEstimator`.
    """

    def __init__(self, *, moving: Any = None, delta: float = 0.01, **kwargs: Any) -> None:
        super().__init__(delta=delta, **kwargs)
        self.moving = moving

    def _distances(self, displacements: NDArray[np.float64], domain: Any) -> NDArray[np.float64]:
        grid = self.moving if self.moving is not None else domain
        if grid is None or _is_points(grid):
            raise InvalidInputError(
                "IndexShiftScales: index shifts need an image grid; got no 'moving' image and a "
                "point-set (or no) domain. Pass IndexShiftScales(moving=<image>)."
            )
        _, i2p, _ = _geometry(grid, "IndexShiftScales")
        idx = displacements @ np.linalg.inv(i2p).T
        return np.sqrt(np.sum(idx * idx, axis=1))


class JacobianScales(ScalesEstimator):
    """Scales from the parameter Jacobian (ITK ``...FromJacobian``).

    ``s_i = mean_x ||J(x)[:, i]||^2`` over the sample points (zeros replaced
    by the smallest non-zero value; local-support transforms get that
    smallest non-zero value for every parameter), and the step scale of a
    step ``u`` is ``mean_x ||J(x) u||`` (a mean, where the shift estimators
    take a maximum).  Dense Jacobians are formed in blocks of at most
    ``2**22`` entries, which is costly for transforms with many parameters;
    prefer :class:`PhysicalShiftScales` for them.
    """

    def _blocks(self, transform: Transform, points: NDArray[np.float64]):
        per_point = max(1, transform.ndim * transform.n_parameters)
        block = max(1, _JACOBIAN_BLOCK_ENTRIES // per_point)
        for start in range(0, points.shape[0], block):
            yield transform.jacobian(points[start : start + block])

    def _scales_from_points(self, transform: Transform, points: NDArray[np.float64], domain: Any) -> NDArray[np.float64]:
        n_par = transform.n_parameters
        total = np.zeros(n_par)
        for jac in self._blocks(transform, points):
            total += np.sum(np.sum(jac * jac, axis=1), axis=0)
        scales = total / points.shape[0]
        nonzero = scales[scales > 0.0]
        if nonzero.size == 0:
            warnings.warn(
                "JacobianScales.estimate(): the Jacobian is zero at every sample point; using unit scales.",
                RegframeWarning,
                stacklevel=3,
            )
            return np.ones(n_par)
        if transform.has_local_support:
            return np.full(n_par, float(np.min(nonzero)))
        scales[scales == 0.0] = float(np.min(nonzero))
        return scales

    def _step_scale_from_points(
        self, transform: Transform, step: NDArray[np.float64], points: NDArray[np.float64], domain: Any
    ) -> float:
        total = 0.0
        for jac in self._blocks(transform, points):
            moved = jac @ step
            total += float(np.sum(np.sqrt(np.sum(moved * moved, axis=1))))
        return total / points.shape[0]
