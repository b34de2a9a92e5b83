"""The one runner of every registration: stages in order, a guard per stage and for the run.

``run_pipeline`` executes a list of :class:`~regframe.registration.pipeline.base.Stage`
objects on a :class:`TransformChain`.  After each guarded stage the stage's
data term is compared before and after on the guard's samples; a stage that
makes it worse is dropped: with a warning when it is the last stage (the
result is not of the kind asked for), and said in its record only when a later
stage follows (it starts where the dropped one started).  At the end the whole run is
compared with its start: when it ended worse, the stages after the initializer
run again from the initializer's next candidates (at most ``max_restarts``),
and the best run wins; when even that is worse than the start, the start is
returned with a warning (:class:`~regframe.errors.RegistrationWarning`).  A run
that ends without overlap raises :class:`~regframe.errors.NoOverlapError`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..._parallel import single_threaded_blas
from ...errors import NoOverlapError, NonFiniteError, RegistrationWarning
from ...optimizers.base import StopReason
from ...transforms.base import Transform
from ...transforms.linear import TranslationTransform
from ..defaults import LINEAR_KINDS, make_transform
from ..initializers import centered_initializer
from ..method import RegistrationResult, RegistrationState, StageRecord
from .base import RegistrationInputs, Stage, StageCache, StageContext, StageResult, check_requires
from .chain import Link, TransformChain
from .guard import GuardScore, metric_of, worse

__all__ = ["run_pipeline", "PipelineRun"]


@dataclass(frozen=True)
class PipelineRun:
    """What :func:`run_pipeline` returns: the assembled result and every stage's own result.

    ``stages[i].result.transform`` is the whole mapping after stage ``i``.
    """

    result: RegistrationResult
    stages: tuple[StageResult, ...]


@dataclass
class _Pass:
    chain: TransformChain
    outs: list[StageResult]
    stopped: bool
    score: float = math.nan
    fallback: bool = False


def _announce(stage: Stage, inputs: RegistrationInputs, callbacks: Sequence[Callable[..., Any]]) -> None:
    if stage.initializer:
        return
    info = stage.describe(inputs)
    for cb in callbacks:
        start = getattr(cb, "start_stage", None)
        if start is not None:
            start(info.label, n_levels=info.n_levels, n_iterations=info.n_iterations)


def _run_stages(stages: Sequence[Stage], first: int, chain: TransformChain, ctx: StageContext,
                scorers: dict[int, GuardScore], guard: bool) -> _Pass:
    outs: list[StageResult] = []
    for i in range(first, len(stages)):
        stage = stages[i]
        ctx.index = i
        _announce(stage, ctx.inputs, ctx.callbacks)
        res = stage.run(ctx, chain)
        after = chain.then(Link(res.kind, res.part, res.inverse), res.absorbs)
        scorer = scorers.get(i) if guard and stage.checked() else None
        if scorer is not None:
            before_v, after_v = scorer.of_chain(chain), scorer.of_chain(after)
            if worse(after_v, before_v) and chain.links:
                msg = (f"{res.kind}: the stage made the {_name(metric_of(stage))} worse "
                       f"({before_v:.6g} -> {after_v:.6g}); kept its start")
                if i == len(stages) - 1:  # the result is not of the kind asked for: say so
                    res = replace(res, kept=False, warnings=(*res.warnings, msg))
                else:  # a preparing stage: the next one starts where it started; its record says why
                    res = replace(res, kept=False, result=replace(res.result, message=f"{res.result.message}; {msg}"))
                after = chain
        chain = after
        mapping = chain.as_transform()
        outs.append(replace(res, result=replace(res.result, transform=mapping if mapping is not None else res.part)))
        if res.result.stop_reason == StopReason.CALLBACK:
            return _Pass(chain, outs, True)
    return _Pass(chain, outs, False)


def _name(metric: Any) -> str:
    return metric if isinstance(metric, str) else type(metric).__name__


@single_threaded_blas()
def run_pipeline(
    stages: Sequence[Stage],
    inputs: RegistrationInputs,
    *,
    initial_transform: Transform | None = None,
    seed: int = 0,
    callbacks: Sequence[Callable[[RegistrationState], Any]] = (),
    guard: bool = True,
    max_restarts: int = 2,
    cache: StageCache | None = None,
) -> PipelineRun:
    """Run ``stages`` in order from ``initial_transform`` (see the module docstring).

    Parameters
    ----------
    stages : sequence of Stage
    inputs : RegistrationInputs
    initial_transform : Transform, optional
        A fixed moving-initial transform (frozen first link; never absorbed).
    seed : int
        Seed of every random choice (samples, jitter, guard samples).
    callbacks : sequence of callables
        ``callback(RegistrationState) -> bool | None`` (True stops the run); a
        callback with a ``start_stage(label, n_levels=, n_iterations=)`` method
        is told when each stage starts.
    guard : bool
        The never-worse guard (per stage and for the whole run).
    max_restarts : int
        Restarts from the initializer's next candidates when the run ends worse than its start.
    cache : StageCache, optional
        Shared between runs on the same images (pyramids, samples).

    Returns
    -------
    PipelineRun
    """
    t0 = time.perf_counter()
    for stage in stages:
        check_requires(stage, inputs)
    ctx = StageContext(inputs, cache if cache is not None else StageCache(), seed=seed, callbacks=callbacks)
    start = TransformChain.start(initial_transform)
    images = inputs.fixed is not None and inputs.moving is not None
    scorers: dict[int, GuardScore] = {}
    if guard and images:
        by_metric: dict[Any, GuardScore] = {}
        for i, stage in enumerate(stages):
            m = metric_of(stage)
            if m is not None:
                jitter = stage.judged_jittered(inputs)
                key = (m if isinstance(m, str) else id(m), jitter)
                if key not in by_metric:
                    by_metric[key] = GuardScore(inputs, m, seed, jitter=jitter)
                scorers[i] = by_metric[key]
    run = _run_stages(stages, 0, start, ctx, scorers, guard)
    warns: list[str] = [w for o in run.outs for w in o.warnings]
    final = scorers[max(scorers)] if scorers else None
    if final is not None and not run.stopped:
        start_v = final.of_chain(start)
        run.score = final.of_chain(run.chain)
        init = next((k for k, o in enumerate(run.outs) if stages[k].initializer), None)
        if worse(run.score, start_v) and init is not None:
            before_init = start
            for cand in run.outs[init].candidates[:max_restarts]:
                chain = before_init.then(Link("initialize", cand), False)
                again = _run_stages(stages, init + 1, chain, ctx, scorers, guard)
                again.outs = [*run.outs[: init + 1], *again.outs]
                again.score = final.of_chain(again.chain)
                if worse(run.score, again.score):
                    run = again
                if not worse(run.score, start_v):
                    break
            warns = [w for o in run.outs for w in o.warnings]
        if not math.isfinite(run.score):
            raise NoOverlapError(
                f"registration ended with {'no overlap' if math.isinf(run.score) else 'a non-finite value'} "
                f"between the fixed and the resampled moving image (start: {start_v:.6g}); check the images' "
                "origins and spacings, or give an initial_transform / initialization that overlaps."
            )
        if worse(run.score, start_v):
            msg = (f"the result is worse than the start ({_name(metric_of(stages[max(scorers)]))} "
                   f"{start_v:.6g} at the start, {run.score:.6g} after registration, on the same samples); "
                   "returned the start instead. Check that the images overlap and show the same "
                   "structures, or try another initialization, metric or mask.")
            warns.append(msg)
            run = _Pass(start, run.outs, False, start_v, fallback=True)
    for w in warns:
        warnings.warn(w, RegistrationWarning, stacklevel=3)
    return PipelineRun(_assemble(run, stages, inputs, warns, time.perf_counter() - t0), tuple(run.outs))


def _identity_like(stages: Sequence[Stage], inputs: RegistrationInputs) -> Transform:
    kind = next((getattr(s, "transform", None) for s in reversed(stages)
                 if isinstance(getattr(s, "transform", None), str)), None)
    if kind in LINEAR_KINDS and inputs.fixed is not None:  # the identity about the fixed image's centre
        return centered_initializer(inputs.fixed, inputs.fixed, make_transform(kind, inputs.ndim), mode="geometry")
    return TranslationTransform(inputs.ndim)


def _assemble(run: _Pass, stages: Sequence[Stage], inputs: RegistrationInputs, warns: list[str],
              elapsed: float) -> RegistrationResult:
    """One result: the chain's mapping, kept stages' levels and histories concatenated."""
    body = [o for o, s in zip(run.outs, stages) if not s.initializer]
    records = tuple(
        StageRecord(o.kind, o.part, float(o.result.final_value), tuple(o.result.iterations_per_level),
                    o.result.stop_reason, o.result.message, float(o.result.elapsed), o.kept)
        for o in run.outs
    )
    mapping = run.chain.as_transform()
    if mapping is None:
        mapping = _identity_like(stages, inputs)
    params = mapping.parameters
    if params.size and not np.all(np.isfinite(params)):
        raise NonFiniteError("registration produced non-finite transform parameters; check the inputs "
                             "for NaN/inf values and the optimizer's settings.")
    kept = [o for o in body if o.kept]
    last = kept[-1].result if kept else (body[-1].result if body else run.outs[-1].result)
    optimized = run.chain.last.transform if run.chain.last is not None else mapping
    has_inverse = any(o.inverse is not None for o in kept)
    return RegistrationResult(
        transform=mapping,
        optimized_transform=optimized.copy(),
        final_value=float(run.score if run.fallback else last.final_value),
        iterations_per_level=tuple(n for o in body for n in o.result.iterations_per_level),
        stop_reason=last.stop_reason,
        message="returned the start: " + warns[-1] if run.fallback else last.message,
        levels=tuple(lv for o in body for lv in o.result.levels),
        history=tuple(h for o in body for h in o.result.history),
        elapsed=elapsed,
        warnings=tuple(warns),
        inverse_transform=run.chain.inverse() if has_inverse else None,
        stages=records,
    )
