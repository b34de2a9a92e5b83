"""L-BFGS-B, Powell and Nelder-Mead through :func:`scipy.optimize.minimize`.

Scales are honoured by a change of variables.  The solver works on
``z = sqrt(s) * delta_p`` anchored at the parameters ``p0`` the run (or
round) started from, and the cost is evaluated at the transform obtained by
``transform.parameters = p0; transform.update_parameters(z / sqrt(s))``, so
versor compositions stay valid.  A steepest-descent step in ``z`` is the
scaled step ``-g / s`` of :class:`~regframe.optimizers.GradientDescent`, so
scales mean the same in every optimizer (ITK's vnl adaptor uses ``z = p s``,
which squares the preconditioning, and ``LBFGSBOptimizerv4`` ignores scales
altogether).

Exactness: the value at ``z`` is exact for every transform.  The gradient
handed to L-BFGS-B, ``g / sqrt(s)``, is exact for additive parameters; for
components whose update is not additive (versor rotations, detected
generically by comparing ``update_parameters`` with addition) it is the
gradient at the current point in *its* update coordinates, which differs from
``d value / dz`` by the differential of the composition (an ``O(|z|)``
relative error, zero at a stationary point).  :class:`LBFGSB` therefore
re-anchors: when the non-additive increment exceeds ``reanchor_threshold``
(default 0.1, e.g. radians) the round is stopped and a new one starts from the
current point.
"""

from __future__ import annotations

from abc import abstractmethod

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize as _sopt

from .._validation import check_positive_int
from ..errors import InvalidInputError, NoOverlapError, ShapeError
from .base import (
    IterationState,
    Optimizer,
    StopReason,
    _CountingCost,
    _domain_of,
    _Recorder,
    check_positive_float,
)
from .scales import PhysicalShiftScales

__all__ = ["LBFGSB", "Powell", "NelderMead"]


def _inherits_additive_update(transform: Any) -> bool:
    """True when ``update_parameters`` is the base class's plain addition.

    A composite is additive when all its optimised members are.
    """
    from ..transforms.base import Transform
    from ..transforms.composite import CompositeTransform

    if isinstance(transform, CompositeTransform):
        return all(
            _inherits_additive_update(t)
            for t, flag in zip(transform.transforms, transform.optimize_flags)
            if flag
        )
    return type(transform).update_parameters is Transform.update_parameters


def non_additive_mask(transform: Any, h: float = 1e-2) -> NDArray[np.bool_]:
    """Parameters whose ``update_parameters`` is not plain addition at the current point.

    Transforms that inherit the base class's additive update (B-splines,
    fields, affine, ...) are answered at once; otherwise a copy of
    ``transform`` is updated by ``h e_i`` for every ``i`` and the resulting
    parameters compared with ``p + h e_i``.
    """
    if _inherits_additive_update(transform):
        return np.zeros(transform.n_parameters, dtype=bool)
    work = transform.copy()
    p0 = work.parameters
    mask = np.zeros(p0.size, dtype=bool)
    for i in range(p0.size):
        work.parameters = p0
        step = np.zeros(p0.size)
        step[i] = h
        work.update_parameters(step)
        expected = p0.copy()
        expected[i] += h
        got = work.parameters
        mask[i] = not np.allclose(got, expected, rtol=1e-12, atol=1e-12)
    work.parameters = p0
    return mask


