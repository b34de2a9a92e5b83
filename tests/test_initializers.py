"""Centred and landmark initializers."""

from __future__ import annotations

import numpy as np
import pytest

import regframe as rf
from regframe.errors import InvalidInputError, ShapeError
from regframe.registration import (
    affine_from_points,
    centered_initializer,
    image_center,
    landmark_initializer,
    similarity_from_points,
)
from regframe.testing.strategies import smooth_arrays

sitk = pytest.importorskip("SimpleITK")


def _pair(ndim, shift):
    size = (30, 24, 16)[:ndim]
    arr = smooth_arrays(tuple(reversed(size)), 3)
    arr -= arr.min()
    fixed = rf.Image(arr, spacing=(1.2, 0.8, 2.0)[:ndim], origin=(5.0, -4.0, 2.0)[:ndim])
    moving = rf.Image(arr, spacing=(1.2, 0.8, 2.0)[:ndim], origin=np.add((5.0, -4.0, 2.0)[:ndim], shift))
    return fixed, moving


@pytest.mark.parametrize(
    ("factory", "sitk_factory", "ndim"),
    [
        (rf.Euler2DTransform, sitk.Euler2DTransform, 2),
        (lambda: rf.AffineTransform(2), lambda: sitk.AffineTransform(2), 2),
        (rf.VersorRigid3DTransform, sitk.VersorRigid3DTransform, 3),
        (rf.Similarity3DTransform, sitk.Similarity3DTransform, 3),
    ],
)
@pytest.mark.parametrize("mode", ["geometry", "moments"])
def test_centered_initializer_matches_simpleitk(factory, sitk_factory, ndim, mode):
    fixed, moving = _pair(ndim, (6.0, -3.5, 2.0)[:ndim])
    ours = centered_initializer(fixed, moving, factory(), mode=mode)
    flag = sitk.CenteredTransformInitializerFilter.GEOMETRY if mode == "geometry" else sitk.CenteredTransformInitializerFilter.MOMENTS
    ref = sitk.CenteredTransformInitializer(rf.to_sitk(fixed), rf.to_sitk(moving), sitk_factory(), flag)
    np.testing.assert_allclose(ours.fixed_parameters[:ndim], ref.GetFixedParameters()[:ndim], atol=1e-6)
    np.testing.assert_allclose(ours.parameters, ref.GetParameters(), atol=1e-6)


def test_centered_initializer_does_not_modify_its_input_and_maps_centres():
    fixed, moving = _pair(2, (10.0, 4.0))
    t = rf.Euler2DTransform()
    before = t.parameters
    out = centered_initializer(fixed, moving, t, mode="moments")
    np.testing.assert_array_equal(t.parameters, before)
    np.testing.assert_allclose(out.transform_point(image_center(fixed, mode="moments")),
                               image_center(moving, mode="moments"), atol=1e-9)
    tr = centered_initializer(fixed, moving, rf.TranslationTransform(2))
    np.testing.assert_allclose(tr.parameters, [10.0, 4.0], atol=1e-12)


def test_moments_of_constant_image_is_a_clear_error():
    img = rf.Image(np.ones((5, 5)))
    with pytest.raises(InvalidInputError, match="constant"):
        image_center(img, mode="moments")


def _points(ndim, n=12, seed=1):
    return np.random.default_rng(seed).uniform(-60, 60, size=(n, ndim)) + 7.0


@pytest.mark.parametrize("angle", [0.3, 2.9, -3.0])
def test_landmark_rigid_2d_recovers_large_rotations(angle):
    truth = rf.Euler2DTransform()
    truth.fixed_parameters = [3.0, -2.0]
    truth.parameters = [angle, 12.0, -5.0]
    f = _points(2)
    m = truth.transform_points(f)
    fit = landmark_initializer(f, m, rf.Euler2DTransform())
    np.testing.assert_allclose(fit.transform_points(f), m, atol=1e-8)


@pytest.mark.parametrize("kind", ["versor", "euler", "similarity", "affine"])
def test_landmark_3d_families(kind):
    f = _points(3)
    if kind == "affine":
        truth = rf.AffineTransform(3)
        truth.fixed_parameters = [1.0, 2.0, 3.0]
        truth.parameters = np.r_[(np.eye(3) + [[0.1, 0.05, 0], [-0.02, -0.1, 0.03], [0.0, 0.04, 0.08]]).ravel(), 4, 5, 6]
        start = rf.AffineTransform(3)
    else:
        truth = rf.Similarity3DTransform()
        truth.fixed_parameters = [1.0, 2.0, 3.0]
        truth.set_rotation([0.2, -1.0, 0.4], 2.5)
        p = truth.parameters
        p[3:6] = [4.0, -5.0, 6.0]
        p[6] = 1.2 if kind == "similarity" else 1.0
        truth.parameters = p
        start = {"versor": rf.VersorRigid3DTransform(), "euler": rf.Euler3DTransform(),
                 "similarity": rf.Similarity3DTransform()}[kind]
    m = truth.transform_points(f)
    fit = landmark_initializer(f, m, start)
    assert type(fit) is type(start)
    np.testing.assert_allclose(fit.transform_points(f), m, atol=1e-7)


def test_landmark_least_squares_with_noise_matches_closed_forms():
    rng = np.random.default_rng(5)
    f = _points(2, n=30)
    a = np.array([[1.1, 0.2], [-0.1, 0.9]])
    m = f @ a.T + [3.0, -4.0] + rng.normal(scale=0.5, size=f.shape)
    fit = landmark_initializer(f, m, rf.AffineTransform(2))
    a_ls, o_ls = affine_from_points(f, m)
    np.testing.assert_allclose(fit.transform_points(f), f @ a_ls.T + o_ls, atol=1e-8)
    sim = landmark_initializer(f, m, rf.Similarity2DTransform())
    a_s, o_s = similarity_from_points(f, m)
    np.testing.assert_allclose(sim.transform_points(f), f @ a_s.T + o_s, atol=1e-6)


def test_landmark_errors():
    with pytest.raises(ShapeError, match="pair up"):
        landmark_initializer(np.zeros((3, 2)), np.zeros((4, 2)), rf.AffineTransform(2))
    with pytest.raises(InvalidInputError, match="at least 3"):
        affine_from_points(np.zeros((2, 2)), np.zeros((2, 2)))


@pytest.mark.parametrize("ndim", [2, 3])
def test_moments_centre_equals_the_weighted_mean_of_voxel_centres(ndim):
    rng = np.random.default_rng(4)
    shape = (9, 7, 5)[:ndim]
    arr = rng.random(shape) - 0.3
    arr[(0,) * ndim] = np.nan  # non-finite voxels weigh nothing
    direction = np.linalg.qr(rng.normal(size=(ndim, ndim)))[0]
    img = rf.Image(arr, spacing=(0.7, 1.3, 2.0)[:ndim], origin=(3.0, -2.0, 5.0)[:ndim], direction=direction)
    mask_arr = (rng.random(shape) > 0.4).astype(np.uint8)
    for mask in (None, img.with_array(mask_arr)):
        values = arr.ravel()
        use = np.isfinite(values) if mask is None else np.isfinite(values) & (mask_arr.ravel() > 0)
        w = np.where(use, values - values[use].min(), 0.0)
        expected = (w[:, None] * img.voxel_points()).sum(axis=0) / w.sum()
        np.testing.assert_allclose(image_center(img, mode="moments", mask=mask), expected, rtol=0, atol=1e-12)
