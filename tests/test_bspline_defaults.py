"""B-spline defaults keep a right result (issue 11, scope 3).

The lung CT of ``../shared/data/lung3d`` moved by a known rigid transform (SimpleITK
resampling, cubic B-spline, -1024 HU outside): a deformable registration of a pair that a
linear transform aligns must not move the linear answer.  The error is measured at the 100
landmark points against the true mapping.
"""

from __future__ import annotations

import numpy as np
import pytest

import regframe as rf
from regframe.registration import register
from regframe.registration.deformable import register_bspline

from conftest import data_path

sitk = pytest.importorskip("SimpleITK")


@pytest.fixture(scope="module")
def lung_moved_rigidly():
    """(fixed, moving, true transform as a regframe AffineTransform, landmarks)."""
    ct = sitk.ReadImage(str(data_path("lung3d", "3DCT_lung_baseline_small.mha")), sitk.sitkFloat64)
    landmarks = np.loadtxt(data_path("lung3d", "3DCT_lung_baseline_landmarks.txt"), skiprows=2)
    size = np.array(ct.GetSize(), float)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(ct.TransformContinuousIndexToPhysicalPoint(list((size - 1) / 2)))
    rigid.SetRotation(*np.deg2rad([4.0, -3.0, 10.0]))
    rigid.SetTranslation((8.0, -6.0, 5.0))
    moving = sitk.Resample(ct, ct, rigid, sitk.sitkBSpline, -1024.0)  # moving(y) = ct(rigid(y))
    inverse = rigid.GetInverse()  # maps fixed (ct) points to moving points
    truth = rf.AffineTransform(3)
    truth.fixed_parameters = np.array(inverse.GetCenter())
    truth.parameters = np.r_[np.array(inverse.GetMatrix()), np.array(inverse.GetTranslation())]
    return rf.from_sitk(ct), rf.from_sitk(moving), truth, landmarks


def _stage_samplers(stage, fixed):
    from regframe.registration.pipeline.base import RegistrationInputs

    schedule = stage.levels(RegistrationInputs(fixed=fixed, moving=fixed))
    return stage.samplers(fixed, schedule, stage.meshes(fixed, schedule), seed=0)


def test_bspline_samples_are_jittered_in_3d_and_on_voxel_centres_in_2d():
    """Default policy (``BSplineStage.jittered``) and the explicit ``jitter`` option."""
    from regframe.registration.stages.bspline import BSplineStage

    vol, img = rf.Image(np.zeros((64, 80, 96))), rf.Image(np.zeros((400, 500)))
    for stage, fixed, want in ((BSplineStage(), vol, True), (BSplineStage(), img, False),
                               (BSplineStage(jitter=False), vol, False), (BSplineStage(jitter=True), img, True),
                               (BSplineStage(sampling=0.3), vol, True)):
        samplers = _stage_samplers(stage, fixed)
        assert [s.jitter for s in samplers] == [want] * len(samplers), (stage, fixed.ndim)
    # 3-D levels keep up to 65536 samples, 2-D levels at most 32768
    finest3 = _stage_samplers(BSplineStage(), vol)[-1]
    assert finest3.fraction * vol.n_voxels == pytest.approx(1 << 16)
    finest2 = _stage_samplers(BSplineStage(), img)[-1]
    assert finest2.fraction * img.n_voxels <= (1 << 15) + 1


def _errors(transform, truth, landmarks) -> np.ndarray:
    return np.linalg.norm(transform.transform_points(landmarks) - truth.transform_points(landmarks), axis=1)


@pytest.mark.slow
def test_bspline_stage_started_at_the_truth_stays_there(lung_moved_rigidly):
    """Linear stage = the exact answer: the B-spline stage must not fit resampling noise.

    With the former default weight (0.05 / mm^2, far below the data term's curvature) the
    stage moved the landmarks by 0.25 mm on average and up to 2 mm; with the curvature-scaled
    weight on voxel-centre samples 0.046 / 0.31 mm; jittered 3-D samples (65536): 0.054 /
    0.25 mm (seeds 0-3: 0.18-0.25 mm at most).
    """
    fixed, moving, truth, landmarks = lung_moved_rigidly
    res = register_bspline(fixed, moving, linear_stage=truth)
    err = _errors(res.transform, truth, landmarks)
    assert err.mean() <= 0.1 and err.max() <= 0.3, (err.mean(), err.max())


@pytest.mark.slow
def test_bspline_registration_keeps_the_linear_stage_result(lung_moved_rigidly):
    """register(transform="bspline") on a rigidly moved CT: the deformable stage adds nothing.

    Measured as what the B-spline link moves the landmarks from the linear stage's mapping
    (resampling noise only; the truth needs no deformation): 0.056 / 0.26 mm (on voxel-centre
    samples 0.060 / 0.30 mm), the same noise floor as started at the truth (test above).  The linear stage itself must be close: with
    the linear stages' border margin (``defaults.BORDER_MARGIN``) 0.021 / 0.044 mm, without
    it 0.17 / 0.31 mm.
    """
    fixed, moving, truth, landmarks = lung_moved_rigidly
    res = register(fixed, moving, transform="bspline")
    linear = _errors(res.transform[0], truth, landmarks)
    moved = _errors(res.transform, res.transform[0], landmarks)
    assert linear.mean() <= 0.06 and linear.max() <= 0.15, (linear.mean(), linear.max())
    assert moved.mean() <= 0.1 and moved.max() <= 0.3, (moved.mean(), moved.max())


@pytest.mark.slow
def test_bspline_registration_of_the_rigidly_moved_lung_ct_within_done_criterion(lung_moved_rigidly):
    """Issue 11: <= 0.1 mm mean and <= 0.3 mm max at the 100 landmarks.

    Was 0.18 / 0.31 mm; 0.077 / 0.30 with the linear stages' border margin; 0.068 / 0.25 mm
    with jittered 3-D B-spline samples (seeds 0-3: 0.061-0.068 / 0.15-0.25 mm).
    """
    fixed, moving, truth, landmarks = lung_moved_rigidly
    err = _errors(register(fixed, moving, transform="bspline").transform, truth, landmarks)
    assert err.mean() <= 0.1 and err.max() <= 0.3, (err.mean(), err.max())