class _ScipyOptimizer(Optimizer):
    """Common machinery: variable change, history, stop-reason mapping."""

    _method: str = ""
    _uses_gradient = False
    #: scipy status codes meaning "iteration/evaluation budget exhausted".
    _budget_statuses: tuple[int, ...] = (1, 2)

    def __init__(self, *, n_iterations: int, scales: Any) -> None:
        super().__init__(scales=scales)
        self.n_iterations = check_positive_int(n_iterations, where=f"{type(self).__name__}()",
                                               name="n_iterations")

    @abstractmethod
    def _options(self, cost: _CountingCost, sq: NDArray[np.float64], n_par: int, maxiter: int) -> dict:
        raise NotImplementedError(f"{type(self).__name__}._options()")

    def _bounds(self, anchor: NDArray[np.float64], sq: NDArray[np.float64]) -> Any:
        return None

    def _reanchor_threshold(self) -> float | None:
        return None

    def _step_tolerance(self) -> float:
        return 0.0

    def _run(
        self, cost: _CountingCost, scales: NDArray[np.float64], recorder: _Recorder
    ) -> tuple[NDArray[np.float64], float, int, StopReason, str]:
        where = f"{type(self).__name__}.optimize()"
        transform = cost.transform
        sq = np.sqrt(scales)
        n_par = sq.size
        work = transform.copy()
        anchor = transform.parameters
        threshold = self._reanchor_threshold()
        nonadd = non_additive_mask(transform) if threshold is not None else np.zeros(n_par, dtype=bool)
        n_iter = 0
        last_value = math.nan
        step_tol = self._step_tolerance()
        small_steps = 0

        def to_params(z: NDArray[np.float64]) -> NDArray[np.float64]:
            work.parameters = anchor
            work.update_parameters(z / sq)
            return work.parameters

        def set_transform(z: NDArray[np.float64]) -> None:
            transform.parameters = anchor
            transform.update_parameters(z / sq)

        while True:
            grad_norms: dict[bytes, float] = {}
            flags = {"reanchor": False, "callback": False, "small_step": False}

            def fun(z: NDArray[np.float64]) -> Any:
                set_transform(z)
                if self._uses_gradient:
                    try:
                        v, g = cost.value_and_gradient()
                    except NoOverlapError:
                        # a trial point outside the overlap: reject it so the line search backs off
                        return math.inf, np.zeros(n_par)
                    ok = math.isfinite(v) and bool(np.all(np.isfinite(g)))
                    grad_norms[z.tobytes()] = float(np.linalg.norm(g)) if ok else math.nan
                    if not ok:
                        return math.inf, np.zeros(n_par)
                    return v, g / sq
                try:
                    v = cost.value()
                except NoOverlapError:
                    return math.inf
                return v if math.isfinite(v) else math.inf

            prev_params: list[NDArray[np.float64]] = []
            prev_z = [np.zeros(n_par)]

            def callback(intermediate_result: Any) -> None:
                nonlocal n_iter, small_steps
                z = np.array(intermediate_result.x, dtype=np.float64)  # scipy reuses its buffer
                z_step = float(np.linalg.norm(z - prev_z[0]))
                prev_z[0] = z
                params = to_params(z)
                step_norm = float(np.linalg.norm(params - prev_params[0])) if prev_params else math.nan
                prev_params[:] = [params]  # (only the last: one vector per iteration outgrew the image)
                gnorm = grad_norms.get(z.tobytes(), math.nan)
                state = IterationState(n_iter, float(intermediate_result.fun), gnorm, params, math.nan,
                                       step_norm, math.nan)
                n_iter += 1
                if recorder.record(state):
                    flags["callback"] = True
                    raise StopIteration
                if threshold is not None and np.any(nonadd):
                    if float(np.linalg.norm((z / sq)[nonadd])) > threshold:
                        flags["reanchor"] = True
                        raise StopIteration
                small_steps = small_steps + 1 if z_step < step_tol else 0
                if small_steps >= 2:
                    flags["small_step"] = True
                    raise StopIteration
                if n_iter >= self.n_iterations:
                    raise StopIteration

            remaining = self.n_iterations - n_iter
            res = _sopt.minimize(
                fun,
                np.zeros(n_par),
                method=self._method,
                jac=self._uses_gradient,
                bounds=self._bounds(anchor, sq),
                callback=callback,
                options=self._options(cost, sq, n_par, remaining),
            )
            z_final = np.asarray(res.x, dtype=np.float64)
            set_transform(z_final)
            last_value = float(res.fun)
            if flags["reanchor"] and n_iter < self.n_iterations:
                anchor = transform.parameters
                continue
            break
        params = transform.parameters
        if not math.isfinite(last_value):
            return params, last_value, n_iter, StopReason.NON_FINITE, f"{where}: the cost was not finite ({res.message})"
        if flags["callback"]:
            return params, last_value, n_iter, StopReason.CALLBACK, f"callback stop at iteration {n_iter - 1}"
        if flags["small_step"]:
            return (params, last_value, n_iter, StopReason.STEP_TOO_SMALL,
                    f"two consecutive steps shorter than step_tolerance={step_tol:g} (scaled units)")
        if n_iter >= self.n_iterations:  # our callback stopped SciPy: its message would name the mechanism
            reason, message = StopReason.MAX_ITERATIONS, f"maximum number of iterations ({self.n_iterations}) reached"
        elif res.status in self._budget_statuses:
            reason = StopReason.MAX_ITERATIONS
            message = f"maximum number of function evaluations reached ({res.message})"
        elif res.success:
            reason, message = StopReason.SOLVER_CONVERGED, str(res.message)
        else:
            reason, message = StopReason.SOLVER_FAILED, str(res.message)
        return params, last_value, n_iter, reason, message


