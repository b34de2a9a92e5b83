"""Regularized cost: an image metric plus weighted transform regularizers.

``cost = data_metric + sum_i weight_i * R_i(transform)``

:class:`RegularizedMetric` follows the metric contract (``initialize``,
``value``, ``value_and_gradient`` with the **true** gradient), so it plugs
into :class:`~regframe.registration.RegistrationMethod` and every optimizer
unchanged.  Regularizers act on the optimised B-spline members of the
transform (a :class:`~regframe.transforms.BSplineTransform`, or the B-splines
among the optimised members of a
:class:`~regframe.transforms.CompositeTransform`, e.g. a linear initial
transform followed by a B-spline); other parameters get a zero regularizer
gradient.

* :class:`BendingEnergy` - thin-plate bending energy of the B-spline, closed
  form on the control grid (``O(parameters)``, independent of the image size),
  analytic gradient.
* :class:`FoldingPenalty` - mean of ``(max(0, epsilon - det J(x)))**2`` over
  points of a regular grid on the fixed image: zero for any deformation whose
  Jacobian determinant stays above ``epsilon``, growing quadratically as the
  map approaches folding.  Analytic gradient through the cofactor matrix.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import check_positive_int
from ..errors import InvalidInputError, NotInitializedError
from ..image import Image
from ..interpolators import Interpolator
from ..transforms.base import Transform
from ..transforms.bspline import BSplineTransform
from ..transforms.composite import CompositeTransform
from .base import Metric
from .sampling import Sampler

__all__ = [
    "Regularizer",
    "BendingEnergy",
    "FoldingPenalty",
    "RegularizedMetric",
    "bspline_blocks",
    "default_regularization_weight",
]


def bspline_blocks(transform: Transform) -> list[tuple[int, BSplineTransform]]:
    """Optimised B-spline members of ``transform`` and their offsets in its parameter vector.

    Parameters
    ----------
    transform : Transform
        A :class:`BSplineTransform` (offset 0) or a :class:`CompositeTransform`
        (optimised members are concatenated last-added first, ITK's order;
        nested composites are searched recursively).

    Returns
    -------
    list of (offset, BSplineTransform)
        The members themselves (not copies), so they follow the parameters the
        optimizer sets.  Empty when there is no optimised B-spline.
    """
    if isinstance(transform, BSplineTransform):
        return [(0, transform)]
    if not isinstance(transform, CompositeTransform):
        return []
    out: list[tuple[int, BSplineTransform]] = []
    offset = 0
    for index in transform._optimized_reversed():
        member = transform[index]
        for sub_offset, bs in bspline_blocks(member):
            out.append((offset + sub_offset, bs))
        offset += member.n_parameters
    return out


class Regularizer(ABC):
    """A penalty on the transform, ``R(transform) >= 0``, with its true gradient.

    Subclasses must implement :meth:`value_and_gradient`; they may override
    :meth:`initialize` (called once per registration level with the fixed
    image and the transform being optimised).
    """

    def initialize(self, transform: Transform, fixed: Image) -> Regularizer:
        """Bind to a level's transform and fixed image; returns ``self``."""
        return self

    def value(self, transform: Transform) -> float:
        """Penalty only (default: the first element of :meth:`value_and_gradient`)."""
        return self.value_and_gradient(transform)[0]

    @abstractmethod
    def value_and_gradient(self, transform: Transform) -> tuple[float, NDArray[np.float64]]:
        """Penalty and ``d R / d parameters`` (length ``transform.n_parameters``)."""
        raise NotImplementedError(f"{type(self).__name__}.value_and_gradient()")


class BendingEnergy(Regularizer):
    """Thin-plate bending energy of the B-spline displacement (closed form).

    ``R = (1/|Omega|) int_Omega sum_i sum_{a,b} (d^2 u_i / dx_a dx_b)^2 dx``
    over the transform domain of each optimised B-spline (see
    :meth:`~regframe.transforms.BSplineTransform.bending_energy_and_gradient`),
    summed over the B-spline members.  Exact (no sampling), ``O(parameters)``
    per evaluation, gradient analytic (``2 A c``).

    Parameters
    ----------
    normalize : bool, default True
        Divide by the domain volume (mean energy density in ``1/mm^2``):
        comparable across grid levels and with elastix's
        ``TransformBendingEnergyPenalty``.
    """

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = bool(normalize)

    def value_and_gradient(self, transform: Transform) -> tuple[float, NDArray[np.float64]]:
        grad = np.zeros(transform.n_parameters)
        energy = 0.0
        for offset, bs in bspline_blocks(transform):
            e, g = bs.bending_energy_and_gradient(self.normalize)
            energy += e
            grad[offset : offset + g.size] += g
        return float(energy), grad

    def __repr__(self) -> str:
        return f"BendingEnergy(normalize={self.normalize})"


