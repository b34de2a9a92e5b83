"""Optimizer contract: the cost protocol, iteration states, results and the ABC.

Every optimizer minimises ``cost.value()`` over the parameters of
``cost.transform`` and changes them through ``transform.update_parameters``
(restoring a saved state, e.g. after a trial step of a line search or to
return the best point, assigns ``transform.parameters``).  Gradients are the
*true* gradients ``d value / d parameters`` in update coordinates; optimizers
step along ``-gradient`` (ITK v4 metrics return the negative).

Scales follow ITK's convention everywhere except :class:`~regframe.optimizers.
Exhaustive`: the gradient is divided by the scales, so a steepest-descent step
is ``delta_p = -learning_rate * gradient / scales``.
"""

from __future__ import annotations

import enum
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import check_choice
from ..errors import InvalidInputError, NonFiniteError, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from ..transforms.base import Transform
    from .scales import ScalesEstimator

__all__ = [
    "CostFunction",
    "StopReason",
    "IterationState",
    "OptimizerResult",
    "Optimizer",
    "Callback",
]

#: Scales smaller than this are rejected (ITK requires ``s > DBL_EPSILON``).
_MIN_SCALE = float(np.finfo(np.float64).eps)


def _read_only(value: ArrayLike) -> NDArray[np.float64]:
    """A read-only float64 copy (results and states are immutable snapshots)."""
    arr = np.array(value, dtype=np.float64, copy=True).reshape(-1)
    arr.flags.writeable = False
    return arr


@runtime_checkable
class CostFunction(Protocol):
    """What an optimizer needs from a cost (a metric or any objective).

    Attributes
    ----------
    transform : Transform
        The transform being optimised.  Its parameters are changed only
        through ``transform.update_parameters(step)`` (or by assigning
        ``transform.parameters`` of a previously saved state).

    Notes
    -----
    Optional attributes used when present:

    * ``virtual_domain`` - a :class:`regframe.Image` (the fixed image or
      virtual grid): scales estimation and the default maximum step size
      (its minimum spacing);
    * ``sample_points`` - ``(n, ndim)`` physical points, used as ITK's
      "virtual domain point set" when there is no ``virtual_domain``.
    """

    transform: Transform

    def value(self) -> float:
        """Cost at the transform's current parameters (minimised)."""
        ...

    def value_and_gradient(self) -> tuple[float, NDArray[np.float64]]:
        """Cost and its true gradient ``d value / d parameters`` (update coordinates)."""
        ...


class StopReason(enum.Enum):
    """Why an optimizer stopped."""

    #: The iteration budget ``n_iterations`` was used up.
    MAX_ITERATIONS = "maximum number of iterations reached"
    #: The windowed convergence value fell below ``minimum_convergence_value``.
    CONVERGED = "convergence checker passed"
    #: The (relaxed) step length fell below ``minimum_step_length``.
    STEP_TOO_SMALL = "step too small"
    #: The (scaled) gradient norm fell below ``gradient_tolerance``.
    GRADIENT_TOO_SMALL = "gradient magnitude too small"
    #: A scipy solver reported convergence (its own tolerances).
    SOLVER_CONVERGED = "solver converged"
    #: A scipy solver stopped without converging (e.g. line-search failure).
    SOLVER_FAILED = "solver stopped abnormally"
    #: Every point of an exhaustive grid was evaluated.
    GRID_COMPLETED = "grid completed"
    #: The user callback returned True.
    CALLBACK = "stopped by the callback"
    #: The cost returned a non-finite value or gradient.
    NON_FINITE = "non-finite value or gradient"


