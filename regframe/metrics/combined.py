"""Weighted sums of metrics: :class:`CombinedMetric` and :func:`landmark_objective`.

``value = sum_k w_k metric_k``; the gradient is the same weighted sum of the
true gradients, so the sum follows the metric contract and plugs into
:class:`~regframe.registration.RegistrationMethod` and every optimizer.  All
terms evaluate the *same* transform object (the one given to
:meth:`CombinedMetric.initialize`).  An image metric plus ground control
points (elastix's multi-metric with ``CorrespondingPointsEuclideanDistance``)
is ``landmark_objective(MattesMutualInformation(), fixed_pts, moving_pts)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError, NotInitializedError
from ..image import Image
from ..interpolators import Interpolator
from ..transforms.base import Transform
from .base import Metric
from .pointset import LandmarkDistance
from .sampling import Sampler

__all__ = ["CombinedMetric", "landmark_objective"]


class CombinedMetric(Metric):
    """``value = sum_k weight_k * metric_k`` (a drop-in metric).

    Parameters
    ----------
    terms : sequence of (Metric, weight)
        The metrics and their weights (finite, >= 0).  A weight of ``None``
        is resolved at the first :meth:`initialize` so that the term pulls as
        hard as the first term at the start: ``w_k = ||g_0|| / ||g_k||``, the
        ratio of the gradient norms at the initial parameters (``w_k = 1`` when
        ``g_k = 0``).  The first weight must be a number.

    Notes
    -----
    :meth:`initialize` forwards its arguments to every term.  The virtual
    domain and sample points (used by optimizers for scales) come from the
    first term that has a virtual domain.  The last evaluation's term values
    are kept in :attr:`last_values`.
    """

    def __init__(self, terms: Sequence[tuple[Metric, float | None]]) -> None:
        where = "CombinedMetric()"
        try:
            pairs = [(m, w) for m, w in terms]
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{where}: 'terms' must be a sequence of (metric, weight) pairs; got {terms!r}."
            ) from exc
        if not pairs:
            raise InvalidInputError(f"{where}: at least one (metric, weight) pair expected; got none.")
        for m, w in pairs:
            if not isinstance(m, Metric):
                raise InvalidInputError(f"{where}: every term must be a regframe Metric; got {type(m).__name__}.")
            if w is not None and not (isinstance(w, (int, float, np.integer, np.floating))
                                      and math.isfinite(float(w)) and float(w) >= 0.0):
                raise InvalidInputError(f"{where}: weights must be finite numbers >= 0 (or None); got {w!r}.")
        if pairs[0][1] is None:
            raise InvalidInputError(f"{where}: the first weight must be a number (others are relative to it); got None.")
        self.metrics = [m for m, _ in pairs]
        self._spec = [None if w is None else float(w) for _, w in pairs]
        self._weights: tuple[float, ...] | None = (
            None if any(w is None for w in self._spec) else tuple(self._spec)  # type: ignore[arg-type]
        )
        self._transform: Transform | None = None
        self.last_values: tuple[float, ...] = ()

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
    ) -> CombinedMetric:
        """Initialise every term with the same arguments; resolve pending weights."""
        for m in self.metrics:
            m.initialize(fixed, moving, transform, interpolator=interpolator, sampler=sampler,
                         fixed_mask=fixed_mask, moving_mask=moving_mask)
        self._transform = transform
        if self._weights is None:
            self._weights = self._resolve_weights(fixed)
        return self

    def _resolve_weights(self, fixed: Image | None) -> tuple[float, ...]:
        """Pending weights: ``||g_0|| / ||g_k||`` at the current parameters (1 when ``g_k = 0``)."""
        norms = [float(np.linalg.norm(m.value_and_gradient()[1])) for m in self.metrics]
        first = self._spec[0] * norms[0]  # type: ignore[operator]
        return tuple(w if w is not None else (first / n if n > 0 else 1.0) for w, n in zip(self._spec, norms))

    # ---------------------------------------------------------------- accessors
    @property
    def weights(self) -> tuple[float, ...] | None:
        """Resolved weights (``None`` until :meth:`initialize` when one is pending)."""
        return self._weights

    @property
    def transform(self) -> Transform:
        """The transform being evaluated."""
        if self._transform is None:
            raise NotInitializedError("CombinedMetric: not initialised; call initialize(fixed, moving, transform) first.")
        return self._transform

    def _domain_term(self) -> Metric:
        for m in self.metrics:
            if getattr(m, "virtual_domain", None) is not None:
                return m
        return self.metrics[0]

    @property
    def virtual_domain(self) -> Image | None:
        """Virtual domain of the first term that has one."""
        return getattr(self._domain_term(), "virtual_domain", None)

    @property
    def sample_points(self) -> NDArray[np.float64] | None:
        """Sample points of the term giving the virtual domain."""
        return getattr(self._domain_term(), "sample_points", None)

    @property
    def n_samples(self) -> int:
        """Samples of the term giving the virtual domain."""
        return int(getattr(self._domain_term(), "n_samples", 0))

    # --------------------------------------------------------------- evaluation
    def value(self) -> float:
        """Weighted sum of the term values."""
        weights = self._require_weights("value")
        values = tuple(float(m.value()) for m in self.metrics)
        self.last_values = values
        return float(sum(w * v for w, v in zip(weights, values)))

    def value_and_gradient(self) -> tuple[float, NDArray[np.float64]]:
        """Weighted sums of the values and of the true gradients."""
        weights = self._require_weights("value_and_gradient")
        total = 0.0
        grad = np.zeros(self.transform.n_parameters)
        values = []
        for w, m in zip(weights, self.metrics):
            v, g = m.value_and_gradient()
            values.append(float(v))
            total += w * float(v)
            grad += w * np.asarray(g, dtype=np.float64)
        self.last_values = tuple(values)
        return total, grad

    def _require_weights(self, method: str) -> tuple[float, ...]:
        if self._weights is None or self._transform is None:
            raise NotInitializedError(
                f"CombinedMetric.{method}(): not initialised; call initialize(fixed, moving, transform) first."
            )
        return self._weights

    def __repr__(self) -> str:
        spec = self._weights if self._weights is not None else tuple(self._spec)
        return "CombinedMetric([" + ", ".join(f"({m!r}, {w})" for m, w in zip(self.metrics, spec)) + "])"


class _LandmarkObjective(CombinedMetric):
    """Image metric + landmarks whose default weight holds the landmarks to about a voxel."""

    def _resolve_weights(self, fixed: Image | None) -> tuple[float, ...]:
        weights = list(super()._resolve_weights(fixed))
        if self._spec[1] is None:
            rms = float(np.sqrt(self.metrics[1].value()))
            reference = float(np.mean(fixed.spacing)) if isinstance(fixed, Image) else 1.0
            if rms > 0:
                weights[1] *= rms / reference
        return tuple(weights)


def landmark_objective(
    data_metric: Metric,
    fixed_landmarks: ArrayLike,
    moving_landmarks: ArrayLike,
    weight: float | None = None,
) -> CombinedMetric:
    """An image metric plus paired landmarks (ground control points).

    ``value = data_metric + weight * LandmarkDistance(fixed_landmarks, moving_landmarks)``.

    Parameters
    ----------
    data_metric : Metric
        The image term (e.g. ``MattesMutualInformation()``).
    fixed_landmarks, moving_landmarks : (n, ndim) array_like
        Corresponding physical points: ``T(fixed_landmarks[i]) ~ moving_landmarks[i]``.
    weight : float, optional
        Weight of the landmark term (mean squared distance in mm^2).
        Default, resolved when the objective is first initialised (in
        :class:`~regframe.registration.RegistrationMethod`: on the coarsest
        level): ``weight = (||g_data|| / ||g_landmarks||) * (r0 / h)``, with
        the gradient norms and the landmark RMS error ``r0`` at the initial
        parameters and ``h`` the mean voxel spacing of the fixed image given
        to ``initialize``.  The landmark pull grows with the landmark error,
        so this makes the landmarks pull as hard as the image term did at the
        start once they are off by about one voxel ``h``: far from them the
        landmarks decide the way (a wrong optimum of the image term cannot
        hold the landmarks far off), within a voxel or so the image term does
        the fine alignment.  (Balancing the gradients at the start alone,
        ``r0 / h = 1``, leaves equilibria at a large fraction of ``r0``: on
        the multi-modal brain pair rotated by 70 degrees it stopped 28 mm
        off.)  Without landmark error at the start the balanced weight is
        used.  The resolved weight is kept for later levels and runs (see
        ``CombinedMetric.weights``).

    Returns
    -------
    CombinedMetric
    """
    return _LandmarkObjective([(data_metric, 1.0), (LandmarkDistance(fixed_landmarks, moving_landmarks), weight)])
