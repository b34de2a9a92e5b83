"""Exhaustive grid search (ITK ``ExhaustiveOptimizerv4``), e.g. for coarse rotation search."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError, ShapeError
from .base import IterationState, Optimizer, StopReason, _CountingCost, _Recorder, check_positive_float
from .scales import ScalesEstimator

__all__ = ["Exhaustive"]


class Exhaustive(Optimizer):
    """Evaluate the cost on a regular grid around the start and keep the best point.

    The grid is ``p_i = p0_i + (k_i - n_i) * step_length * scales_i`` with
    ``k_i = 0 .. 2 n_i``; each point is reached by
    ``transform.parameters = p0; transform.update_parameters(offset)`` (so
    versor offsets are rotation vectors composed with the start).  Points are
    visited with the first parameter varying fastest (ITK's order).  The
    transform is left at the best grid point (ties: the first visited).

    Parameters
    ----------
    number_of_steps : int or sequence of int
        ``n_i`` per parameter (an int applies to all); 0 keeps a parameter
        fixed.
    step_length : float, default 1.0
    scales : None or array_like, optional
        Per-parameter step *multipliers*.  Note: unlike every other optimizer
        (where scales divide the gradient), scales **multiply** the grid step
        here, as in ITK; estimators are therefore not accepted.

    Notes
    -----
    Every grid point is one entry of ``OptimizerResult.history`` (with NaN
    gradient norm) so the whole cost landscape is available afterwards;
    ``OptimizerResult.n_iterations`` is the number of points evaluated.
    """

    def __init__(self, *, number_of_steps: int | ArrayLike, step_length: float = 1.0, scales: Any = None) -> None:
        where = "Exhaustive()"
        if isinstance(scales, (str, ScalesEstimator)):
            raise InvalidInputError(
                f"{where}: 'scales' must be None or an array of step multipliers (Exhaustive multiplies the "
                f"grid step by the scales, ITK's convention); got {scales!r}."
            )
        super().__init__(scales=scales)
        steps = np.array(number_of_steps, copy=True).reshape(-1)
        if steps.size == 0 or not np.issubdtype(steps.dtype, np.integer) or np.any(steps < 0):
            raise InvalidInputError(
                f"{where}: 'number_of_steps' must be an integer >= 0 or a sequence of them; got "
                f"{number_of_steps!r}."
            )
        self.number_of_steps = steps.astype(np.int64)
        self.step_length = check_positive_float(step_length, where=where, name="step_length")

    def grid_offsets(self, scales: NDArray[np.float64]) -> NDArray[np.float64]:
        """All parameter offsets ``(k - n) * step_length * scales``, first parameter fastest."""
        n_par = scales.size
        steps = self.number_of_steps
        if steps.size == 1:
            steps = np.full(n_par, steps[0])
        if steps.size != n_par:
            raise ShapeError(
                f"Exhaustive.optimize(): 'number_of_steps' must have one value per parameter ({n_par}) or be "
                f"a single integer; got {steps.size} values."
            )
        axes = [np.arange(-int(n), int(n) + 1, dtype=np.float64) * self.step_length * s for n, s in zip(steps, scales)]
        grid = [combo[::-1] for combo in itertools.product(*axes[::-1])]
        return np.array(grid, dtype=np.float64).reshape(-1, n_par)

    def _run(
        self, cost: _CountingCost, scales: NDArray[np.float64], recorder: _Recorder
    ) -> tuple[NDArray[np.float64], float, int, StopReason, str]:
        transform = cost.transform
        p0 = transform.parameters
        offsets = self.grid_offsets(scales)
        best_value = math.inf
        best_params = p0
        reason = StopReason.GRID_COMPLETED
        message = f"all {offsets.shape[0]} grid points evaluated"
        n_done = 0
        for k, offset in enumerate(offsets):
            transform.parameters = p0
            transform.update_parameters(offset)
            params = transform.parameters
            value = cost.value()
            n_done += 1
            if math.isfinite(value) and value < best_value:
                best_value, best_params = value, params
            if recorder.record(IterationState(k, value, math.nan, params)):
                reason, message = StopReason.CALLBACK, f"callback stop after {n_done} grid points"
                break
        transform.parameters = best_params
        if not math.isfinite(best_value):
            return transform.parameters, math.nan, n_done, StopReason.NON_FINITE, "no grid point had a finite value"
        return transform.parameters, best_value, n_done, reason, message