def _check_bounds(bounds: Any, where: str) -> list[tuple[float | None, float | None]] | None:
    if bounds is None:
        return None
    try:
        out = []
        for lo, hi in bounds:
            lo = None if lo is None or lo == -math.inf else float(lo)
            hi = None if hi is None or hi == math.inf else float(hi)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError
            out.append((lo, hi))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{where}: 'bounds' must be a sequence of (low, high) pairs (None or +-inf for no bound, "
            f"low <= high); got {bounds!r}."
        ) from exc
    return out


class LBFGSB(_ScipyOptimizer):
    """Limited-memory BFGS with optional bounds (``scipy.optimize`` 'L-BFGS-B').

    Parameters
    ----------
    n_iterations : int, default 100
        Maximum number of L-BFGS-B iterations (over all re-anchoring rounds).
    scales : None, array_like, ScalesEstimator or str, optional
        Honoured by the change of variables of the module notes (unlike ITK).
    bounds : sequence of (low, high), optional
        Per-parameter bounds in parameter units (None for no bound).  They are
        mapped to ``sqrt(s) (bound - p0)``: exact for additive parameters;
        for non-additive (versor) components they bound the increment from
        the round's anchor.
    gradient_tolerance : float, default 1e-5
        scipy's ``gtol`` (projected gradient, in scaled variables).
    function_tolerance : float, default 1e-12
        scipy's ``ftol`` (relative reduction of the value).
    max_corrections : int, default 10
        scipy's ``maxcor``.
    max_line_search : int, default 20
        scipy's ``maxls``: evaluations per line search.  Image metrics with
        linear interpolation are only piecewise smooth, and a small value
        (e.g. 5) stops fruitless line searches early.
    reanchor_threshold : float, default 0.1
        Norm of the non-additive increment (parameter units, e.g. radians of
        a rotation vector) above which a new round starts from the current
        point.
    step_tolerance : float, default 0.0
        Stop (``StopReason.STEP_TOO_SMALL``) when two consecutive iterations
        each move the scaled variables by less than this (Euclidean norm).
        With physical-shift scales a unit of the scaled variables is about
        one unit of physical displacement of the farthest domain corner, so
        e.g. ``0.005 * min(spacing)`` stops once the transform settles to
        within a few thousandths of a voxel; noisy, piecewise-smooth image
        costs otherwise spend their last iterations on line searches that
        cannot make progress.  0 switches the test off.
    """

    _method = "L-BFGS-B"
    _uses_gradient = True
    _budget_statuses = (1,)

    def __init__(
        self,
        *,
        n_iterations: int = 100,
        scales: Any = None,
        bounds: Any = None,
        gradient_tolerance: float = 1e-5,
        function_tolerance: float = 1e-12,
        max_corrections: int = 10,
        max_line_search: int = 20,
        reanchor_threshold: float = 0.1,
        step_tolerance: float = 0.0,
    ) -> None:
        super().__init__(n_iterations=n_iterations, scales=scales)
        where = f"{type(self).__name__}()"
        self.bounds = _check_bounds(bounds, where)
        self.gradient_tolerance = check_positive_float(gradient_tolerance, where=where, name="gradient_tolerance",
                                                       allow_zero=True)
        self.function_tolerance = check_positive_float(function_tolerance, where=where, name="function_tolerance",
                                                       allow_zero=True)
        self.max_corrections = check_positive_int(max_corrections, where=where, name="max_corrections")
        self.max_line_search = check_positive_int(max_line_search, where=where, name="max_line_search")
        self.reanchor_threshold = check_positive_float(reanchor_threshold, where=where, name="reanchor_threshold")
        self.step_tolerance = check_positive_float(step_tolerance, where=where, name="step_tolerance",
                                                   allow_zero=True)

    def _reanchor_threshold(self) -> float | None:
        return self.reanchor_threshold

    def _step_tolerance(self) -> float:
        return self.step_tolerance

    def _bounds(self, anchor: NDArray[np.float64], sq: NDArray[np.float64]) -> Any:
        if self.bounds is None:
            return None
        if len(self.bounds) != anchor.size:
            raise ShapeError(
                f"{type(self).__name__}.optimize(): 'bounds' must have one pair per parameter "
                f"({anchor.size}); got {len(self.bounds)}."
            )
        out = []
        for (lo, hi), p, s in zip(self.bounds, anchor, sq):
            out.append((None if lo is None else s * (lo - p), None if hi is None else s * (hi - p)))
        return out

    def _options(self, cost: _CountingCost, sq: NDArray[np.float64], n_par: int, maxiter: int) -> dict:
        return {
            "maxiter": maxiter,
            "gtol": self.gradient_tolerance,
            "ftol": self.function_tolerance,
            "maxcor": self.max_corrections,
            "maxls": self.max_line_search,
        }


