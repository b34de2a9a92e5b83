"""Point-set metrics: paired landmarks and closest points, for any transform.

Both follow the :class:`~regframe.metrics.Metric` contract, so they run in
:class:`~regframe.registration.RegistrationMethod` with any optimizer and any
transform (linear, B-spline, composite): the value is a mean squared distance
in physical units (mm^2), minimised, and the gradient is the true gradient

``d value / d p = (2 / n) sum_i J(x_i)^T (T(x_i) - y_i)``

computed by ``transform.jacobian_vjp`` (never a dense Jacobian), where
``y_i`` is the paired moving landmark (:class:`LandmarkDistance`) or the
closest moving point of ``T(x_i)`` (:class:`ClosestPointDistance`).
The images given to :meth:`PointSetMetric.initialize` are not sampled; the
fixed image only serves as the virtual domain for parameter scales.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from .._validation import as_points
from ..errors import NotInitializedError, ShapeError
from ..image import Image
from ..interpolators import Interpolator
from ..transforms.base import Transform
from .base import Metric
from .sampling import Sampler

__all__ = ["PointSetMetric", "LandmarkDistance", "ClosestPointDistance"]


def _as_cloud(points: ArrayLike, where: str, name: str) -> NDArray[np.float64]:
    arr = np.asarray(points, dtype=np.float64)
    ndim = arr.shape[1] if arr.ndim == 2 else -1
    if ndim not in (2, 3) or arr.shape[0] == 0:
        raise ShapeError(
            f"{where}: '{name}' must be a non-empty (n, 2) or (n, 3) array of physical points; got "
            f"shape {arr.shape}."
        )
    return np.array(as_points(arr, ndim, where=where, name=name), copy=True)


class PointSetMetric(Metric):
    """Mean squared distance between mapped fixed points and moving targets (template).

    Subclasses implement :meth:`targets`: the moving point each mapped fixed
    point is compared with.  The points are copied at construction and never
    modified.
    """

    def __init__(self, fixed_points: ArrayLike, moving_points: ArrayLike) -> None:
        where = f"{type(self).__name__}()"
        self._fixed = _as_cloud(fixed_points, where, "fixed_points")
        self._moving = _as_cloud(moving_points, where, "moving_points")
        if self._fixed.shape[1] != self._moving.shape[1]:
            raise ShapeError(
                f"{where}: fixed and moving points must have the same dimension; got "
                f"{self._fixed.shape[1]}-D and {self._moving.shape[1]}-D."
            )
        self._transform: Transform | None = None
        self._domain: Image | None = None

    def initialize(
        self,
        fixed: Image | None,
        moving: Image | None,
        transform: Transform,
        *,
        interpolator: str | Interpolator = "linear",
        sampler: Sampler | None = None,
        fixed_mask: Image | NDArray[Any] | None = None,
        moving_mask: Image | NDArray[Any] | None = None,
    ) -> PointSetMetric:
        """Bind the transform (images, interpolator, sampler and masks are not used).

        ``fixed`` (optional) becomes :attr:`virtual_domain`, the grid on which
        optimizers estimate parameter scales.

        Raises
        ------
        TypeError
            ``transform`` is not a regframe Transform.
        ShapeError
            The points' dimension differs from the transform's.
        """
        where = f"{type(self).__name__}.initialize()"
        if not isinstance(transform, Transform):
            raise TypeError(f"{where}: 'transform' must be a regframe Transform; got {type(transform).__name__}.")
        if transform.ndim != self.ndim:
            raise ShapeError(
                f"{where}: the points are {self.ndim}-D but the transform is {transform.ndim}-D; use a "
                f"{self.ndim}-D transform."
            )
        self._transform = transform
        self._domain = fixed if isinstance(fixed, Image) else None
        return self

    # ---------------------------------------------------------------- accessors
    @property
    def ndim(self) -> int:
        """Dimension of the points."""
        return int(self._fixed.shape[1])

    @property
    def transform(self) -> Transform:
        """The transform being evaluated."""
        if self._transform is None:
            raise NotInitializedError(
                f"{type(self).__name__}: not initialised; call initialize(fixed, moving, transform) first."
            )
        return self._transform

    @property
    def fixed_points(self) -> NDArray[np.float64]:
        """The fixed points (a copy)."""
        return self._fixed.copy()

    @property
    def moving_points(self) -> NDArray[np.float64]:
        """The moving points (a copy)."""
        return self._moving.copy()

    @property
    def sample_points(self) -> NDArray[np.float64]:
        """The fixed points (where the transform is evaluated), a copy."""
        return self._fixed.copy()

    @property
    def n_samples(self) -> int:
        """Number of fixed points."""
        return int(self._fixed.shape[0])

    @property
    def virtual_domain(self) -> Image | None:
        """The fixed image given to :meth:`initialize` (None without one)."""
        return self._domain

    # --------------------------------------------------------------- evaluation
    @abstractmethod
    def targets(self, mapped: NDArray[np.float64]) -> NDArray[np.float64]:
        """Moving point compared with each mapped fixed point, ``(n, ndim)``."""

    def residuals(self) -> NDArray[np.float64]:
        """``T(x_i) - y_i`` at the transform's current parameters, ``(n, ndim)``."""
        mapped = self.transform.transform_points(self._fixed)
        return mapped - self.targets(mapped)

    def value(self) -> float:
        """Mean squared distance (physical units squared)."""
        r = self.residuals()
        return float(np.einsum("ni,ni->", r, r) / r.shape[0])

    def value_and_gradient(self) -> tuple[float, NDArray[np.float64]]:
        """Value and true gradient ``(2/n) sum_i J(x_i)^T (T(x_i) - y_i)``."""
        r = self.residuals()
        n = r.shape[0]
        grad = self.transform.jacobian_vjp(self._fixed, r) * (2.0 / n)
        return float(np.einsum("ni,ni->", r, r) / n), np.asarray(grad, dtype=np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fixed.shape[0]} fixed, {self._moving.shape[0]} moving points)"


