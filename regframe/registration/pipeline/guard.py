"""The never-worse guard: one score for any mapping, on one sample set at full resolution.

The score is the data term of the stage being judged (no regularizers), on at
most 50 000 seeded samples of the full-resolution fixed image, so the start,
every stage and every restart are compared on exactly the same samples: voxel
centres, or jittered points for a stage that optimises jittered samples
(:meth:`~regframe.registration.pipeline.base.Stage.judged_jittered`).  A mapping
that leaves (almost) no overlap scores ``inf``.
"""

from __future__ import annotations

import math
from typing import Any

from ...errors import NoOverlapError
from ...metrics import FullSampler, RandomSampler
from ...metrics.base import Metric
from ...transforms.base import Transform
from ...transforms.linear import TranslationTransform
from ..defaults import make_metric
from .base import RegistrationInputs, Stage

__all__ = ["GuardScore", "worse"]

#: Samples of the guard's score.
GUARD_SAMPLES = 50_000


#: Relative difference of two scores below which neither counts as worse: registrations
#: optimise jittered samples on several levels, so a result at the start's optimum scores a
#: few 1e-4 above it on the guard's samples (seen: mse 6.3897 -> 6.3954 from the true transform).
RELATIVE_TOLERANCE = 1e-3


def worse(after: float, before: float) -> bool:
    """Whether ``after`` is worse than ``before`` beyond :data:`RELATIVE_TOLERANCE` (lower is better)."""
    if math.isnan(after):
        return True
    if math.isinf(before) and math.isinf(after):
        return False
    return after > before + RELATIVE_TOLERANCE * abs(before) + 1e-12


class GuardScore:
    """``score(mapping) -> float``: the data term of ``metric`` at full resolution (lower is better)."""

    def __init__(self, inputs: RegistrationInputs, metric: str | Metric, seed: int = 0, *,
                 jitter: bool = False) -> None:
        fixed = inputs.fixed
        assert fixed is not None
        n = fixed.n_voxels
        self.inputs = inputs
        self.sampler = (FullSampler(jitter=jitter, seed=seed) if n <= GUARD_SAMPLES
                        else RandomSampler(GUARD_SAMPLES / n, seed=seed, jitter=jitter))
        self.metric = Stage.template(metric) if isinstance(metric, Metric) else make_metric(
            metric, n_samples=min(n, GUARD_SAMPLES))
        self._memo: list[tuple[Any, float]] = []

    def of_chain(self, chain: Any) -> float:
        """The score of a :class:`~regframe.registration.pipeline.chain.TransformChain`'s mapping.

        Chains are immutable, and the last few scored are remembered: a stage's
        start is the chain the stage before ended with, and the run's end is the
        last stage's.
        """
        for known, value in self._memo:
            if known is chain:
                return value
        value = self(chain.as_transform())
        self._memo = [(chain, value), *self._memo[:3]]
        return value

    def __call__(self, mapping: Transform | None) -> float:
        inputs = self.inputs
        assert inputs.fixed is not None and inputs.moving is not None
        t = mapping if mapping is not None else TranslationTransform(inputs.fixed.ndim)
        self.metric.initialize(inputs.fixed, inputs.moving, t, sampler=self.sampler,
                               fixed_mask=inputs.fixed_mask, moving_mask=inputs.moving_mask)
        try:
            return float(self.metric.value())
        except NoOverlapError:
            return math.inf


def metric_of(stage: Any) -> str | Metric | None:
    """The data metric a stage optimises (``None`` for stages without an image metric)."""
    return getattr(stage, "metric", None)