@dataclass(frozen=True)
class IterationState:
    """Immutable snapshot passed to callbacks and kept in the history.

    ``value`` and ``gradient_norm`` were evaluated at ``parameters`` (a copy),
    so ``transform.parameters = state.parameters; cost.value()`` reproduces
    ``state.value``.

    Attributes
    ----------
    iteration : int
        0-based iteration number.
    value : float
        Cost at ``parameters``.
    gradient_norm : float
        Euclidean norm of the true gradient at ``parameters`` (NaN for
        derivative-free methods).
    parameters : ndarray
        Transform parameters at which ``value`` was evaluated (a read-only
        copy).  In a *history* only the last state keeps a vector of more
        than :data:`HISTORY_PARAMETERS_LIMIT` values (a B-spline grid: one copy
        per iteration outgrew the image); earlier ones hold an empty array.
        Callbacks always receive the full vector.
    learning_rate : float
        Learning rate (GD), step length (regular step) or line-search
        multiplier used for the step taken from this point (NaN if none).
    step_norm : float
        Euclidean norm of the parameter change taken from this point
        (NaN when no step was taken, e.g. on the last iteration).
    convergence_value : float
        Windowed convergence value after adding ``value`` (``inf`` until
        the window is full; NaN for methods without a monitor).
    """

    iteration: int
    value: float
    gradient_norm: float
    parameters: NDArray[np.float64]
    learning_rate: float = math.nan
    step_norm: float = math.nan
    convergence_value: float = math.nan

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", _read_only(self.parameters))


@dataclass(frozen=True)
class OptimizerResult:
    """Outcome of :meth:`Optimizer.optimize`.

    Attributes
    ----------
    parameters : ndarray
        Final parameters, read-only (the transform is left in this state).
    value : float
        Cost at ``parameters``.
    n_iterations : int
        Number of iterations performed (states in ``history`` for iterative
        methods; grid points for :class:`Exhaustive`).
    stop_reason : StopReason
    message : str
        Human-readable explanation of the stop.
    history : tuple of IterationState
    elapsed_seconds : float
        Wall time of the run.
    n_evaluations : int
        Number of cost evaluations (``value`` or ``value_and_gradient``).
    scales : ndarray
        The parameter scales used.
    """

    parameters: NDArray[np.float64]
    value: float
    n_iterations: int
    stop_reason: StopReason
    message: str
    history: tuple[IterationState, ...] = ()
    elapsed_seconds: float = 0.0
    n_evaluations: int = 0
    scales: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", _read_only(self.parameters))
        object.__setattr__(self, "scales", _read_only(self.scales))

    @property
    def converged(self) -> bool:
        """True when a convergence criterion (not a budget or failure) stopped the run."""
        return self.stop_reason in (
            StopReason.CONVERGED,
            StopReason.STEP_TOO_SMALL,
            StopReason.GRADIENT_TOO_SMALL,
            StopReason.SOLVER_CONVERGED,
            StopReason.GRID_COMPLETED,
        )

    def __repr__(self) -> str:
        p = np.array2string(self.parameters, precision=6, threshold=12)
        return (
            f"OptimizerResult(value={self.value:.6g}, n_iterations={self.n_iterations}, "
            f"stop_reason={self.stop_reason.name}, parameters={p}, "
            f"elapsed_seconds={self.elapsed_seconds:.3g})"
        )


#: ``callback(state) -> bool | None``; returning True stops the run.
Callback = Callable[[IterationState], Any]

#: History states keep parameter vectors of at most this many values (every linear transform
#: and small grids); larger ones are kept by the last state only (see :func:`append_state`).
HISTORY_PARAMETERS_LIMIT = 256

_NO_PARAMETERS = _read_only(np.zeros(0))

_S = TypeVar("_S")


def append_state(history: list[_S], state: _S) -> None:
    """Append ``state`` (a dataclass with ``parameters``) to ``history``, bounding its memory.

    The previous last state gives up a parameter vector longer than
    :data:`HISTORY_PARAMETERS_LIMIT` (it becomes an empty array), so a history
    holds one such vector however many iterations it records; values, gradient
    norms and step sizes are kept for every state.
    """
    if history:
        last = history[-1]
        if last.parameters.size > HISTORY_PARAMETERS_LIMIT:  # type: ignore[attr-defined]
            history[-1] = replace(last, parameters=_NO_PARAMETERS)  # type: ignore[type-var]
    history.append(state)


