"""regframe.Image: geometry vs SimpleITK, axis order, validation, immutability."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from regframe import Image
from regframe.errors import InvalidInputError, NonFiniteError, ShapeError

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the geometry oracle")


def _oblique_case(ndim: int, seed: int) -> tuple[Image, object]:
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(3, 9, ndim))
    if ndim == 2:
        a = rng.uniform(-np.pi, np.pi)
        direction = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    else:
        direction = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    if seed % 2:
        direction[:, -1] *= -1.0  # improper direction (reflection)
    spacing = rng.uniform(0.3, 3.0, ndim)  # anisotropic
    origin = rng.normal(size=ndim) * 50.0
    arr = rng.normal(size=shape)
    image = Image(arr, spacing, origin, direction)
    s = sitk.GetImageFromArray(arr)
    s.SetSpacing(spacing.tolist())
    s.SetOrigin(origin.tolist())
    s.SetDirection(direction.ravel().tolist())
    return image, s


CASES = [(2, 0), (2, 1), (3, 2), (3, 3), (3, 4)]


@pytest.mark.parametrize("ndim, seed", CASES)
def test_index_point_mappings_match_sitk(ndim, seed):
    image, s = _oblique_case(ndim, seed)
    rng = np.random.default_rng(seed + 100)
    size = np.array(image.size, dtype=float)
    scale = float(np.max(np.abs(image.origin)) + np.max(size * image.spacing))
    assert image.size == s.GetSize()

    ci = rng.uniform(-2.0, size + 1.0, size=(200, ndim))
    pts = image.index_to_physical(ci)
    expected = np.array([s.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in ci])
    err_point = np.max(np.abs(pts - expected)) / scale
    assert err_point <= 1e-14, err_point

    back = image.physical_to_index(expected)
    expected_ci = np.array([s.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in expected])
    assert np.max(np.abs(back - expected_ci)) <= 1e-12
    assert np.max(np.abs(back - ci)) <= 1e-12

    idx, inside = image.physical_to_nearest_index(expected)
    expected_idx = np.array([s.TransformPhysicalPointToIndex(tuple(p)) for p in expected])
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(inside, np.all((expected_idx >= 0) & (expected_idx < size), axis=1))
    assert inside.any() and not inside.all()

    np.testing.assert_allclose(
        image.index_to_physical_matrix, np.reshape(s.GetDirection(), (ndim, ndim)) @ np.diag(s.GetSpacing()),
        rtol=0, atol=1e-15,
    )
    np.testing.assert_allclose(image.physical_to_index_matrix @ image.index_to_physical_matrix, np.eye(ndim), atol=1e-12)


@pytest.mark.parametrize("ndim, seed", CASES)
def test_voxel_points_follow_c_ravel_order(ndim, seed):
    image, s = _oblique_case(ndim, seed)
    pts = image.voxel_points()
    idx = image.voxel_indices()
    assert pts.shape == (image.n_voxels, ndim)
    flat = image.array.ravel()
    for v in np.random.default_rng(seed).choice(image.n_voxels, 25, replace=False):
        index = tuple(int(i) for i in idx[v])
        np.testing.assert_allclose(pts[v], s.TransformIndexToPhysicalPoint(index), rtol=0, atol=1e-12)
        assert flat[v] == s.GetPixel(index)
    # x varies fastest
    np.testing.assert_array_equal(idx[1] - idx[0], np.eye(ndim, dtype=int)[0])


@pytest.mark.parametrize("ndim, seed", CASES)
def test_centre_and_bounding_box(ndim, seed):
    image, s = _oblique_case(ndim, seed)
    size = np.array(image.size, dtype=float)
    centre = s.TransformContinuousIndexToPhysicalPoint(tuple((size - 1.0) / 2.0))
    np.testing.assert_allclose(image.physical_center(), centre, rtol=0, atol=1e-12)
    corners = np.array(np.meshgrid(*[[0.0, n - 1.0] for n in size])).reshape(ndim, -1).T
    cp = np.array([s.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in corners])
    lo, hi = image.bounding_box()
    np.testing.assert_allclose(lo, cp.min(axis=0), atol=1e-12)
    np.testing.assert_allclose(hi, cp.max(axis=0), atol=1e-12)
    lo2, hi2 = image.bounding_box(voxel_edges=True)
    assert np.all(lo2 < lo) and np.all(hi2 > hi)
    # every voxel centre is inside both boxes
    pts = image.voxel_points()
    assert np.all(pts >= lo - 1e-9) and np.all(pts <= hi + 1e-9)


def test_axis_order_and_defaults():
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)  # (nz, ny, nx)
    image = Image(arr)
    assert image.size == (4, 3, 2)
    assert image.shape == (2, 3, 4)
    assert image.ndim == 3 and image.dtype == np.int16 and image.n_voxels == 24
    np.testing.assert_array_equal(image.spacing, np.ones(3))
    np.testing.assert_array_equal(image.origin, np.zeros(3))
    np.testing.assert_array_equal(image.direction, np.eye(3))
    # array[k, j, i] sits at index (i, j, k)
    assert image.array[1, 2, 3] == 23
    idx, inside = image.physical_to_nearest_index([[3.0, 2.0, 1.0]])
    assert idx.tolist() == [[3, 2, 1]] and inside.tolist() == [True]
    s = sitk.GetImageFromArray(arr)
    assert s.GetSize() == image.size and s.GetPixel(3, 2, 1) == 23


def test_round_half_up_and_inside_rule():
    image = Image(np.zeros((3, 4)), spacing=(2.0, 1.0), origin=(10.0, 0.0))
    ci = np.array([[-0.5, 0.0], [0.5, 1.5], [3.5, 0.0], [3.4999, 2.4999], [-0.50001, 0.0], [1.0, 2.5]])
    pts = image.index_to_physical(ci)
    idx, inside = image.physical_to_nearest_index(pts)
    assert idx.tolist() == [[0, 0], [1, 2], [4, 0], [3, 2], [-1, 0], [1, 3]]
    assert inside.tolist() == [True, True, False, True, False, False]
    assert image.is_inside(pts).tolist() == [True, True, False, True, False, False]


def test_never_mutates_and_read_only():
    arr = np.arange(12.0).reshape(3, 4)
    spacing = np.array([1.0, 2.0])
    image = Image(arr, spacing=spacing)
    arr[0, 0] = 99.0
    spacing[0] = 5.0
    assert image.array[0, 0] == 0.0 and image.spacing[0] == 1.0
    assert arr.flags.writeable and spacing.flags.writeable
    with pytest.raises(ValueError):
        image.array[0, 0] = 1.0
    with pytest.raises(ValueError):
        image.spacing[0] = 3.0
    view = Image(arr, copy=False)
    assert np.shares_memory(view.array, arr) and arr.flags.writeable
    assert not view.array.flags.writeable


def test_with_array_copy_same_geometry_and_pickle():
    image, _ = _oblique_case(3, 2)
    other = image.with_array(np.ones(image.shape, dtype=np.float32))
    assert other.dtype == np.float32 and other.same_geometry(image)
    with pytest.raises(ShapeError, match="shape"):
        image.with_array(np.ones(image.size))  # ITK order by mistake
    dup = image.copy()
    assert dup.same_geometry(image) and np.array_equal(dup.array, image.array)
    assert not np.shares_memory(dup.array, image.array)
    assert copy.deepcopy(image).same_geometry(image)
    restored = pickle.loads(pickle.dumps(image))
    assert restored.same_geometry(image, tol=0.0) and np.array_equal(restored.array, image.array)
    shifted = Image(image.array, image.spacing, image.origin + 1e-3, image.direction)
    assert not shifted.same_geometry(image) and shifted.same_geometry(image, tol=1e-2)
    assert not Image(np.zeros((2, 2))).same_geometry(Image(np.zeros((2, 3))))
    with pytest.raises(TypeError):
        image.same_geometry(np.zeros(3))
    r = repr(image)
    assert r.startswith("Image(size=") and "spacing=" in r and "direction=[" in r
    assert "direction=identity" in repr(Image(np.zeros((2, 2))))


def test_nonfinite_values_allowed_but_reported():
    arr = np.zeros((3, 3))
    assert not Image(arr).has_nonfinite()
    arr[1, 1] = np.nan
    assert Image(arr).has_nonfinite()
    assert not Image(np.zeros((3, 3), dtype=np.int32)).has_nonfinite()


def test_direction_accepts_sitk_flat_layout():
    d = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix()
    image = Image(np.zeros((2, 3, 4)), direction=d.ravel())
    np.testing.assert_array_equal(image.direction, d)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(array=np.zeros(5)), ShapeError, "2-D or 3-D"),
        (dict(array=np.zeros((2, 2, 2, 2, 2))), ShapeError, "2-D or 3-D"),
        (dict(array=np.zeros((0, 3))), ShapeError, "at least one voxel"),
        (dict(array=np.zeros((2, 2), dtype=complex)), InvalidInputError, "real numbers"),
        (dict(array=np.array([["a", "b"]])), InvalidInputError, "real numbers"),
        (dict(array=np.zeros((2, 2)), spacing=(1.0, 0.0)), InvalidInputError, "> 0"),
        (dict(array=np.zeros((2, 2)), spacing=(1.0, np.nan)), NonFiniteError, "spacing"),
        (dict(array=np.zeros((2, 2)), spacing=(1.0, 1.0, 1.0)), ShapeError, "spacing"),
        (dict(array=np.zeros((2, 2)), origin=(1.0,)), ShapeError, "origin"),
        (dict(array=np.zeros((2, 2)), origin=(1.0, np.inf)), NonFiniteError, "origin"),
        (dict(array=np.zeros((2, 2)), direction=[[1.0, 2.0], [2.0, 4.0]]), InvalidInputError, "invertible"),
        (dict(array=np.zeros((2, 2)), direction=np.eye(3)), ShapeError, "direction"),
        (dict(array=np.zeros((2, 2)), direction=[[1.0, np.nan], [0.0, 1.0]]), NonFiniteError, "direction"),
    ],
)
def test_validation_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        Image(**kwargs)


def test_point_validation():
    image = Image(np.zeros((3, 4)))
    with pytest.raises(ShapeError, match=r"\(n, 2\)"):
        image.physical_to_index(np.zeros((5, 3)))
    with pytest.raises(NonFiniteError):
        image.is_inside([[np.nan, 0.0]])
    with pytest.raises(ShapeError):
        image.index_to_physical(np.zeros((2, 2, 2)))
    assert image.index_to_physical([1.0, 2.0]).shape == (1, 2)