def _b3(u: NDArray[np.float64]) -> NDArray[np.float64]:
    a = np.abs(u)
    return np.where(a < 1.0, (4.0 - 6.0 * a**2 + 3.0 * a**3) / 6.0, np.where(a < 2.0, (2.0 - a) ** 3 / 6.0, 0.0))


def _b3_derivative(u: NDArray[np.float64]) -> NDArray[np.float64]:
    a = np.abs(u)
    return np.where(a < 1.0, u * (1.5 * a - 2.0), np.where(a < 2.0, -0.5 * np.sign(u) * (2.0 - a) ** 2, 0.0))


def _weight_gradients(bs: BSplineTransform, points: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray]:
    """Support of each point and the physical gradients of its ``4**d`` weights.

    Returns ``indices (n, 4**d)``, ``grad_w (n, 4**d, d)`` (``d w_k / d x``)
    and ``inside (n,)``, with the node order of :meth:`BSplineTransform.support`
    (axis 0 fastest).
    """
    d = bs.ndim
    sup = bs.support(points)
    p2i = bs._p2i
    ci = (points - bs._grid_origin) @ p2i.T
    start = np.floor(ci + 0.5 - 1.5)
    j = np.arange(4, dtype=np.float64)
    u = ci[:, :, None] - start[:, :, None] - j[None, None, :]  # (n, d, 4)
    w1 = _b3(u)
    dw1 = _b3_derivative(u)
    n = points.shape[0]
    nsup = 4**d
    grad_idx = np.zeros((n, nsup, d))  # d w / d ci_a
    for m in range(nsup):
        digits = [(m // 4**a) % 4 for a in range(d)]
        for a in range(d):
            prod = np.ones(n)
            for b in range(d):
                prod = prod * (dw1[:, b, digits[b]] if b == a else w1[:, b, digits[b]])
            grad_idx[:, m, a] = prod
    grad_w = grad_idx @ p2i  # d w / d x = (d w / d ci) @ p2i
    grad_w[~sup.inside] = 0.0
    return sup.indices, grad_w, sup.inside


class FoldingPenalty(Regularizer):
    """Penalty on Jacobian determinants below ``epsilon`` (discourages folding).

    ``R = (1/n) sum_x phi(det J_B(x))``, ``phi(t) = max(0, epsilon - t)**2``,
    over ``n`` points of a regular grid on the fixed image (every
    ``stride``-th voxel centre per axis), for each optimised B-spline ``B``
    (``J_B`` is its spatial Jacobian; a linear transform composed with it
    only multiplies the determinant by a constant).

    The gradient uses ``d det J / d J = cof(J)`` and ``d J_ia / d c_{k,i} =
    d w_k / d x_a``: ``d R / d c_{k,i} = (1/n) sum_x phi'(det J) sum_a
    cof(J)_{ia} d w_k(x) / d x_a`` (scattered with ``np.bincount``,
    deterministic).  Cost ``O(n * 4**d * d)``.

    Parameters
    ----------
    epsilon : float, default 0.1
        Determinants at or above this value are not penalised.
    stride : int, default 2
        Voxel stride of the evaluation grid on the fixed image.
    """

    def __init__(self, epsilon: float = 0.1, stride: int = 2) -> None:
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
            raise InvalidInputError(f"FoldingPenalty(): 'epsilon' must be a finite number > 0; got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.stride = check_positive_int(stride, where="FoldingPenalty()", name="stride")
        self._points: NDArray[np.float64] | None = None

    def initialize(self, transform: Transform, fixed: Image) -> FoldingPenalty:
        idx = np.stack(
            np.meshgrid(*[np.arange(0, n, self.stride) for n in fixed.size], indexing="ij"), axis=-1
        ).reshape(-1, fixed.ndim)
        self._points = np.ascontiguousarray(fixed.index_to_physical(idx.astype(np.float64)))
        return self

    @property
    def points(self) -> NDArray[np.float64]:
        """Evaluation points (a copy)."""
        if self._points is None:
            raise NotInitializedError(
                "FoldingPenalty.points: not initialised; call initialize(transform, fixed) first."
            )
        return self._points.copy()

    def value_and_gradient(self, transform: Transform) -> tuple[float, NDArray[np.float64]]:
        if self._points is None:
            raise NotInitializedError(
                "FoldingPenalty.value_and_gradient(): not initialised; call initialize(transform, "
                "fixed) first (RegularizedMetric.initialize does it)."
            )
        pts = self._points
        n = pts.shape[0]
        grad = np.zeros(transform.n_parameters)
        total = 0.0
        for offset, bs in bspline_blocks(transform):
            jac = bs.jacobian_position(pts)
            det = np.linalg.det(jac)
            short = np.maximum(self.epsilon - det, 0.0)
            total += float(np.sum(short * short)) / n
            active = np.flatnonzero(short > 0.0)
            if active.size == 0:
                continue
            ja = jac[active]
            # cofactor matrix cof(J) = det(J) J^-T, computed without inverting (J may be singular)
            cof = _cofactor(ja)
            dphi = -2.0 * short[active] / n
            idx, grad_w, _ = _weight_gradients(bs, np.ascontiguousarray(pts[active]))
            ng = bs.n_control_points
            for i in range(bs.ndim):
                contrib = dphi[:, None] * np.einsum("ma,mka->mk", cof[:, i, :], grad_w)
                part = np.bincount(idx.ravel(), weights=contrib.ravel(), minlength=ng)
                grad[offset + i * ng : offset + (i + 1) * ng] += part
        return total, grad

    def __repr__(self) -> str:
        return f"FoldingPenalty(epsilon={self.epsilon}, stride={self.stride})"


def _cofactor(jac: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cofactor matrices ``C`` with ``d det J / d J_ia = C_ia`` for ``(n, d, d)`` stacks (d = 2, 3)."""
    d = jac.shape[1]
    if d == 2:
        c = np.empty_like(jac)
        c[:, 0, 0] = jac[:, 1, 1]
        c[:, 0, 1] = -jac[:, 1, 0]
        c[:, 1, 0] = -jac[:, 0, 1]
        c[:, 1, 1] = jac[:, 0, 0]
        return c
    c = np.empty_like(jac)
    for i in range(3):
        for a in range(3):
            i1, i2 = (i + 1) % 3, (i + 2) % 3
            a1, a2 = (a + 1) % 3, (a + 2) % 3
            c[:, i, a] = jac[:, i1, a1] * jac[:, i2, a2] - jac[:, i1, a2] * jac[:, i2, a1]
    return c


#: Default stiffness of the bending energy relative to the data term's: the weight makes the
#: penalty's mean curvature (Hessian trace per parameter) this many times the data term's at the
#: start of a level (see :func:`default_regularization_weight`).
DEFAULT_RELATIVE_STIFFNESS = 2.0

#: Step of the finite-difference curvature probe, in voxels of the fixed image.
_PROBE_STEP_VOXELS = 0.05


def default_regularization_weight(
    metric: Metric,
    regularizer: Regularizer,
    transform: Transform,
    fixed: Image,
    *,
    relative_stiffness: float = DEFAULT_RELATIVE_STIFFNESS,
    seed: int = 0,
) -> float:
    """Default weight ``lambda`` of a quadratic regularizer, scaled to the data term's curvature.

    ``lambda = relative_stiffness * tr(H_data) / tr(H_R)``, both Hessian traces
    taken at the transform's current parameters over its B-spline
    coefficients (:func:`bspline_blocks`) and estimated with one Rademacher
    probe ``v`` (Hutchinson's estimator): ``tr(H) ~ v . (grad(p + h v) -
    grad(p)) / h``, one extra data-gradient evaluation.  The weight is thus
    invariant to the intensity range, the metric (mean squares, Mattes,
    correlation), the number of samples and the control-point spacing (the
    bending energy's curvature scales with ``spacing**-4``): with
    ``relative_stiffness = 1`` the penalty resists a coefficient change as
    strongly, on average, as the data term at the start of the level.
    A pair the linear stage already aligned then moves only where the data
    term's pull exceeds its own noise, while a real deformation (whose pull
    is far larger) is followed.

    Parameters
    ----------
    metric : Metric
        The initialised data metric, bound to ``transform``.
    regularizer : Regularizer
        Quadratic in the coefficients (e.g. :class:`BendingEnergy`).
    transform : Transform
        The transform being optimised (its parameters are restored).
    fixed : Image
        Fixed image of the level (sets the probe step: ``0.05`` voxel).
    relative_stiffness : float, default DEFAULT_RELATIVE_STIFFNESS
    seed : int
        Seed of the probe vector (the weight is reproducible).

    Returns
    -------
    float
        ``lambda >= 0``; 0 when the transform has no B-spline coefficients.
        When the data term is locally flat or concave along the probe, its
        curvature is replaced by its magnitude.
    """
    if not (math.isfinite(relative_stiffness) and relative_stiffness >= 0.0):
        raise InvalidInputError(
            f"default_regularization_weight(): 'relative_stiffness' must be finite and >= 0; got "
            f"{relative_stiffness!r}."
        )
    blocks = bspline_blocks(transform)
    if not blocks or relative_stiffness == 0.0:
        return 0.0
    p0 = transform.parameters.copy()
    probe = np.zeros_like(p0)
    rng = np.random.default_rng(seed)
    for offset, bs in blocks:
        probe[offset : offset + bs.n_parameters] = rng.choice((-1.0, 1.0), bs.n_parameters)
    h = _PROBE_STEP_VOXELS * float(np.min(fixed.spacing))
    try:
        g0 = np.array(metric.value_and_gradient()[1], dtype=np.float64, copy=True)
        r0 = np.array(regularizer.value_and_gradient(transform)[1], dtype=np.float64, copy=True)
        transform.parameters = p0 + h * probe
        g1 = np.asarray(metric.value_and_gradient()[1], dtype=np.float64)
        r1 = np.asarray(regularizer.value_and_gradient(transform)[1], dtype=np.float64)
    finally:
        transform.parameters = p0
    data_curvature = abs(float(probe @ (g1 - g0)) / h)
    r_curvature = abs(float(probe @ (r1 - r0)) / h)
    if not (math.isfinite(data_curvature) and r_curvature > 0.0 and math.isfinite(r_curvature)):
        return 0.0
    return relative_stiffness * data_curvature / r_curvature


class RegularizedMetric(Metric):
    """``value = metric + sum_i weight_i * regularizer_i`` (a drop-in metric).

    Parameters
    ----------
    metric : Metric
        The data term (initialised by :meth:`initialize`).
    regularizers : Regularizer or sequence of Regularizer, default BendingEnergy()
    weight : float, sequence of (float or None), or None, default None
        One weight per regularizer (a single float applies to all).  A
        ``None`` entry means :func:`default_regularization_weight` of the data
        metric, resolved in :meth:`initialize` (see :attr:`weights`).
        ``weight=None``: the default for the first regularizer and 1 for the
        others.  The default is resolved again at every :meth:`initialize`
        (every registration level), from the data term's curvature there.
    relative_stiffness : float, default DEFAULT_RELATIVE_STIFFNESS
        Stiffness of a default-weighted regularizer relative to the data
        term (see :func:`default_regularization_weight`).

    Notes
    -----
    The gradient is the true gradient of the total cost: the data metric's
    gradient plus ``weight_i * d R_i / d p`` (each analytic).  Evaluation cost
    is that of the data metric plus ``O(parameters)`` for the bending energy.
    The last evaluation's parts are kept in :attr:`last_data_value` and
    :attr:`last_penalties`.

    Examples
    --------
    >>> from regframe.metrics import MeanSquares
    >>> cost = RegularizedMetric(MeanSquares(), BendingEnergy(), weight=10.0)
    >>> cost.weights
    (10.0,)
    """

    def __init__(
        self,
        metric: Metric,
        regularizers: Regularizer | Sequence[Regularizer] | None = None,
        weight: float | Sequence[float] | None = None,
        *,
        relative_stiffness: float = DEFAULT_RELATIVE_STIFFNESS,
    ) -> None:
        where = "RegularizedMetric()"
        if not (isinstance(relative_stiffness, (int, float)) and math.isfinite(relative_stiffness)
                and relative_stiffness >= 0):
            raise InvalidInputError(
                f"{where}: 'relative_stiffness' must be a finite number >= 0; got {relative_stiffness!r}."
            )
        self.relative_stiffness = float(relative_stiffness)
        if not isinstance(metric, Metric) or isinstance(metric, RegularizedMetric):
            raise InvalidInputError(
                f"{where}: 'metric' must be a regframe data Metric (MeanSquares, "
                f"MattesMutualInformation, ...); got {type(metric).__name__}."
            )
        if regularizers is None:
            regs: list[Regularizer] = [BendingEnergy()]
        elif isinstance(regularizers, Regularizer):
            regs = [regularizers]
        else:
            regs = list(regularizers)
        if not regs or not all(isinstance(r, Regularizer) for r in regs):
            raise InvalidInputError(
                f"{where}: 'regularizers' must be a Regularizer or a non-empty sequence of them; got "
                f"{regularizers!r}."
            )
        if weight is None or isinstance(weight, (int, float, np.floating, np.integer)):
            weights: list[float | None] = [None if weight is None else float(weight)] + [
                1.0 if weight is None else float(weight)
            ] * (len(regs) - 1)
        else:
            weights = [None if w is None else float(w) for w in weight]
            if len(weights) != len(regs):
                raise InvalidInputError(
                    f"{where}: give one weight per regularizer ({len(regs)}); got {len(weights)}."
                )
        for w in weights:
            if w is not None and not (math.isfinite(w) and w >= 0.0):
                raise InvalidInputError(f"{where}: weights must be finite and >= 0; got {weight!r}.")
        self.metric = metric
        self.regularizers = regs
        self._weight_spec = weights
        self._weights: tuple[float, ...] | None = (
            None if any(w is None for w in weights) else tuple(float(w) for w in weights)  # type: ignore[arg-type]
        )
        self._transform: Transform | None = None
        self.last_data_value = math.nan
        self.last_penalties: tuple[float, ...] = ()

    # ----------------------------------------------------------------- set-up
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
    ) -> RegularizedMetric:
        """Initialise the data metric, resolve default weights, initialise the regularizers."""
        self.metric.initialize(
            fixed, moving, transform, interpolator=interpolator, sampler=sampler,
            fixed_mask=fixed_mask, moving_mask=moving_mask,
        )
        for reg in self.regularizers:
            reg.initialize(transform, fixed)
        if any(w is None for w in self._weight_spec):
            self._weights = tuple(
                default_regularization_weight(self.metric, reg, transform, fixed, relative_stiffness=self.relative_stiffness)
                if w is None else float(w)
                for w, reg in zip(self._weight_spec, self.regularizers)
            )
        self._transform = transform
        return self

    def _release_buffers(self) -> None:
        """Forward to the data metric (see :meth:`ImageMetric._release_buffers`)."""
        release = getattr(self.metric, "_release_buffers", None)
        if release is not None:
            release()

    # ------------------------------------------------------------ accessors
    @property
    def weights(self) -> tuple[float, ...] | None:
        """Resolved weights (``None`` until :meth:`initialize` when a default is pending)."""
        return self._weights

    @property
    def transform(self) -> Transform:
        """The transform being evaluated."""
        if self._transform is None:
            raise NotInitializedError(
                "RegularizedMetric.transform: not initialised; call initialize(fixed, moving, transform) first."
            )
        return self._transform

    def __getattr__(self, name: str) -> Any:
        # pass read-only data-metric attributes through (n_samples, sample_points, n_valid,
        # fixed, moving, virtual_domain, ...); only called when normal lookup fails
        if name.startswith("_") or name in ("metric", "regularizers"):
            raise AttributeError(name)
        return getattr(self.metric, name)

    # -------------------------------------------------------------- evaluation
    def value(self) -> float:
        """Data term plus the weighted penalties at the transform's current parameters."""
        t = self.transform
        data = float(self.metric.value())
        pens = tuple(float(r.value(t)) for r in self.regularizers)
        self.last_data_value, self.last_penalties = data, pens
        return data + sum(w * p for w, p in zip(self._weights or (), pens))

    def value_and_gradient(self) -> tuple[float, NDArray[np.float64]]:
        """Total cost and its true gradient ``d cost / d parameters``."""
        t = self.transform
        data, grad = self.metric.value_and_gradient()
        grad = np.array(grad, dtype=np.float64, copy=True)
        pens = []
        for w, reg in zip(self._weights or (), self.regularizers):
            p, g = reg.value_and_gradient(t)
            pens.append(float(p))
            if w != 0.0:
                grad += w * g
        self.last_data_value, self.last_penalties = float(data), tuple(pens)
        return float(data) + sum(w * p for w, p in zip(self._weights or (), pens)), grad

    def __repr__(self) -> str:
        return f"RegularizedMetric({self.metric!r}, {self.regularizers!r}, weight={self._weights or self._weight_spec})"
