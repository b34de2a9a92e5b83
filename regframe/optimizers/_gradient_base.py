"""Shared pieces of the gradient-based optimizers (learning rate, best tracking)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import check_positive_int
from ..errors import RegframeWarning
from .base import (
    IterationState,
    Optimizer,
    StopReason,
    _CountingCost,
    _domain_of,
    check_learning_rate_mode,
    check_positive_float,
)
from .scales import PhysicalShiftScales, ScalesEstimator

_EPS = float(np.finfo(np.float64).eps)


class _LearningRateEstimator:
    """``learning_rate = maximum_step_size / step_scale(direction)`` (ITK 5.3)."""

    def __init__(self, estimator: ScalesEstimator | None, cost: _CountingCost, maximum_step_size: float | None,
                 where: str) -> None:
        self.estimator = estimator if estimator is not None else PhysicalShiftScales()
        self.domain = _domain_of(cost.cost)
        self.enabled = True
        if self.domain is None and self.estimator.points is None:
            warnings.warn(
                f"{where}: learning-rate estimation needs the cost's 'virtual_domain' (or "
                "'sample_points') or an estimator with points=...; got neither, so the given "
                "learning rate is used unchanged.",
                RegframeWarning,
                stacklevel=5,
            )
            self.enabled = False
            self.maximum_step_size = math.nan
            return
        # Re-estimated for every optimize() call (ITK freezes the level-0 value).
        self.maximum_step_size = (
            maximum_step_size
            if maximum_step_size is not None
            else self.estimator.estimate_maximum_step_size(self.domain)
        )

    def __call__(self, transform: Any, direction: NDArray[np.float64], fallback: float) -> float:
        if not self.enabled:
            return fallback
        step_scale = self.estimator.estimate_step_scale(transform, direction, self.domain)
        if not math.isfinite(step_scale) or step_scale <= _EPS:
            return 1.0
        return self.maximum_step_size / step_scale


class _GradientOptimizer(Optimizer):
    """Options shared by the gradient-based optimizers."""

    def __init__(
        self,
        *,
        learning_rate: float,
        n_iterations: int,
        scales: Any,
        estimate_learning_rate: str | None,
        maximum_step_size: float | None,
        return_best: bool,
    ) -> None:
        super().__init__(scales=scales)
        where = f"{type(self).__name__}()"
        self.learning_rate = check_positive_float(learning_rate, where=where, name="learning_rate")
        self.n_iterations = check_positive_int(n_iterations, where=where, name="n_iterations", minimum=0)
        self.estimate_learning_rate = check_learning_rate_mode(estimate_learning_rate, where)
        self.maximum_step_size = check_positive_float(
            maximum_step_size, where=where, name="maximum_step_size", allow_none=True
        )
        self.return_best = bool(return_best)

    def _learning_rate_estimator(self, cost: _CountingCost) -> _LearningRateEstimator | None:
        if self.estimate_learning_rate is None:
            return None
        return _LearningRateEstimator(
            self._estimator(), cost, self.maximum_step_size, f"{type(self).__name__}.optimize()"
        )

    def _converged(self, cost: Any, recorder: Any, best: _Best, it: int, value: float, gnorm: float,
                   params: NDArray[np.float64], conv: float) -> Any:
        """Record the last state and finish with ``StopReason.CONVERGED`` (window monitor)."""
        recorder.record(IterationState(it, value, gnorm, params, math.nan, math.nan, conv))
        return _finish(cost, reason=StopReason.CONVERGED, n_iter=it + 1, value=value, best=best,
                       return_best=self.return_best,
                       message=f"convergence value {conv:.3g} <= {self.minimum_convergence_value:.3g} "
                               f"after {it + 1} iterations")


class _Best:
    """Tracks the lowest value seen and the parameters where it was evaluated."""

    def __init__(self) -> None:
        self.value = math.inf
        self.parameters: NDArray[np.float64] | None = None

    def offer(self, value: float, parameters: NDArray[np.float64]) -> None:
        if value < self.value:
            self.value = value
            self.parameters = parameters


def _finish(
    cost: _CountingCost,
    *,
    reason: StopReason,
    message: str,
    n_iter: int,
    value: float | None,
    best: _Best,
    return_best: bool,
) -> tuple[NDArray[np.float64], float, int, StopReason, str]:
    """Common ending: evaluate at the final point if needed, restore the best."""
    transform = cost.transform
    if value is None:
        value = cost.value()
    params = transform.parameters
    if return_best and best.parameters is not None and best.value < value:
        transform.parameters = best.parameters
        params = transform.parameters
        value = best.value
        message += " (returning the best parameters seen)"
    return params, float(value), n_iter, reason, message


def _non_finite_stop(
    cost: _CountingCost, previous: tuple[NDArray[np.float64], float] | None, n_iter: int, where: str
) -> tuple[NDArray[np.float64], float, int, StopReason, str]:
    """Stop on a non-finite value/gradient, going back to the last finite point."""
    msg = f"{where}: the cost returned a non-finite value or gradient at iteration {n_iter}"
    if previous is None:
        return cost.transform.parameters, math.nan, n_iter, StopReason.NON_FINITE, msg + "."
    cost.transform.parameters = previous[0]
    return previous[0].copy(), previous[1], n_iter, StopReason.NON_FINITE, msg + "; returned the previous point."
