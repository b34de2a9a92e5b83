"""The initialization stage: candidate starts, each refined with the same budget, ranked.

Candidates come from named generators (moments and geometry centres, a
rotation grid, FFT phase correlation, Fourier-Mellin rotation and scale in 2-D,
rotation and scale grids in 3-D; :mod:`regframe.registration.global_init`).
Every candidate - the plain centred start included - is refined briefly at the
coarsest level with the same optimizer budget and then ranked by its metric
value on the same samples, so a refined wrong candidate can no longer beat an
unrefined right start.  The ranked rest are kept for the runner, which restarts
from them when the whole run ends worse than it started.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ...errors import InvalidInputError, NoOverlapError
from ...image import Image
from ...metrics import FullSampler, RandomSampler
from ...metrics.base import Metric
from ...optimizers import RegularStepGradientDescent
from ...optimizers.base import StopReason
from ...transforms.base import Transform
from ...transforms.linear import MatrixOffsetTransformBase
from ..defaults import LINEAR_KINDS, make_transform
from ..initializers import centered_initializer, landmark_initializer
from ..method import RegistrationMethod, RegistrationResult
from ..pipeline.base import RegistrationInputs, Stage, StageContext, StageInfo, StageResult
from ..pipeline.chain import TransformChain, compose
from ..pyramid import LevelSchedule
from .linear import run_schedule, shared_metric

__all__ = ["InitializeStage", "INITIALIZATION_MODES", "rotation_grid"]

INITIALIZATION_MODES = ("auto", "moments", "geometry", "phase", None)

#: Samples used to refine and rank candidates at the coarsest level.
_RANK_SAMPLES = 20_000
#: Candidates whose samples overlap the moving image less than this are not ranked.
_MIN_OVERLAP = 0.2
#: The best refined candidates re-ranked by their metric value one level finer.
_N_FINER = 3


def rotation_grid(transform: MatrixOffsetTransformBase, max_angle: float, step: float) -> list[MatrixOffsetTransformBase]:
    """Copies of ``transform`` with extra rotations (degrees) on a grid about its centre."""
    angles = np.deg2rad(np.arange(-max_angle, max_angle + 1e-9, step))
    out = []
    if transform.ndim == 2:
        for a in angles:
            if a == 0:
                continue
            t = transform.copy()
            t.set_matrix(transform.matrix @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]))
            out.append(t)
        return out
    for ax, ay, az in itertools.product(angles, angles, angles):
        if ax == ay == az == 0:
            continue
        t = transform.copy()
        cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        t.set_matrix(transform.matrix @ rz @ rx @ ry)
        out.append(t)
    return out


@dataclass(frozen=True)
class InitializeStage(Stage):
    """Choose the start of the first linear stage among refined candidates.

    Parameters
    ----------
    target : {"translation", "rigid", "similarity", "affine"}
        Kind of the start handed to the next stage.
    mode : {"auto", "moments", "geometry", "phase", None}
        ``"auto"``: every generator that fits the kind (centres, phase
        correlation, Fourier-Mellin / rotation and scale grids), ranked by the
        refined metric; ``"moments"`` / ``"geometry"``: the intensity-centroid /
        image-centre start; ``"phase"``: phase-correlation translations from the
        image centres; ``None``: the identity.
    search : bool, optional
        Add a rotation grid (default: on for rigid-type targets with
        ``"moments"``, ``"geometry"`` and ``None``; ``"auto"`` always searches).
    start : Transform, optional
        Use this transform (copied) instead of generating one; searched only
        when ``search`` is True.
    metric : str or Metric
    schedule : LevelSchedule, optional
        The run's pyramid (candidates are refined on its coarsest level).
    n_iterations : int
        Refinement budget of every candidate.
    max_candidates : int
        Candidates refined (after a cheap pre-ranking of the generated ones).
    anisotropic : bool, optional
        Let the 2-D global search look for anisotropic scalings too (projected onto
        ``target``; see ``anisotropic`` of
        :func:`~regframe.registration.global_init.global_candidates`): for a
        similarity start of an affine registration.  Default: for an affine target.
    """

    kind: ClassVar[str] = "initialize"
    guarded: ClassVar[bool] = False
    initializer: ClassVar[bool] = True
    target: str | None = "rigid"
    mode: str | None = "auto"
    search: bool | None = None
    start: Transform | None = field(default=None, compare=False)
    metric: str | Metric = "mattes"
    schedule: LevelSchedule | None = None
    n_iterations: int = 40
    max_candidates: int = 8
    anisotropic: bool | None = None

    def describe(self, inputs: RegistrationInputs) -> StageInfo:
        return StageInfo("initialize", 1, self.n_iterations)

    # ------------------------------------------------------------ candidates
    def _searching(self) -> bool:
        if self.search is not None:
            return bool(self.search)
        return self.start is None and self.target in ("rigid", "similarity", "affine")

    def candidates(self, ctx: StageContext, chain: TransformChain) -> tuple[list[Transform], int]:
        """The generated candidates and how many of them (first) are plain starts, always refined."""
        inputs = ctx.inputs
        fixed, moving = inputs.fixed, inputs.moving
        assert fixed is not None and moving is not None
        masks = dict(fixed_mask=inputs.fixed_mask, moving_mask=inputs.moving_mask)
        if self.start is not None:
            first = self.start.copy()
            starts: list[Transform] = [first]
        else:
            if self.target not in LINEAR_KINDS:
                raise InvalidInputError(
                    f"InitializeStage: 'target' must be one of {LINEAR_KINDS}; got {self.target!r}."
                )
            ident = make_transform(self.target, fixed.ndim)
            mode = self.mode
            plain: list[Transform] = []
            if inputs.fixed_landmarks is not None and not chain.links:  # ground control points
                plain = [landmark_initializer(inputs.fixed_landmarks, inputs.moving_landmarks, ident)]
            if mode == "auto" and chain.links:
                # after a caller's initial transform: rotate about the fixed centre, no global search
                starts = [centered_initializer(fixed, fixed, ident, mode="geometry")]
            elif mode == "auto":
                starts = [centered_initializer(fixed, moving, ident, mode="moments", **masks),
                          centered_initializer(fixed, moving, ident, mode="geometry", **masks)]
                starts += _global(fixed, moving, self.target, starts[0], masks, self.max_candidates,
                                  anisotropic=self.anisotropic)
            elif mode == "phase":
                g = centered_initializer(fixed, moving, ident, mode="geometry", **masks)
                starts = [g, *_global(fixed, moving, self.target, g, masks, self.max_candidates,
                                      search="translation")]
            elif mode in ("moments", "geometry"):
                starts = [centered_initializer(fixed, moving, ident, mode=mode, **masks)]
            elif mode is None:
                starts = [ident]
            else:
                raise InvalidInputError(
                    f"register(): 'initialization' must be one of 'auto', 'moments', 'geometry', 'phase' or "
                    f"None; got {mode!r}."
                )
            starts = [*plain, *starts]
        n_plain = min(len(starts), 2 + (inputs.fixed_landmarks is not None and self.start is None))
        first = starts[0]
        # the 3-D global search (mode "auto") tries every rotation of this grid and more, at no refinement cost
        if self._searching() and not chain.links and isinstance(first, MatrixOffsetTransformBase) \
                and hasattr(first, "set_matrix") and self.mode != "phase" \
                and not (self.mode == "auto" and self.start is None and first.ndim == 3):
            step = 15.0 if first.ndim == 2 else 30.0
            starts += rotation_grid(first, 180.0 - step if first.ndim == 2 else 30.0, step)
        return starts, n_plain

    # ------------------------------------------------------------------ run
    def run(self, ctx: StageContext, chain: TransformChain) -> StageResult:
        t0 = time.perf_counter()
        inputs = ctx.inputs
        fixed, moving = inputs.fixed, inputs.moving
        assert fixed is not None and moving is not None
        full = run_schedule(ctx, self.schedule)
        fixed_l = ctx.cache.pyramid(fixed, full).level(0)
        moving_l = ctx.cache.pyramid(moving, full).level(0)
        generated, n_plain = self.candidates(ctx, chain)
        metric = shared_metric(ctx, self.metric, full, None)
        base = chain.base(False)
        n_vox = fixed_l.n_voxels
        sampler = (FullSampler() if n_vox <= _RANK_SAMPLES
                   else RandomSampler(_RANK_SAMPLES / n_vox, seed=ctx.seed))
        plain = generated[0]
        if len(generated) == 1:  # nothing to choose from: the next stage refines it anyway
            return self._result(plain, (), t0, 1, math.nan)
        # pre-rank by one evaluation; the plain starts always go on
        scored = _evaluate(metric, fixed_l, moving_l, generated, base, sampler, inputs)
        keep = list(range(min(n_plain, len(generated))))
        rest = sorted((i for i in range(n_plain, len(generated)) if math.isfinite(scored[i])),
                      key=lambda i: scored[i])
        keep += rest[: max(0, self.max_candidates - len(keep))]
        refined: list[tuple[float, int, Transform]] = []
        schedule = LevelSchedule((1,), (0.0,))  # the coarse level images themselves
        for i in keep:
            method = RegistrationMethod(
                metric=metric,
                optimizer=RegularStepGradientDescent(n_iterations=self.n_iterations, scales="physical_shift",
                                                     minimum_step_length=1e-3, relaxation_factor=0.5),
                schedule=schedule,
                sampler=sampler,
                fixed_mask=inputs.fixed_mask,
                moving_mask=inputs.moving_mask,
                initial_transform=base,
                stage=ctx.index,
            )
            try:
                res = method.run(fixed_l, moving_l, generated[i])
                overlap = _overlap(metric)
            except NoOverlapError:
                continue
            if math.isfinite(res.final_value) and overlap >= _MIN_OVERLAP:
                refined.append((res.final_value, i, res.optimized_transform))
        if not refined:
            return self._result(plain, tuple(generated[1:]), t0, len(generated), math.nan)
        refined.sort(key=lambda r: (r[0], r[1]))
        if full.n_levels > 1 and len(refined) > 1:
            refined = _rerank_finer(refined, ctx, full, metric, base)
        best = refined[0]
        return self._result(best[2], tuple(r[2] for r in refined[1:]), t0, len(keep), best[0],
                            chosen=best[1])

    def _result(self, best: Transform, rest: tuple[Transform, ...], t0: float, n: int, value: float,
                chosen: int = 0) -> StageResult:
        res = RegistrationResult(
            transform=best.copy(), optimized_transform=best.copy(), final_value=float(value),
            iterations_per_level=(), stop_reason=StopReason.CONVERGED,
            message=f"initialization: candidate {chosen} of {n} refined", levels=(), history=(),
            elapsed=time.perf_counter() - t0,
        )
        return StageResult("initialize", best, res, candidates=rest)


def _global(fixed: Image, moving: Image, kind: str, start: Transform, masks: dict[str, Any],
            max_candidates: int, search: str = "auto", anisotropic: bool | None = None) -> list[Transform]:
    """Candidates of :func:`regframe.registration.global_init.global_candidates` (it works on its own
    working grid of the full-resolution images)."""
    from ..global_init import global_candidates

    return list(global_candidates(fixed, moving, kind, start=start, max_candidates=max_candidates,
                                  search=search, anisotropic=anisotropic, **masks))


def _evaluate(metric: Metric, fixed_l: Image, moving_l: Image, candidates: list[Transform],
              base: Transform | None, sampler: Any, inputs: RegistrationInputs) -> list[float]:
    """One metric value per candidate on the same samples (``inf`` without overlap)."""
    out = []
    for cand in candidates:
        mapping = cand if base is None else compose([base, cand])
        metric.initialize(fixed_l, moving_l, mapping, sampler=sampler, fixed_mask=inputs.fixed_mask,
                          moving_mask=inputs.moving_mask)
        try:
            v = metric.value()
            ok = _overlap(metric) >= _MIN_OVERLAP
        except NoOverlapError:
            v, ok = math.inf, False
        out.append(float(v) if ok else math.inf)
    return out


def _overlap(metric: Metric) -> float:
    """Fraction of the last evaluation's samples inside the moving image (1 without image samples)."""
    parts = getattr(metric, "metrics", None)  # a CombinedMetric: its image terms
    if parts is not None:
        return min((_overlap(m) for m in parts), default=1.0)
    n, valid = getattr(metric, "n_samples", None), getattr(metric, "n_valid", None)
    if not isinstance(n, int) or not isinstance(valid, int) or n == 0:
        return 1.0
    return valid / n


def _rerank_finer(refined: list[tuple[float, int, Transform]], ctx: StageContext, full: LevelSchedule,
                  metric: Metric, base: Transform | None) -> list[tuple[float, int, Transform]]:
    """The best ``_N_FINER`` refined candidates, reordered by one metric value at the next finer level.

    The coarsest level can prefer a wrong pose of a near-symmetric shape (a flipped slice); one level finer,
    where the shape's detail shows, it cannot.
    """
    inputs = ctx.inputs
    fixed_l = ctx.cache.pyramid(inputs.fixed, full).level(1)
    moving_l = ctx.cache.pyramid(inputs.moving, full).level(1)
    n_vox = fixed_l.n_voxels
    sampler = FullSampler() if n_vox <= _RANK_SAMPLES else RandomSampler(_RANK_SAMPLES / n_vox, seed=ctx.seed)
    head = refined[:_N_FINER]
    values = _evaluate(metric, fixed_l, moving_l, [r[2] for r in head], base, sampler, inputs)
    order = sorted(range(len(head)), key=lambda k: (values[k], k))
    return [head[k] for k in order] + refined[_N_FINER:]