class _DerivativeFree(_ScipyOptimizer):
    def __init__(self, *, n_iterations: int, scales: Any, initial_step: float | None, xtol: float,
                 ftol: float) -> None:
        super().__init__(n_iterations=n_iterations, scales=scales)
        where = f"{type(self).__name__}()"
        self.initial_step = check_positive_float(initial_step, where=where, name="initial_step", allow_none=True)
        self.xtol = check_positive_float(xtol, where=where, name="xtol", allow_zero=True)
        self.ftol = check_positive_float(ftol, where=where, name="ftol", allow_zero=True)

    def _step(self, cost: _CountingCost) -> float:
        if self.initial_step is not None:
            return self.initial_step
        domain = _domain_of(cost.cost)
        estimator = self._estimator() or PhysicalShiftScales()
        if domain is None and estimator.points is None:
            return 1.0
        return estimator.estimate_maximum_step_size(domain if domain is not None else estimator.points)


class Powell(_DerivativeFree):
    """Powell's conjugate-direction method (``scipy.optimize`` 'Powell'), value only.

    Parameters
    ----------
    n_iterations : int, default 100
        Maximum number of Powell iterations (direction-set sweeps).
    scales : None, array_like, ScalesEstimator or str, optional
        Honoured by the change of variables of the module notes (exact for
        every transform, since no gradient is used).
    initial_step : float, optional
        Length of the initial directions in scaled variables
        (``initial_step * identity``).  Default: the maximum step size of the
        domain (its minimum spacing), which with physical-shift scales moves
        the farthest sample point by about one voxel.
    xtol, ftol : float, default 1e-6 and 1e-10
        scipy's tolerances (``xtol`` in scaled variables).
    """

    _method = "Powell"

    def __init__(self, *, n_iterations: int = 100, scales: Any = None, initial_step: float | None = None,
                 xtol: float = 1e-6, ftol: float = 1e-10) -> None:
        super().__init__(n_iterations=n_iterations, scales=scales, initial_step=initial_step, xtol=xtol, ftol=ftol)

    def _options(self, cost: _CountingCost, sq: NDArray[np.float64], n_par: int, maxiter: int) -> dict:
        return {"maxiter": maxiter, "xtol": self.xtol, "ftol": self.ftol,
                "direc": self._step(cost) * np.eye(n_par), "maxfev": 1_000_000}


class NelderMead(_DerivativeFree):
    """Nelder-Mead simplex (``scipy.optimize`` 'Nelder-Mead'), value only.

    Parameters
    ----------
    n_iterations : int, default 1000
        Maximum number of simplex iterations.
    scales : None, array_like, ScalesEstimator or str, optional
        Honoured by the change of variables of the module notes.
    initial_step : float, optional
        Edge length of the initial simplex ``{0, initial_step e_i}`` in scaled
        variables (default as :class:`Powell`; ITK's Amoeba uses 5 % of each
        parameter).
    xtol, ftol : float, default 1e-6 and 1e-10
        scipy's ``xatol`` (scaled variables) and ``fatol``.
    adaptive : bool, default True
        scipy's dimension-adaptive coefficients (better beyond ~5 parameters).
    """

    _method = "Nelder-Mead"

    def __init__(self, *, n_iterations: int = 1000, scales: Any = None, initial_step: float | None = None,
                 xtol: float = 1e-6, ftol: float = 1e-10, adaptive: bool = True) -> None:
        super().__init__(n_iterations=n_iterations, scales=scales, initial_step=initial_step, xtol=xtol, ftol=ftol)
        self.adaptive = bool(adaptive)

    def _options(self, cost: _CountingCost, sq: NDArray[np.float64], n_par: int, maxiter: int) -> dict:
        step = self._step(cost)
        simplex = np.vstack([np.zeros(n_par), step * np.eye(n_par)])
        return {"maxiter": maxiter, "xatol": self.xtol, "fatol": self.ftol, "initial_simplex": simplex,
                "adaptive": self.adaptive, "maxfev": 1_000_000}

