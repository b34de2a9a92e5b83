"""Resampling, displacement fields and the multi-resolution pyramid against SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest

import regframe as rf
from regframe.errors import InvalidInputError
from regframe.registration import (
    LevelSchedule,
    displacement_field,
    resample,
    shrink_geometry,
    shrink_image,
    smooth_image,
)
from regframe.testing.strategies import smooth_arrays

sitk = pytest.importorskip("SimpleITK")


def _image(ndim, seed=0):
    size = (23, 19, 11)[:ndim]
    arr = smooth_arrays(tuple(reversed(size)), seed)
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.eye(ndim)
    direction[:2, :2] = [[c, -s], [s, c]]
    return rf.Image(arr, spacing=(0.9, 1.3, 2.0)[:ndim], origin=(4.0, -3.0, 7.0)[:ndim], direction=direction)


def _affine(ndim, center):
    t = rf.AffineTransform(ndim)
    t.fixed_parameters = center
    a = np.eye(ndim) + 0.05 * np.arange(1, ndim * ndim + 1).reshape(ndim, ndim) / ndim**2
    t.parameters = np.r_[a.ravel(), np.arange(1, ndim + 1) * 0.7]
    return t


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("interp", ["linear", "nearest"])
def test_resample_matches_simpleitk(ndim, interp):
    img = _image(ndim)
    t = _affine(ndim, img.physical_center())
    ours = resample(img, t, reference=img, interpolator=interp, default_value=-5.0)
    sitk_img = rf.to_sitk(img)
    st = sitk.AffineTransform(ndim)
    st.SetFixedParameters(tuple(t.fixed_parameters))
    st.SetParameters(tuple(t.parameters))
    mode = sitk.sitkLinear if interp == "linear" else sitk.sitkNearestNeighbor
    ref = sitk.GetArrayFromImage(sitk.Resample(sitk_img, sitk_img, st, mode, -5.0, sitk.sitkFloat64))
    np.testing.assert_allclose(ours.array, ref, rtol=1e-9, atol=1e-9)
    assert ours.same_geometry(img)


def test_resample_labels_keeps_dtype_and_values():
    labels = rf.Image(np.repeat(np.arange(6, dtype=np.uint8), 6).reshape(6, 6))
    t = rf.TranslationTransform(2)
    t.parameters = [0.4, -0.3]
    out = resample(labels, t, interpolator="nearest")
    assert out.dtype == np.uint8
    assert set(np.unique(out.array)) <= set(range(6))


def test_resample_does_not_modify_inputs():
    img = _image(2)
    t = _affine(2, img.physical_center())
    before_p, before_a = t.parameters, img.array.copy()
    resample(img, t, interpolator="bspline")
    np.testing.assert_array_equal(t.parameters, before_p)
    np.testing.assert_array_equal(img.array, before_a)


def test_resample_dimension_mismatch_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="same dimension"):
        resample(_image(2), rf.AffineTransform(3))


def test_displacement_field_of_translation_and_layout():
    img = _image(3)
    t = rf.TranslationTransform(3)
    t.parameters = [1.0, -2.0, 0.5]
    field = displacement_field(t, img)
    assert field.shape == img.shape + (3,)
    np.testing.assert_allclose(field, np.broadcast_to([1.0, -2.0, 0.5], field.shape))
    # the layout is SimpleITK's vector-image array layout
    vec = sitk.GetImageFromArray(field, isVector=True)
    assert vec.GetNumberOfComponentsPerPixel() == 3
    assert vec.GetSize() == img.size


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("factor", [2, 3])
def test_shrink_geometry_matches_simpleitk(ndim, factor):
    img = _image(ndim)
    ours = shrink_geometry(img, factor)
    ref = sitk.Shrink(rf.to_sitk(img), [factor] * ndim)
    assert ours.size == ref.GetSize()
    np.testing.assert_allclose(ours.spacing, ref.GetSpacing(), rtol=1e-12)
    np.testing.assert_allclose(ours.origin, ref.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(ours.direction.ravel(), ref.GetDirection(), atol=1e-12)


def test_shrink_image_samples_the_smoothed_image_at_new_centres():
    img = _image(2)
    small = shrink_image(img, 2)
    # a linear ramp is reproduced exactly by linear resampling
    pts = small.voxel_points()
    ramp = rf.Image(np.zeros(img.shape), spacing=img.spacing, origin=img.origin, direction=img.direction)
    vox = ramp.voxel_points()
    ramp = ramp.with_array((vox @ [0.3, -0.2]).reshape(img.shape))
    np.testing.assert_allclose(shrink_image(ramp, 2).array.ravel(), pts @ [0.3, -0.2], atol=1e-9)
    assert shrink_image(img, 1) is img


def test_smoothing_preserves_constants_and_uses_physical_units():
    img = rf.Image(np.full((9, 12), 3.5), spacing=(2.0, 0.5))
    np.testing.assert_allclose(smooth_image(img, 1.0).array, 3.5)
    impulse = np.zeros((41, 41))
    impulse[20, 20] = 1.0
    blurred = smooth_image(rf.Image(impulse, spacing=(2.0, 1.0)), 4.0, physical=True).array
    # sigma 4 mm = 2 voxels along x (spacing 2) and 4 voxels along y
    var_x = np.sum(blurred.sum(axis=0) * (np.arange(41) - 20) ** 2)
    var_y = np.sum(blurred.sum(axis=1) * (np.arange(41) - 20) ** 2)
    assert var_x == pytest.approx(4.0, rel=0.02)
    assert var_y == pytest.approx(16.0, rel=0.02)


def test_level_schedule_validation_and_levels():
    sched = LevelSchedule((4, 2, 1), (2.0, 1.0, 0.0))
    assert sched.n_levels == 3
    assert sched.level(0, 3).shrink_factors == (4, 4, 4)
    with pytest.raises(InvalidInputError, match="same, non-zero length"):
        LevelSchedule((2, 1), (1.0,))
    with pytest.raises(InvalidInputError, match="integers >= 1"):
        LevelSchedule((0,), (1.0,))


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(("factor", "sigma"), [(4, 2.0), (3, 1.5), (2, 0.0), (1, 1.0)])
def test_level_image_equals_smoothing_then_trilinear_shrinking(ndim, factor, sigma):
    from scipy import ndimage

    from regframe.registration.pyramid import Level, level_image

    img = _image(ndim, seed=3)
    level = Level((factor,) * ndim, sigma, sigma_in_physical_units=False)
    # reference: full-image Gaussian, then map_coordinates at the shrunken centres (ITK geometry)
    smooth = ndimage.gaussian_filter(img.array.astype(np.float64), sigma, mode="nearest") if sigma else img.array
    grid = shrink_geometry(img, factor)
    idx = img.physical_to_index(grid.voxel_points())
    ref = ndimage.map_coordinates(smooth, idx[:, ::-1].T, order=1, mode="nearest").reshape(grid.shape)
    out = level_image(img, level)
    assert out.same_geometry(grid)
    np.testing.assert_allclose(out.array, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
def test_level_image_of_a_full_resolution_level_holds_one_float64_copy(dtype):
    """A smoothed full-resolution level costs one float64 array (issue 12: three at a time before),
    with the same bits as filtering a float64 copy axis by axis."""
    import tracemalloc

    from scipy import ndimage

    from regframe.registration.pyramid import Level, level_image

    arr = (100 * smooth_arrays((40, 44, 48), 5)).astype(dtype)
    img = rf.Image(arr, spacing=(1.2, 0.9, 1.0))
    level = Level((1, 1, 1), 1.5, sigma_in_physical_units=False)
    level_image(img, Level((2, 2, 2), 1.0))  # warm-up
    tracemalloc.start()
    try:
        out = level_image(img, level)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    ref = arr.astype(np.float64)
    for axis in (2, 1, 0):
        ref = ndimage.gaussian_filter1d(ref, 1.5, axis=axis, mode="nearest")
    assert out.array.dtype == np.float64 and out.array.tobytes() == ref.tobytes()
    assert peak <= 1.25 * 8 * arr.size, f"peak {peak / (8 * arr.size):.2f} float64 copies"


def test_image_pyramid_computes_each_level_once_and_methods_check_its_schedule():
    from regframe.metrics import MeanSquares
    from regframe.optimizers import RegularStepGradientDescent
    from regframe.registration import ImagePyramid, RegistrationMethod

    img = _image(2)
    schedule = LevelSchedule((4, 2, 1), (2.0, 1.0, 0.0))
    pyramid = ImagePyramid(img, schedule)
    assert pyramid.level(0) is pyramid.level(0)
    assert pyramid.level(2) is img
    method = RegistrationMethod(metric=MeanSquares(), optimizer=RegularStepGradientDescent(n_iterations=2),
                                schedule=LevelSchedule((4, 2), (2.0, 1.0)))
    res = method.run(pyramid, pyramid, rf.TranslationTransform(2))  # a prefix of the levels is fine
    assert len(res.iterations_per_level) == 2
    other = RegistrationMethod(metric=MeanSquares(), optimizer=RegularStepGradientDescent(n_iterations=2),
                               schedule=LevelSchedule((2, 1), (1.0, 0.0)))
    with pytest.raises(InvalidInputError, match="must begin with"):
        other.run(pyramid, img, rf.TranslationTransform(2))
    with pytest.raises(InvalidInputError, match="ImagePyramid"):
        other.run(img.array, img, rf.TranslationTransform(2))


def test_resample_keeps_the_input_pixel_type_rounding_and_clipping(shared_data):
    ct = rf.read_image(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    assert ct.dtype == np.int16
    t = rf.Euler3DTransform()
    t.fixed_parameters = ct.physical_center()
    t.parameters = [0.05, -0.03, 0.1, 2.3, -1.7, 0.9]
    exact = resample(ct, t, interpolator="bspline", default_value=-1024.0, dtype=np.float64)
    out = resample(ct, t, interpolator="bspline", default_value=-1024.0)
    assert out.dtype == np.int16
    assert not np.array_equal(exact.array, np.rint(exact.array))  # the rounding is exercised
    np.testing.assert_array_equal(out.array, np.clip(np.rint(exact.array), -32768, 32767))
    # B-spline overshoot at a 0/255 step must be clipped, not wrapped, in uint8
    step = rf.Image(np.where(np.arange(24)[None, :] < 12, 0, 255).repeat(20, axis=0).astype(np.uint8))
    shift = rf.TranslationTransform(2)
    shift.parameters = [0.37, 0.0]
    wide = resample(step, shift, interpolator="bspline", dtype=np.float64).array
    assert wide.min() < -0.5 and wide.max() > 255.5
    narrow = resample(step, shift, interpolator="bspline")
    assert narrow.dtype == np.uint8
    np.testing.assert_array_equal(narrow.array, np.clip(np.rint(wide), 0, 255))
    assert resample(_image(2).with_array(_image(2).array.astype(np.float32)), shift).dtype == np.float32


@pytest.mark.parametrize("bad", ["banana", np.complex128, "U4", object])
def test_resample_rejects_an_unknown_dtype_naming_the_choices(bad):
    with pytest.raises(InvalidInputError, match=r"dtype must be one of .*float32"):
        resample(_image(2), rf.TranslationTransform(2), dtype=bad)


def test_resample_memory_is_bounded_by_a_few_output_copies():
    """Peak numpy memory <= 4 float32 copies of the output (issue 12: was 12.6x-18x)."""
    import tracemalloc

    from regframe.datasets import phantom

    img = phantom(3, 128, seed=1)  # 128 x 115 x 90 float32, 5.1 MiB
    t = _affine(3, img.physical_center())
    resample(_image(3), t)  # warm-up
    tracemalloc.start()
    try:
        out = resample(img, t, reference=img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.dtype == np.float32
    assert peak <= 4 * 4 * img.array.size, f"peak {peak / (4 * img.array.size):.2f} float32 copies"
