"""The stage pipeline: chain semantics, the never-worse guard, initialization, typed errors.

Fixtures are real images (``../shared/data``) or the built-in phantom moved by known
transforms; nothing here is produced by regframe's own registration.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import regframe as rf
from regframe.errors import InvalidInputError, NoOverlapError, RegistrationWarning, ShapeError
from regframe.optimizers.base import StopReason
from regframe.registration import make_transform, register, resample
from regframe.registration import presets
from regframe.registration.deformable import register_bspline
from regframe.registration.pipeline import (
    Link,
    RegistrationInputs,
    Stage,
    StageResult,
    TransformChain,
    run_pipeline,
)
from regframe.registration.stages import InitializeStage, LinearStage

from conftest import Uphill, data_path


@pytest.fixture(scope="module")
def brain():
    return rf.read_image(data_path("elastix_example", "fixed.mhd"), dtype=np.float64)


def _moved(image, angle_deg=10.0, shift=(6.0, -4.0)):
    truth = rf.Euler2DTransform()
    truth.fixed_parameters = image.physical_center()
    truth.parameters = [np.deg2rad(angle_deg), *shift]
    return resample(image, truth.inverse(), reference=image, interpolator="bspline"), truth


def _rms_px(a, b, image):
    pts = image.voxel_points()
    d = a.transform_points(pts) - b.transform_points(pts)
    return float(np.sqrt(np.mean(np.sum((d / image.spacing) ** 2, axis=1))))


# ------------------------------------------------------------------- chain
def test_chain_absorbs_a_representable_linear_link_and_composes_otherwise():
    rigid = make_transform("rigid", 2)
    rigid.fixed_parameters = [3.0, -2.0]
    rigid.parameters = [0.3, 4.0, 1.0]
    chain = TransformChain((Link("rigid", rigid),))
    pts = np.array([[0.0, 0.0], [10.0, -7.0]])
    affine = chain.absorbable("affine")
    assert type(affine).__name__ == "AffineTransform"
    np.testing.assert_allclose(affine.transform_points(pts), rigid.transform_points(pts), atol=1e-12)
    assert chain.absorbable("translation") is None  # cannot represent a rotation
    # composing keeps the mapping: base(False) is the whole chain
    np.testing.assert_allclose(chain.base(False).transform_points(pts), rigid.transform_points(pts))
    assert chain.base(True) is None


def test_chain_inverse_is_exact_for_linear_links():
    a = make_transform("affine", 2)
    a.parameters = [1.1, 0.1, -0.05, 0.9, 3.0, 2.0]
    r = make_transform("rigid", 2)
    r.parameters = [0.2, -1.0, 0.5]
    chain = TransformChain((Link("initial", a, frozen=True), Link("rigid", r)))
    pts = np.random.default_rng(0).normal(size=(20, 2)) * 30
    np.testing.assert_allclose(chain.inverse().transform_points(chain.as_transform().transform_points(pts)),
                               pts, atol=1e-9)


# ------------------------------------------------------------------- guard
def test_a_result_worse_than_the_start_returns_the_start_with_a_warning(brain):
    moving, _ = _moved(brain, 2.0, (1.0, 0.5))
    with pytest.warns(RegistrationWarning, match="worse than the start"):
        res = register(brain, moving, "rigid", "mse", initialization=None, rotation_search=False,
                       optimizer=Uphill.make())
    assert res.warnings and "worse than the start" in res.warnings[-1]
    # the start is the identity: no rotation, no shift
    np.testing.assert_allclose(res.transform.transform_points(brain.voxel_points()[:50]),
                               brain.voxel_points()[:50], atol=1e-9)
    assert res.message.startswith("returned the start")


def test_no_warning_when_all_is_well(brain):
    moving, truth = _moved(brain)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegistrationWarning)
        res = register(brain, moving, "rigid", "mse")
    assert res.warnings == ()
    assert _rms_px(res.transform, truth, brain) < 0.05
    assert [s.kind for s in res.stages] == ["initialize", "rigid"]


def test_the_guard_scores_each_chain_once(brain, monkeypatch):
    """Affine and SyN (the checked stages): the guard scores the chains before and after each, and the start,
    each once (SyN starts where the affine stage ended, the run ends where SyN did: neither is scored again)."""
    from regframe.registration.pipeline import guard

    scored = []
    call = guard.GuardScore.__call__
    monkeypatch.setattr(guard.GuardScore, "__call__", lambda self, t: scored.append(t) or call(self, t))
    moving, truth = _moved(brain, 8.0, (3.0, -2.0))
    res = register(brain, moving, "syn")
    assert [s.kind for s in res.stages] == ["initialize", "similarity", "affine", "syn"]
    assert all(s.kept for s in res.stages)
    assert [type(t).__name__ for t in scored] == ["Similarity2DTransform", "AffineTransform",
                                                  "CompositeTransform", "NoneType"]
    assert _rms_px(res.transform, truth, brain) < 1.0  # px over the whole field of view, background included


def test_a_bspline_stage_that_makes_things_worse_is_dropped(brain):
    moving, truth = _moved(brain, 5.0, (2.0, 1.0))
    with pytest.warns(RegistrationWarning, match="bspline: the stage made"):
        res = register_bspline(brain, moving, "mse", linear_stage="rigid", optimizer=Uphill.make(20.0),
                               mesh_size=4, n_grid_levels=1)
    assert not res.stages[-1].kept and res.stages[-1].kind == "bspline"
    assert type(res.transform).__name__ == "Euler2DTransform"  # the linear result, untouched
    assert _rms_px(res.transform, truth, brain) < 0.05


def test_a_dropped_preparing_stage_is_said_in_its_record_not_warned(brain):
    """The checked rigid stage before a B-spline stage goes uphill: it is dropped, its record says why, and the
    B-spline stage starts where the rigid one started; the result is of the kind asked for, so no warning."""
    moving, truth = _moved(brain, 5.0, (2.0, 1.0))
    stages = presets.bspline(metric="mse", linear_stage="rigid", linear_options=dict(optimizer=Uphill.make(20.0)),
                             mesh_size=4, n_grid_levels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegistrationWarning)
        res = run_pipeline(stages, RegistrationInputs.for_images(brain, moving)).result
    assert [(s.kind, s.kept) for s in res.stages] == [("initialize", True), ("rigid", False), ("bspline", True)]
    assert "the stage made the mse worse" in res.stages[1].message and res.warnings == ()
    assert _rms_px(res.transform, truth, brain) < 0.5


def test_a_jittered_bspline_stage_is_judged_on_jittered_samples():
    """A rigidly moved phantom needs no deformation: the jittered B-spline stage only moves
    within the resampling noise, which voxel-centre samples scored 1e-3 worse than its start
    (6.3912 -> 6.4001: the stage was dropped, the CLI exited 3); the guard scores it on
    jittered samples, the kind it optimises."""
    from regframe.datasets import brain_pair

    fixed, base = brain_pair(2, 48, seed=2)
    truth = rf.Euler2DTransform()
    truth.fixed_parameters = fixed.physical_center()
    truth.parameters = [np.deg2rad(10.0), 3.0, -2.5]
    moving = resample(base, truth.inverse(), reference=base, interpolator="bspline", dtype=np.float32)
    stages = presets.bspline(metric="mse", linear_options=dict(n_iterations=4), n_iterations=4)
    stages[-1] = stages[-1].with_options(jitter=True)
    inputs = RegistrationInputs(fixed=fixed, moving=moving)
    assert stages[-1].judged_jittered(inputs) and not stages[-2].judged_jittered(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegistrationWarning)
        res = run_pipeline(stages, inputs).result
    assert res.stages[-1].kind == "bspline" and res.stages[-1].kept


def test_unrelated_images_never_end_worse_than_their_start_silently(brain):
    noise = brain.with_array(np.random.default_rng(1).normal(size=brain.shape) * 50 + 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = register(brain, noise, "affine", "mattes")
    from regframe.registration.pipeline.guard import GuardScore, worse

    score = GuardScore(RegistrationInputs.for_images(brain, noise), "mattes")
    ended_worse = worse(score(res.transform), score(None))
    assert not ended_worse or (res.warnings and any(issubclass(w.category, RegistrationWarning) for w in caught))


def test_no_overlap_raises_a_typed_error_instead_of_an_identity(brain):
    far = rf.Image(brain.array, spacing=brain.spacing, origin=brain.origin + 5000.0)
    with pytest.raises(NoOverlapError):
        register(brain, far, "rigid", "mse", initialization=None, rotation_search=False)


# ------------------------------------------------------------------- inputs
def test_array_masks_are_taken_in_the_image_geometry(brain):
    moving, truth = _moved(brain)
    mask = np.zeros(brain.shape, dtype=bool)
    mask[40:-40, 40:-40] = True
    res = register(brain, moving, "rigid", "mse", fixed_mask=mask)
    assert _rms_px(res.transform, truth, brain) < 0.1
    with pytest.raises(ShapeError, match="fixed_mask"):
        register(brain, moving, "rigid", fixed_mask=np.ones((3, 3)))


@pytest.mark.parametrize("bad", [np.zeros((8, 8)), "fixed.mha", None])
def test_non_images_get_a_typed_error(bad, brain):
    with pytest.raises(InvalidInputError, match="regframe.Image"):
        register(bad, brain)


@pytest.mark.parametrize("sampling", [1.5, float("nan"), -0.5, 0.0])
def test_bad_sampling_fractions_are_rejected(sampling, brain):
    with pytest.raises(InvalidInputError, match="sampling"):
        register(brain, brain, sampling=sampling)


# ------------------------------------------------------------ initialization
def test_every_candidate_is_refined_so_the_right_start_wins(brain):
    """The unrotated start is refined with the same budget as the rotated candidates."""
    moving, truth = _moved(brain, 4.0, (3.0, -2.0))
    mask = np.zeros(brain.shape, dtype=bool)
    mask[64:-64, 64:-64] = True
    res = register(brain, moving, "rigid", "mse", fixed_mask=mask, initialization="moments",
                   rotation_search=True)
    assert abs(np.rad2deg(res.transform.parameters[0]) - 4.0) < 0.5
    init = res.stages[0]
    assert init.kind == "initialize" and "refined" in init.message


def test_large_rotation_is_captured_by_the_search(brain):
    moving, truth = _moved(brain, 120.0, (10.0, 5.0))
    res = register(brain, moving, "rigid", "mse")
    assert _rms_px(res.transform, truth, brain) < 0.1


# ------------------------------------------------------------------ pipeline
@dataclass(frozen=True)
class ShiftStage(Stage):
    """A user stage: a fixed translation composed on the chain (a new kind is a new class)."""

    kind: ClassVar[str] = "shift"
    shift: tuple[float, ...] = (1.0, 2.0)

    def run(self, ctx, chain):
        t = rf.TranslationTransform(len(self.shift))
        t.parameters = list(self.shift)
        res = rf.registration.RegistrationResult(
            transform=t, optimized_transform=t, final_value=0.0, iterations_per_level=(),
            stop_reason=StopReason.CONVERGED, message="fixed shift", levels=(), history=())
        return StageResult(self.kind, t, res)


def test_a_new_kind_is_a_stage_class_and_a_preset(brain):
    presets.register_preset("shift", lambda **kw: [ShiftStage((1.5, -0.5))])
    try:
        res = register(brain, brain, "shift")
    finally:
        presets.PRESETS.pop("shift")
    np.testing.assert_allclose(res.transform.parameters, [1.5, -0.5])
    assert [s.kind for s in res.stages] == ["shift"]


def test_stage_lists_pickle_and_run_the_same(brain):
    moving, _ = _moved(brain, 3.0)
    stages = presets.linear("rigid", metric="mse")
    again = pickle.loads(pickle.dumps(stages))
    a = run_pipeline(stages, RegistrationInputs.for_images(brain, moving), seed=2).result
    b = run_pipeline(again, RegistrationInputs.for_images(brain, moving), seed=2).result
    np.testing.assert_array_equal(a.transform.parameters, b.transform.parameters)
    assert isinstance(again[0], InitializeStage) and isinstance(again[1], LinearStage)


def test_register_and_register_bspline_share_the_runner(brain):
    """register(transform="bspline") forwards its linear options (they used to be dropped)."""
    moving, _ = _moved(brain, 3.0)
    calls = []
    res = register(brain, moving, "bspline", "mse", n_iterations=3, callbacks=[calls.append],
                   initialization="geometry")
    linear_iters = [n for s in res.stages if s.kind != "bspline" for n in s.iterations_per_level]
    assert linear_iters and max(linear_iters) <= 3
    assert {s.stage for s in calls} == {1, 2, 3}  # similarity, affine, bspline (initialize has none)


def test_register_with_landmarks_rescues_a_far_multimodal_start(rotated_multimodal_brain):
    """Mattes alone from the image centres ends in a wrong optimum (70 degrees off); four landmarks rescue it.

    (The landmarks' least-squares fit is also one of the initialization candidates.)
    """
    fixed, moving, _, probe, truth, lm_f, lm_m = rotated_multimodal_brain

    def error(res):
        return float(np.mean(np.linalg.norm(res.transform.transform_points(probe) - truth, axis=1)))

    options = dict(initialization="geometry", rotation_search=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegistrationWarning)
        alone = error(register(fixed, moving, "rigid", "mattes", **options))
    rescued = register(fixed, moving, "rigid", "mattes", fixed_landmarks=lm_f, moving_landmarks=lm_m, **options)
    assert alone > 20.0
    assert error(rescued) < 3.0  # (the pair also differs by a deformation of ~1-2 mm)
    with pytest.raises(InvalidInputError, match="both"):
        register(fixed, moving, fixed_landmarks=lm_f)


def test_register_syn_returns_an_exact_inverse_through_the_pipeline(shared_data):
    """register(transform="syn"): affine stages, then SyN; the chain's inverse is SyN's own inverse."""
    fixed = rf.read_image(shared_data("rat_lung", "RatLungSlice1.mha"), dtype=np.float64)
    moving = rf.read_image(shared_data("rat_lung", "RatLungSlice2.mha"), dtype=np.float64)
    res = register(fixed, moving, "syn", n_iterations=30)
    assert [s.kind for s in res.stages] == ["initialize", "similarity", "affine", "syn"]
    assert res.inverse_transform is not None
    pts = fixed.voxel_points()[::37]
    back = res.inverse_transform.transform_points(res.transform.transform_points(pts))
    err = np.linalg.norm((back - pts) / fixed.spacing, axis=1)
    inside = np.all((pts > fixed.origin + 8) & (pts < fixed.origin + 119), axis=1)  # away from the border
    assert err[inside].mean() < 0.05 and err[inside].max() < 0.5
    from regframe.registration.pipeline.guard import GuardScore

    score = GuardScore(RegistrationInputs.for_images(fixed, moving), "ncc")
    assert score(res.transform) < score(res.stages[2].transform) - 0.01  # SyN improved on the affine result


def test_point_sets_are_a_stage_kind_of_the_same_runner():
    """PointSetStage runs through run_pipeline with point inputs only (no images, no guard)."""
    from regframe.points import register_points
    from regframe.registration.stages import PointSetStage

    rng = np.random.default_rng(3)
    fixed = rng.uniform(0, 50, size=(400, 3))
    truth = rf.VersorRigid3DTransform()
    truth.fixed_parameters = [25.0, 25.0, 25.0]
    truth.parameters = [0.1, -0.05, 0.2, 3.0, -2.0, 1.0]
    moving = rng.permutation(truth.transform_points(fixed))
    inputs = RegistrationInputs(fixed_points=fixed, moving_points=moving)
    res = run_pipeline([PointSetStage("rigid")], inputs).result
    direct = register_points(fixed, moving, "rigid")
    np.testing.assert_allclose(res.transform.transform_points(fixed), direct.transform.transform_points(fixed),
                               atol=1e-9)
    np.testing.assert_allclose(res.transform.transform_points(fixed), truth.transform_points(fixed), atol=1e-6)
    assert [s.kind for s in res.stages] == ["points"] and res.warnings == ()
    with pytest.raises(InvalidInputError, match="fixed_points"):
        run_pipeline([PointSetStage("rigid")], RegistrationInputs(moving_points=moving))
