"""The symmetric diffeomorphic stage: :func:`~regframe.registration.syn.syn_register` on the chain.

The chain so far (the affine stages of the ``"syn"`` preset, or a caller's initial
transform) is SyN's linear prealignment; the stage contributes the forward
displacement field and its exact inverse from the symmetric parameterization, so
``result.inverse_transform`` (the chain's inverse) maps moving points to fixed points
without inverting anything after the fact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from ...optimizers.base import StopReason
from ...transforms.composite import CompositeTransform
from ..method import LevelResult, RegistrationResult, RegistrationState
from ..pipeline.base import RegistrationInputs, Stage, StageContext, StageInfo, StageResult
from ..pipeline.chain import TransformChain
from ..pyramid import LevelSchedule
from ..syn import _ANTS_UPDATE_SIGMA, _MIN_JACOBIAN, default_syn_schedule, syn_register

__all__ = ["SyNStage"]


@dataclass(frozen=True)
class SyNStage(Stage):
    """Greedy symmetric normalization (ANTs' ``SyN[step, update sigma, total sigma]``).

    Options are those of :func:`~regframe.registration.syn.syn_register`.
    """

    kind: ClassVar[str] = "syn"
    metric: str = "ncc"
    radius: int = 2
    step: float = 0.25
    update_sigma: float = _ANTS_UPDATE_SIGMA
    total_sigma: float = 0.0
    min_jacobian: float = _MIN_JACOBIAN
    schedule: LevelSchedule | None = None
    n_iterations: Sequence[int] | int | None = None
    convergence_threshold: float = 1e-6
    convergence_window: int = 10
    n_bins: int = 32

    def describe(self, inputs: RegistrationInputs) -> StageInfo:
        sched = self.schedule if self.schedule is not None else default_syn_schedule(inputs.fixed)  # type: ignore[arg-type]
        n = self.n_iterations if isinstance(self.n_iterations, int) else None
        return StageInfo("syn", sched.n_levels, n)

    def run(self, ctx: StageContext, chain: TransformChain) -> StageResult:
        inputs = ctx.inputs
        assert inputs.fixed is not None and inputs.moving is not None
        res = syn_register(
            inputs.fixed, inputs.moving, initial_transform=chain.base(False), metric=self.metric,
            radius=self.radius, step=self.step, update_sigma=self.update_sigma, total_sigma=self.total_sigma,
            min_jacobian=self.min_jacobian,
            schedule=self.schedule, n_iterations=self.n_iterations,
            convergence_threshold=self.convergence_threshold, convergence_window=self.convergence_window,
            n_bins=self.n_bins, fixed_mask=inputs.fixed_mask, moving_mask=inputs.moving_mask,
            callbacks=[_tagged(cb, ctx.index) for cb in ctx.callbacks], seed=ctx.seed,
        )
        # forward = [A, M, F^-1], inverse = [F, M^-1, A^-1]: the stage's part is the two half-way links
        n_prealign = 0 if chain.base(False) is None else 1
        field = CompositeTransform(res.forward.ndim, [t.copy() for t in res.forward.transforms[n_prealign:]])
        inverse = CompositeTransform(res.inverse.ndim,
                                     [t.copy() for t in res.inverse.transforms[: len(res.inverse) - n_prealign]])
        states, levels, k = [], [], 0
        reason = StopReason.CONVERGED if all(res.converged) else StopReason.MAX_ITERATIONS
        for level, n in enumerate(res.iterations_per_level):
            for it in range(n):
                states.append(RegistrationState(level=level, iteration=it, value=float(res.history[k + it]),
                                                gradient_norm=float("nan"), parameters=np.zeros(0),
                                                stage=ctx.index))
            k += n
            levels.append(LevelResult(level, n, float(res.history[k - 1]) if n else float("nan"),
                                      StopReason.CONVERGED if res.converged[level] else StopReason.MAX_ITERATIONS,
                                      "windowed convergence" if res.converged[level] else "iteration budget used",
                                      0.0, int(inputs.fixed.n_voxels)))
        result = RegistrationResult(
            transform=res.forward, optimized_transform=field, final_value=res.final_value,
            iterations_per_level=res.iterations_per_level, stop_reason=reason,
            message=f"SyN: inverse residual {res.inverse_residual:.2g} voxels", levels=tuple(levels),
            history=tuple(states), elapsed=res.elapsed,
        )
        return StageResult("syn", field, result, inverse=inverse)


def _tagged(callback: Callable[[RegistrationState], Any], index: int) -> Callable[[RegistrationState], Any]:
    """``callback`` receiving states tagged with the stage index (syn_register reports stage 0)."""
    return lambda state: callback(replace(state, stage=index))
