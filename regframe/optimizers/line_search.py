"""Line-search gradient methods (ITK ``GradientDescentLineSearchOptimizerv4`` and
``ConjugateGradientLineSearchOptimizerv4``)."""

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

__all__ = ["GradientDescentLineSearch", "ConjugateGradientLineSearch"]

_PHI = 1.618034
_RESPHI = 2.0 - _PHI


class GradientDescentLineSearch(_GradientOptimizer):
    """Gradient descent whose learning rate is found by a golden-section line search.

    At every iteration the search direction ``d`` (here ``-g / scales``) is
    searched for the multiplier ``a`` in the bracket ``[lower_limit * lr, lr,
    upper_limit * lr]`` (``lr`` = previous multiplier) by ITK's recursive
    golden-section search (``phi = 1.618034``, stop when ``|c - a| < epsilon
    (|b| + |x|)`` or after ``maximum_line_search_iterations``, returning
    ``(a + c) / 2``).  Trial points are ``transform.update_parameters(a d)``
    from the current parameters, which are restored afterwards by assigning
    ``transform.parameters``; then the step ``lr d`` is taken.  Convergence is
    monitored as in :class:`~regframe.optimizers.GradientDescent`.

    Parameters
    ----------
    learning_rate : float, default 1.0
        Initial multiplier (replaced by the estimate at iteration 0 when
        ``estimate_learning_rate='once'``).
    n_iterations : int, default 100
    scales : None, array_like, ScalesEstimator or str, optional
    estimate_learning_rate : {'once', None}, default 'once'
        ITK estimates the initial multiplier only at iteration 0.
    maximum_step_size : float, optional
    convergence_window : int, default 10
    minimum_convergence_value : float, default 1e-6
    return_best : bool, default True
        ITK's default for the line-search methods.
    lower_limit, upper_limit : float, default 0.0 and 5.0
        Bracket factors.
    epsilon : float, default 0.01
        Relative bracket tolerance.
    maximum_line_search_iterations : int, default 20
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
        return_best: bool = True,
        lower_limit: float = 0.0,
        upper_limit: float = 5.0,
        epsilon: float = 0.01,
        maximum_line_search_iterations: int = 20,
    ) -> None:
        where = f"{type(self).__name__}()"
        if estimate_learning_rate == "each_iteration":
            raise InvalidInputError(
                f"{where}: 'estimate_learning_rate' must be 'once' or None for line-search methods (the "
                "search sets the multiplier at every iteration); got 'each_iteration'."
            )
        super().__init__(
            learning_rate=learning_rate,
            n_iterations=n_iterations,
            scales=scales,
            estimate_learning_rate=estimate_learning_rate,
            maximum_step_size=maximum_step_size,
            return_best=return_best,
        )
        self.convergence_window = check_positive_int(convergence_window, where=where, name="convergence_window",
                                                     minimum=2)
        mcv = minimum_convergence_value
        if isinstance(mcv, bool) or not isinstance(mcv, (int, float)) or not math.isfinite(mcv):
            raise InvalidInputError(f"{where}: 'minimum_convergence_value' must be a finite number; got {mcv!r}.")
        self.minimum_convergence_value = float(mcv)
        self.lower_limit = check_positive_float(lower_limit, where=where, name="lower_limit", allow_zero=True)
        self.upper_limit = check_positive_float(upper_limit, where=where, name="upper_limit")
        if not self.lower_limit < 1.0 < self.upper_limit:
            raise InvalidInputError(
                f"{where}: the bracket must satisfy lower_limit < 1 < upper_limit; got "
                f"lower_limit={lower_limit!r}, upper_limit={upper_limit!r}."
            )
        self.epsilon = check_positive_float(epsilon, where=where, name="epsilon")
        self.maximum_line_search_iterations = check_positive_int(
            maximum_line_search_iterations, where=where, name="maximum_line_search_iterations"
        )

    # ---------------------------------------------------------- direction
    def _direction(self, u: NDArray[np.float64], state: dict) -> NDArray[np.float64]:
        """Search direction from the scaled gradient ``u = g / s`` (steepest descent)."""
        return -u

    # ---------------------------------------------------------- line search
    def _golden_section(self, cost: _CountingCost, base: NDArray[np.float64], d: NDArray[np.float64],
                        lr: float) -> float:
        transform = cost.transform

        def f(alpha: float) -> float:
            transform.parameters = base
            transform.update_parameters(d, alpha)
            v = cost.value()
            return v if math.isfinite(v) else math.inf

        a, b, c = self.lower_limit * lr, lr, self.upper_limit * lr
        fb: float | None = None
        n_search = 0
        result = None
        while result is None:
            if n_search > self.maximum_line_search_iterations:
                result = 0.5 * (c + a)
                break
            n_search += 1
            x = b + _RESPHI * (c - b) if c - b > b - a else b - _RESPHI * (b - a)
            if abs(c - a) < self.epsilon * (abs(b) + abs(x)):
                result = 0.5 * (c + a)
                break
            fx = f(x)
            if fb is None:
                fb = f(b)
            if fx < fb:
                if c - b > b - a:
                    a, b, c, fb = b, x, c, fx
                else:
                    a, b, c, fb = a, x, b, fx
            elif c - b > b - a:
                a, b, c = a, b, x
            else:
                a, b, c = x, b, c
        transform.parameters = base
        return result

    def _run(
        self, cost: _CountingCost, scales: NDArray[np.float64], recorder: _Recorder
    ) -> tuple[NDArray[np.float64], float, int, StopReason, str]:
        where = f"{type(self).__name__}.optimize()"
        transform = cost.transform
        lr_estimator = self._learning_rate_estimator(cost)
        monitor = WindowConvergenceMonitor(self.convergence_window)
        best = _Best()
        lr = self.learning_rate
        state: dict = {}
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
            d = self._direction(grad / scales, state)
            if lr_estimator is not None and it == 0:
                lr = lr_estimator(transform, d, lr)
            lr = self._golden_section(cost, params, d, lr)
            step = lr * d
            st = IterationState(it, value, gnorm, params, lr, float(np.linalg.norm(step)), conv)
            if recorder.record(st):
                return _finish(cost, reason=StopReason.CALLBACK, n_iter=it + 1, value=value, best=best,
                               return_best=self.return_best, message=f"callback stop at iteration {it}")
            transform.update_parameters(step)
        return _finish(cost, reason=StopReason.MAX_ITERATIONS, n_iter=self.n_iterations, value=None, best=best,
                       return_best=self.return_best,
                       message=f"maximum number of iterations ({self.n_iterations}) reached")


class ConjugateGradientLineSearch(GradientDescentLineSearch):
    """Polak-Ribiere conjugate gradient with ITK's golden-section line search.

    With scaled gradients ``u = g / s``: ``gamma = (u - u_prev) . u / (u_prev .
    u_prev)``, reset to 0 when ``gamma < 0`` or ``gamma > 5`` (ITK), and
    ``d = -u + gamma d_prev``.  regframe also resets to ``-u`` when ``d`` is
    not a descent direction (``d . u >= 0``), which ITK does not check.
    Other parameters as :class:`GradientDescentLineSearch`.
    """

    def _direction(self, u: NDArray[np.float64], state: dict) -> NDArray[np.float64]:
        u_prev = state.get("u_prev")
        d_prev = state.get("d_prev")
        d = -u
        if u_prev is not None and d_prev is not None:
            denom = float(np.dot(u_prev, u_prev))
            gamma = float(np.dot(u - u_prev, u)) / denom if denom > 0.0 else 0.0
            if gamma < 0.0 or gamma > 5.0:
                gamma = 0.0
            candidate = -u + gamma * d_prev
            if float(np.dot(candidate, u)) < 0.0:
                d = candidate
        state["u_prev"] = u
        state["d_prev"] = d
        return d
