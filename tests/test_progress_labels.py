"""Progress labels: ``[<stage kind> level i/n]`` with the stage's own level count.

Reported: a B-spline run labelled its rigid part "[bspline level 1]", a TOML
run printed "[bspline level 3/2]".  The pipeline runner announces every stage
with ``start_stage(index, kind, n_levels, n_iterations)``; states carry
``stage`` (the lead's ``RegistrationState.stage``), emulated here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from regframe.progress import ProgressReporter


@dataclass(frozen=True)
class State:
    level: int
    iteration: int
    value: float
    gradient_norm: float = 0.5
    stage: int = 0


def _run(rep, stage, levels, n_it=3):
    for lv in range(levels):
        for it in range(n_it):
            rep(State(lv, it, 1.0 / (it + 1), stage=stage))


def test_each_stage_is_labelled_by_its_kind_and_own_level_count():
    buf = io.StringIO()
    rep = ProgressReporter(stream=buf, mode="lines", every=100)
    rep.start_stage(1, "rigid", 3, 100)        # index 0 is an (unannounced) initializer
    _run(rep, 1, 3)
    rep.start_stage(2, "bspline", 2, 50)
    _run(rep, 2, 2)
    rep.close()
    text = buf.getvalue()
    for label in ("[rigid level 1/3]", "[rigid level 3/3]", "[bspline level 1/2]", "[bspline level 2/2]"):
        assert f"{label} done: 3 iterations" in text, text
    assert "bspline level 1]" not in text and "level 3/2" not in text and "level 4" not in text
    assert [(lv["kind"], lv["level"]) for lv in rep.levels] == [
        ("rigid", 0), ("rigid", 1), ("rigid", 2), ("bspline", 0), ("bspline", 1)]
    assert rep.n_iterations == 50


def test_unannounced_stage_change_is_a_new_stage_not_the_previous_kind():
    buf = io.StringIO()
    rep = ProgressReporter(stream=buf, mode="lines", every=100)
    rep.start_stage(0, "bspline", 2)
    _run(rep, 0, 2)
    _run(rep, 1, 1)                            # stage 1 was never announced
    rep.close()
    text = buf.getvalue()
    assert "[bspline level 2/2] done" in text
    assert "[stage 2 level 1] done" in text and "[bspline part 2" not in text


def test_a_level_beyond_the_announced_count_drops_the_wrong_total():
    buf = io.StringIO()
    rep = ProgressReporter(stream=buf, mode="lines", every=100)
    rep.start_stage("bspline", n_levels=2)     # the older (label, n_levels=) form still works
    _run(rep, 0, 3)
    rep.close()
    text = buf.getvalue()
    assert "[bspline level 2/2] done" in text and "[bspline level 3] done" in text
    assert "3/2" not in text