class _CountingCost:
    """Wraps a cost to count evaluations and reject non-finite results."""

    def __init__(self, cost: CostFunction, where: str) -> None:
        self.cost = cost
        self.where = where
        self.n_evaluations = 0

    @property
    def transform(self) -> Transform:
        return self.cost.transform

    def value(self) -> float:
        self.n_evaluations += 1
        return float(self.cost.value())

    def value_and_gradient(self) -> tuple[float, NDArray[np.float64]]:
        self.n_evaluations += 1
        value, grad = self.cost.value_and_gradient()
        grad = np.array(grad, dtype=np.float64, copy=True).reshape(-1)
        n_par = self.cost.transform.n_parameters
        if grad.size != n_par:
            raise ShapeError(
                f"{self.where}: the cost's gradient must have {n_par} values (one per "
                f"transform parameter); got {grad.size}."
            )
        return float(value), grad


class _Recorder:
    """Collects iteration states and runs the user callback."""

    def __init__(self, callback: Callback | None) -> None:
        self.callback = callback
        self.history: list[IterationState] = []

    def record(self, state: IterationState) -> bool:
        """Store ``state`` (see :func:`append_state`); return True when the callback asks to stop."""
        append_state(self.history, state)
        if self.callback is None:
            return False
        return bool(self.callback(state))


def _domain_of(cost: CostFunction) -> Any:
    """The cost's virtual domain, else its sample points, else None."""
    domain = getattr(cost, "virtual_domain", None)
    if domain is not None:
        return domain
    points = getattr(cost, "sample_points", None)
    if points is not None:
        return np.asarray(points, dtype=np.float64)
    return None


