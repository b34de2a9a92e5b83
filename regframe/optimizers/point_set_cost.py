"""Mean squared distance between mapped fixed points and moving points (a test cost)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_points
from ..errors import ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from ..transforms.base import Transform

__all__ = ["PointSetDistanceCost"]


class PointSetDistanceCost:
    """``C(p) = mean_i ||T_p(x_i) - y_i||^2`` for paired points.

    Follows :class:`~regframe.optimizers.base.CostFunction`; its exact optimum
    is known (least squares), which makes it the reference cost for testing
    optimizers.  The gradient is ``(2/n) sum_i J(x_i)^T (T(x_i) - y_i)``,
    computed by ``transform.jacobian_vjp`` (in update coordinates).

    Parameters
    ----------
    transform : Transform
        Transform mapping fixed points to moving points; it is *not* copied
        (optimizers change it in place).
    fixed_points, moving_points : (n, ndim) array_like
        Paired points ``x_i`` and ``y_i`` (copied).
    virtual_domain : Image, optional
        Grid used by scales estimators and learning-rate estimation.  Without
        it the fixed points serve as the sample points
        (:attr:`sample_points`).
    """

    def __init__(
        self,
        transform: Transform,
        fixed_points: ArrayLike,
        moving_points: ArrayLike,
        *,
        virtual_domain: Any = None,
    ) -> None:
        where = "PointSetDistanceCost()"
        ndim = transform.ndim
        fixed = np.array(as_points(fixed_points, ndim, where=where, name="fixed_points"), copy=True)
        moving = np.array(as_points(moving_points, ndim, where=where, name="moving_points"), copy=True)
        if fixed.shape != moving.shape or fixed.shape[0] == 0:
            raise ShapeError(
                f"{where}: 'fixed_points' and 'moving_points' must be paired non-empty (n, {ndim}) arrays; got "
                f"shapes {fixed.shape} and {moving.shape}."
            )
        self.transform = transform
        self._fixed = fixed
        self._moving = moving
        self.virtual_domain = virtual_domain

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
        """Sample points for scales estimation: the fixed points (a copy)."""
        return self._fixed.copy()

    def residuals(self) -> NDArray[np.float64]:
        """``T(x_i) - y_i`` at the current parameters, ``(n, ndim)``."""
        return self.transform.transform_points(self._fixed) - self._moving

    def value(self) -> float:
        """Mean squared distance at the current parameters."""
        r = self.residuals()
        return float(np.sum(r * r) / r.shape[0])

    def value_and_gradient(self) -> tuple[float, NDArray[np.float64]]:
        """Value and true gradient ``d value / d parameters``."""
        r = self.residuals()
        n = r.shape[0]
        value = float(np.sum(r * r) / n)
        grad = self.transform.jacobian_vjp(self._fixed, r) * (2.0 / n)
        return value, grad
