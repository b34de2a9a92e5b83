"""Gradient descent (ITK ``GradientDescentOptimizerv4``) and its regular-step variant."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import check_positive_int
from ..errors import InvalidInputError
from ._gradient_base import _Best, _finish, _GradientOptimizer, _non_finite_stop
from .base import IterationState, StopReason, _CountingCost, _Recorder, check_positive_float
from .convergence import WindowConvergenceMonitor

__all__ = ["GradientDescent", "RegularStepGradientDescent"]


class GradientDescent(_GradientOptimizer):
    """Plain gradient descent with scales, learning-rate estimation and windowed convergence.

    Each iteration evaluates ``(value, g)``, feeds ``value`` to the
    :class:`~regframe.optimizers.convergence.WindowConvergenceMonitor` (stop
    when the convergence value is ``<= minimum_convergence_value``; checked
    before the step, as in ITK), then steps
    ``transform.update_parameters(-learning_rate * g / scales)``.

    Parameters
    ----------
    learning_rate : float, default 1.0
        Step multiplier; replaced by the estimate when
        ``estimate_learning_rate`` is set.
    n_iterations : int, default 100
        Maximum number of iterations (gradient evaluations).
    scales : None, array_like, ScalesEstimator or str, optional
        See :class:`~regframe.optimizers.base.Optimizer`.
    estimate_learning_rate : {'once', 'each_iteration', None}, default 'once'
        ``learning_rate = maximum_step_size / step_scale(-g / s)`` at the
        first iteration only (ITK's default; later steps scale with the
        gradient) or at every iteration (every step moves the farthest sample
        by about ``maximum_step_size``).  The step scale comes from the scales
        estimator, or :class:`~regframe.optimizers.scales.PhysicalShiftScales`
        when ``scales`` is None or an array.  Needs ``cost.virtual_domain`` or
        ``cost.sample_points``; without them a warning is issued and
        ``learning_rate`` is used as given.
    maximum_step_size : float, optional
        Physical step for the estimation; default the estimator's
        ``estimate_maximum_step_size`` (minimum virtual spacing), recomputed
        for every :meth:`optimize` call (ITK keeps the level-0 value).
    convergence_window : int, default 10
        Window of the convergence monitor (ITK default 50).
    minimum_convergence_value : float, default 1e-6
        Threshold of the convergence monitor (ITK default 1e-8).
    return_best : bool, default False
        Return the parameters with the lowest value seen instead of the last.

    Notes
    -----
    When the iteration budget is used up, the cost is evaluated once more at
    the final parameters so the result's value matches its parameters.
    """

    def __init__(
        self,
        *,
        learning_rate: float = 1.0,
        n_iterations: int = 100,
        scales: Any = None,
        estimate_learning_rate: str | None = "once",
        maximum_step_size: float | None = None,
        convergence_window: int = 10,
        minimum_convergence_value: float = 1e-6,
        return_best: bool = False,
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            n_iterations=n_iterations,
            scales=scales,
            estimate_learning_rate=estimate_learning_rate,
            maximum_step_size=maximum_step_size,
            return_best=return_best,
        )
        where = f"{type(self).__name__}()"
        self.convergence_window = check_positive_int(convergence_window, where=where, name="convergence_window",
                                                     minimum=2)
        mcv = minimum_convergence_value
        if isinstance(mcv, bool) or not isinstance(mcv, (int, float)) or not math.isfinite(mcv):
            raise InvalidInputError(f"{where}: 'minimum_convergence_value' must be a finite number; got {mcv!r}.")
        self.minimum_convergence_value = float(mcv)

    def _run(
        self, cost: _CountingCost, scales: NDArray[np.float64], recorder: _Recorder
    ) -> tuple[NDArray[np.float64], float, int, StopReason, str]:
        where = f"{type(self).__name__}.optimize()"
        transform = cost.transform
        lr_estimator = self._learning_rate_estimator(cost)
        monitor = WindowConvergenceMonitor(self.convergence_window)
        best = _Best()
        lr = self.learning_rate
        previous: tuple[NDArray[np.float64], float] | None = None
        for it in range(self.n_iterations):
            params = transform.parameters
            value, grad = cost.value_and_gradient()
            if not (math.isfinite(value) and np.all(np.isfinite(grad))):
                return _non_finite_stop(cost, previous, it, where)
            previous = (params, value)
            best.offer(value, params)
            conv = monitor.add(value)
            gnorm = float(np.linalg.norm(grad))
            if conv <= self.minimum_convergence_value:
                return self._converged(cost, recorder, best, it, value, gnorm, params, conv)
            direction = -grad / scales
            if lr_estimator is not None and (self.estimate_learning_rate == "each_iteration" or it == 0):
                lr = lr_estimator(transform, direction, lr)
            step = lr * direction
            state = IterationState(it, value, gnorm, params, lr, float(np.linalg.norm(step)), conv)
            if recorder.record(state):
                return _finish(cost, reason=StopReason.CALLBACK, n_iter=it + 1, value=value, best=best,
                               return_best=self.return_best, message=f"callback stop at iteration {it}")
            transform.update_parameters(step)
        return _finish(cost, reason=StopReason.MAX_ITERATIONS, n_iter=self.n_iterations, value=None, best=best,
                       return_best=self.return_best,
                       message=f"maximum number of iterations ({self.n_iterations}) reached")


class RegularStepGradientDescent(_GradientOptimizer):
    """Gradient descent with a fixed step length relaxed on direction changes (ITK semantics).

    With ``u = g / scales``, each iteration: stop if ``|u| <
    gradient_tolerance``; multiply the relaxation by ``relaxation_factor``
    when ``u . u_prev < 0`` (both divided by the scales once, i.e. weights
    ``1/s^2`` - ITK's implementation uses ``1/s^3``); step length ``l =
    relaxation * learning_rate``; stop if ``l < minimum_step_length``; else
    ``transform.update_parameters(-l * u / |u|)``.

    Parameters
    ----------
    learning_rate : float, default 1.0
        Initial step length in (scaled) parameter units; replaced by the
        estimate when ``estimate_learning_rate`` is set.
    n_iterations : int, default 100
    scales : None, array_like, ScalesEstimator or str, optional
    relaxation_factor : float, default 0.5
        In ``(0, 1)``.
    minimum_step_length : float, default 1e-4
    gradient_tolerance : float, default 1e-4
    estimate_learning_rate : {'once', 'each_iteration', None}, default 'once'
        Choose the step length so that the (unrelaxed) step moves the
        farthest sample by ``maximum_step_size``:
        ``learning_rate = maximum_step_size / step_scale(-u / |u|)``.  ITK's
        default is None (the given step length is used).
    maximum_step_size : float, optional
        As in :class:`GradientDescent`.
    return_best : bool, default False

    Notes
    -----
    There is no convergence monitor (ITK forces it off);
    ``IterationState.convergence_value`` is NaN.
    """

    def __init__(
        self,
        *,
        learning_rate: float = 1.0,
        n_iterations: int = 100,
        scales: Any = None,
        relaxation_factor: float = 0.5,
        minimum_step_length: float = 1e-4,
        gradient_tolerance: float = 1e-4,
        estimate_learning_rate: str | None = "once",
        maximum_step_size: float | None = None,
        return_best: bool = False,
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            n_iterations=n_iterations,
            scales=scales,
            estimate_learning_rate=estimate_learning_rate,
            maximum_step_size=maximum_step_size,
            return_best=return_best,
        )
        where = f"{type(self).__name__}()"
        rf = check_positive_float(relaxation_factor, where=where, name="relaxation_factor")
        if not rf < 1.0:
            raise InvalidInputError(f"{where}: 'relaxation_factor' must be in (0, 1); got {relaxation_factor!r}.")
        self.relaxation_factor = rf
        self.minimum_step_length = check_positive_float(minimum_step_length, where=where,
                                                        name="minimum_step_length", allow_zero=True)
        self.gradient_tolerance = check_positive_float(gradient_tolerance, where=where,
                                                       name="gradient_tolerance", allow_zero=True)

    def _run(
        self, cost: _CountingCost, scales: NDArray[np.float64], recorder: _Recorder
    ) -> tuple[NDArray[np.float64], float, int, StopReason, str]:
        where = f"{type(self).__name__}.optimize()"
        transform = cost.transform
        lr_estimator = self._learning_rate_estimator(cost)
        best = _Best()
        lr = self.learning_rate
        relaxation = 1.0
        u_prev: NDArray[np.float64] | None = None
        previous: tuple[NDArray[np.float64], float] | None = None
        for it in range(self.n_iterations):
            params = transform.parameters
            value, grad = cost.value_and_gradient()
            if not (math.isfinite(value) and np.all(np.isfinite(grad))):
                return _non_finite_stop(cost, previous, it, where)
            previous = (params, value)
            best.offer(value, params)
            gnorm = float(np.linalg.norm(grad))
            u = grad / scales
            unorm = float(np.linalg.norm(u))

            def stop(reason: StopReason, message: str, lr_now: float = math.nan):
                recorder.record(IterationState(it, value, gnorm, params, lr_now, math.nan, math.nan))
                return _finish(cost, reason=reason, n_iter=it + 1, value=value, best=best,
                               return_best=self.return_best, message=message)

            if unorm < self.gradient_tolerance:
                return stop(StopReason.GRADIENT_TOO_SMALL,
                            f"scaled gradient norm {unorm:.3g} < {self.gradient_tolerance:.3g} at iteration {it}")
            if u_prev is not None and float(np.dot(u, u_prev)) < 0.0:
                relaxation *= self.relaxation_factor
            direction = -u / unorm
            if lr_estimator is not None and (self.estimate_learning_rate == "each_iteration" or it == 0):
                lr = lr_estimator(transform, direction, lr)
            length = relaxation * lr
            if length < self.minimum_step_length:
                return stop(StopReason.STEP_TOO_SMALL,
                            f"step length {length:.3g} < {self.minimum_step_length:.3g} at iteration {it}", length)
            step = length * direction
            state = IterationState(it, value, gnorm, params, length, float(np.linalg.norm(step)), math.nan)
            if recorder.record(state):
                return _finish(cost, reason=StopReason.CALLBACK, n_iter=it + 1, value=value, best=best,
                               return_best=self.return_best, message=f"callback stop at iteration {it}")
            transform.update_parameters(step)
            u_prev = u
        return _finish(cost, reason=StopReason.MAX_ITERATIONS, n_iter=self.n_iterations, value=None, best=best,
                       return_best=self.return_best,
                       message=f"maximum number of iterations ({self.n_iterations}) reached")