class LandmarkDistance(PointSetMetric):
    """Paired landmarks: ``value = (1/n) sum_i ||T(x_i) - y_i||^2``.

    Parameters
    ----------
    fixed_points, moving_points : (n, ndim) array_like
        Corresponding physical points (``fixed_points[i]`` pairs with
        ``moving_points[i]``), e.g. ground control points.

    Notes
    -----
    Alone, its minimum over a linear transform is the least-squares landmark
    fit (:func:`~regframe.registration.initializers.affine_from_points` for
    an affine transform).  With an image metric, combine it in a
    :class:`~regframe.metrics.CombinedMetric` (see
    :func:`~regframe.metrics.combined.landmark_objective`).
    """

    def __init__(self, fixed_points: ArrayLike, moving_points: ArrayLike) -> None:
        super().__init__(fixed_points, moving_points)
        if self._fixed.shape != self._moving.shape:
            raise ShapeError(
                f"LandmarkDistance(): fixed and moving landmarks must pair up; got {self._fixed.shape[0]} "
                f"and {self._moving.shape[0]} points."
            )

    def targets(self, mapped: NDArray[np.float64]) -> NDArray[np.float64]:
        return self._moving


class ClosestPointDistance(PointSetMetric):
    """Closest points: ``value = (1/n) sum_i min_j ||T(x_i) - y_j||^2``.

    The k-d tree of the moving points is built once (scipy's ``cKDTree``).
    The value is continuous and piecewise smooth in the parameters; the
    gradient is exact wherever the closest point does not change (almost
    everywhere).

    Parameters
    ----------
    fixed_points : (n, ndim) array_like
    moving_points : (m, ndim) array_like
        Unordered clouds of any sizes.
    workers : int, default 1
        Threads of the k-d tree queries (the result does not depend on it).
    """

    def __init__(self, fixed_points: ArrayLike, moving_points: ArrayLike, *, workers: int = 1) -> None:
        super().__init__(fixed_points, moving_points)
        self._tree = cKDTree(self._moving)
        self.workers = int(workers)

    def targets(self, mapped: NDArray[np.float64]) -> NDArray[np.float64]:
        _, idx = self._tree.query(mapped, workers=self.workers)
        return self._moving[idx]
