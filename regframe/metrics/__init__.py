"""Image-to-image metrics, samplers and the deterministic metric engine.

Every metric is *minimised* and returns the **true** gradient
``d value / d parameters`` (ITK v4 returns its negative; see
:meth:`Metric.itk_derivative`).
"""

from __future__ import annotations

from .base import ImageMetric, Metric, PointwiseMetric, SampleBatch
from .combined import CombinedMetric, landmark_objective
from .correlation import NormalizedCorrelation
from .mattes import MattesMutualInformation
from .mean_squares import MeanSquares
from .pointset import ClosestPointDistance, LandmarkDistance, PointSetMetric
from .sampling import FullSampler, RandomSampler, RegularSampler, Sampler, SampleSet

__all__ = [
    "Metric",
    "ImageMetric",
    "PointwiseMetric",
    "SampleBatch",
    "MeanSquares",
    "NormalizedCorrelation",
    "MattesMutualInformation",
    "PointSetMetric",
    "LandmarkDistance",
    "ClosestPointDistance",
    "CombinedMetric",
    "landmark_objective",
    "Sampler",
    "SampleSet",
    "FullSampler",
    "RegularSampler",
    "RandomSampler",
]