class Optimizer(ABC):
    """Abstract base of every optimizer.

    Subclasses implement :meth:`_run`; :meth:`optimize` validates the cost,
    resolves the scales, times the run and builds the result.

    Parameters
    ----------
    scales : None, array_like, ScalesEstimator or str
        Per-parameter scales ``s`` (the gradient is divided by them):
        ``None`` (all ones), an array of ``n_parameters`` positive values, a
        :class:`~regframe.optimizers.scales.ScalesEstimator`, or one of
        ``"physical_shift"``, ``"index_shift"``, ``"jacobian"``.  Estimators
        run once per :meth:`optimize` call on ``cost.virtual_domain`` (or
        ``cost.sample_points``).
    """

    _scales_choices: tuple[str, ...] = ("physical_shift", "index_shift", "jacobian")

    def __init__(self, *, scales: Any = None) -> None:
        self._scales_spec = self._check_scales_spec(scales)

    # --------------------------------------------------------------- public
    @property
    def scales(self) -> Any:
        """The scales specification given to the constructor."""
        spec = self._scales_spec
        return spec.copy() if isinstance(spec, np.ndarray) else spec

    def optimize(self, cost: CostFunction, *, callback: Callback | None = None) -> OptimizerResult:
        """Minimise ``cost`` over the parameters of ``cost.transform``.

        Parameters
        ----------
        cost : CostFunction
            Cost to minimise; its transform is modified in place and left at
            the returned parameters.
        callback : callable, optional
            ``callback(state: IterationState)``; returning True stops the run
            (``StopReason.CALLBACK``).

        Returns
        -------
        OptimizerResult
        """
        where = f"{type(self).__name__}.optimize()"
        for attr in ("transform", "value", "value_and_gradient"):
            if not hasattr(cost, attr):
                raise InvalidInputError(
                    f"{where}: 'cost' must follow the CostFunction protocol (attributes "
                    f"'transform', 'value', 'value_and_gradient'); got {type(cost).__name__} "
                    f"without '{attr}'."
                )
        if callback is not None and not callable(callback):
            raise InvalidInputError(f"{where}: 'callback' must be callable or None; got {callback!r}.")
        start = time.perf_counter()
        counting = _CountingCost(cost, where)
        scales = self._resolve_scales(cost)
        recorder = _Recorder(callback)
        params, value, n_iter, reason, message = self._run(counting, scales, recorder)
        return OptimizerResult(
            parameters=np.array(params, dtype=np.float64, copy=True),
            value=float(value),
            n_iterations=int(n_iter),
            stop_reason=reason,
            message=message,
            history=tuple(recorder.history),
            elapsed_seconds=time.perf_counter() - start,
            n_evaluations=counting.n_evaluations,
            scales=scales.copy(),
        )

    # ------------------------------------------------------------ internals
    @abstractmethod
    def _run(
        self, cost: _CountingCost, scales: NDArray[np.float64], recorder: _Recorder
    ) -> tuple[NDArray[np.float64], float, int, StopReason, str]:
        """Run the method; return ``(parameters, value, n_iterations, reason, message)``.

        Subclasses must implement it, leave ``cost.transform`` at the returned
        parameters, and report every iteration through ``recorder.record``.
        """
        raise NotImplementedError(f"{type(self).__name__}._run()")

    def _check_scales_spec(self, scales: Any) -> Any:
        from .scales import ScalesEstimator

        where = f"{type(self).__name__}()"
        if scales is None or isinstance(scales, ScalesEstimator):
            return scales
        if isinstance(scales, str):
            return check_choice(scales, self._scales_choices, where=where, name="scales")
        try:
            arr = np.array(scales, dtype=np.float64, copy=True).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{where}: 'scales' must be None, an array of positive values, a ScalesEstimator "
                f"or one of {', '.join(repr(c) for c in self._scales_choices)}; got {scales!r}."
            ) from exc
        _check_scale_values(arr, where)
        return arr

    def _estimator(self) -> ScalesEstimator | None:
        """The estimator named by the scales specification (None for arrays)."""
        from .scales import IndexShiftScales, JacobianScales, PhysicalShiftScales, ScalesEstimator

        spec = self._scales_spec
        if isinstance(spec, ScalesEstimator):
            return spec
        if spec == "physical_shift":
            return PhysicalShiftScales()
        if spec == "index_shift":
            return IndexShiftScales()
        if spec == "jacobian":
            return JacobianScales()
        return None

    def _resolve_scales(self, cost: CostFunction) -> NDArray[np.float64]:
        where = f"{type(self).__name__}.optimize()"
        n_par = cost.transform.n_parameters
        spec = self._scales_spec
        if spec is None:
            return np.ones(n_par)
        if isinstance(spec, np.ndarray):
            if spec.size != n_par:
                raise ShapeError(
                    f"{where}: 'scales' must have one value per transform parameter ({n_par}); "
                    f"got {spec.size}."
                )
            return spec.copy()
        estimator = self._estimator()
        assert estimator is not None
        scales = estimator.estimate(cost.transform, _domain_of(cost))
        _check_scale_values(scales, where)
        return scales


def _check_scale_values(arr: NDArray[np.float64], where: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError(f"{where}: 'scales' must be finite; got {arr.tolist()}.")
    if np.any(arr <= _MIN_SCALE):
        raise InvalidInputError(
            f"{where}: every scale must be > {_MIN_SCALE:.3g} (scales divide the gradient); "
            f"got {arr.tolist()}."
        )


def check_learning_rate_mode(value: Any, where: str) -> str | None:
    """Validate an ``estimate_learning_rate`` option (None, 'once', 'each_iteration')."""
    if value is None:
        return None
    return check_choice(value, ("once", "each_iteration"), where=where, name="estimate_learning_rate")


def check_positive_float(value: Any, *, where: str, name: str, allow_none: bool = False,
                         allow_zero: bool = False) -> float | None:
    """Validate a positive (or non-negative) finite float option."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v >= 0.0 if allow_zero else v > 0.0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        extra = " or None" if allow_none else ""
        raise InvalidInputError(f"{where}: '{name}' must be a finite number {bound}{extra}; got {value!r}.")
    return float(value)

