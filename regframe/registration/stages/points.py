"""The point-set stage: robust ICP (:func:`~regframe.points.register_points`) on the chain.

A point-set kind is a stage like any other: it needs ``fixed_points`` and
``moving_points`` in the :class:`~regframe.registration.pipeline.RegistrationInputs`,
takes over a linear last link of the chain it can represent (or composes on the
chain), and reports its rms distance and inlier fraction in the stage's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...optimizers.base import StopReason
from ..method import RegistrationResult
from ..pipeline.base import RegistrationInputs, Stage, StageContext, StageInfo, StageResult
from ..pipeline.chain import TransformChain

__all__ = ["PointSetStage"]


@dataclass(frozen=True)
class PointSetStage(Stage):
    """ICP of ``moving_points`` to ``fixed_points`` (options of :func:`~regframe.points.register_points`).

    With a chain to start from (e.g. an earlier stage's linear result), the
    initialization is that chain's last link (``initialization`` is then ignored).
    """

    kind: ClassVar[str] = "points"
    requires: ClassVar[frozenset[str]] = frozenset({"fixed_points", "moving_points"})
    transform: str = "rigid"
    method: str = "point_to_point"
    robust: str = "tukey"
    initialization: str = "global"
    n_iterations: int = 50
    tolerance: float = 1e-5
    max_distance: float | None = None
    trim_fraction: float = 0.7
    n_neighbors: int = 10

    def describe(self, inputs: RegistrationInputs) -> StageInfo:
        return StageInfo(f"points {self.transform}", 1, self.n_iterations)

    def run(self, ctx: StageContext, chain: TransformChain) -> StageResult:
        from ...points import register_points  # regframe.points builds on registration.initializers

        inputs = ctx.inputs
        start = chain.absorbable(self.transform)
        base = chain.base(start is not None)
        fixed = inputs.fixed_points
        if base is not None:  # compose: register the chain's image of the fixed points
            fixed = base.transform_points(fixed)  # type: ignore[arg-type]
        res = register_points(
            fixed, inputs.moving_points, self.transform, method=self.method, robust=self.robust,
            initialization="none" if start is not None else self.initialization, initial_transform=start,
            n_iterations=self.n_iterations, tolerance=self.tolerance, max_distance=self.max_distance,
            trim_fraction=self.trim_fraction, n_neighbors=self.n_neighbors, seed=ctx.seed,
        )
        result = RegistrationResult(
            transform=res.transform, optimized_transform=res.transform, final_value=res.final_value,
            iterations_per_level=(res.n_iterations,), stop_reason=res.stop_reason or StopReason.CONVERGED,
            message=f"{res.message} (rms {res.rms:.4g}, inliers {res.inlier_fraction:.1%})", levels=(),
            history=(), elapsed=res.elapsed,
        )
        return StageResult("points", res.transform, result, absorbs=start is not None, warnings=res.warnings)
