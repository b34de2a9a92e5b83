"""warp_stack: equal to per-slice resample(), any transform kind, thread-independent, validated input."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import regframe as rf
from regframe.errors import InvalidInputError, ShapeError
from regframe.registration.resample import resample
from regframe.registration.warp import slice_image, stack_slices


def _stack(rng, nz=5, dtype=np.float32) -> rf.Image:
    arr = (rng.random((nz, 37, 45)) * 200).astype(dtype)
    direction = np.eye(3)
    direction[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]  # rotated in-plane axes
    return rf.Image(arr, spacing=(0.7, 1.3, 2.0), origin=(3.0, -2.0, 1.0), direction=direction)


def _affines(rng, nz, centre):
    out = []
    for _ in range(nz):
        t = rf.AffineTransform(2)
        t.center = centre
        t.parameters = np.r_[np.eye(2).ravel() + rng.normal(0, 0.05, 4), rng.normal(0, 3, 2)]
        out.append(t)
    return out


def _per_slice(stack, transforms, **kw):
    array, template = stack_slices(stack)
    return np.stack([resample(slice_image(array, template, k), t, **kw).array for k, t in enumerate(transforms)])


@pytest.mark.parametrize("interpolator", ["linear", "nearest", "bspline"])
def test_equals_per_slice_resample(rng, interpolator):
    stack = _stack(rng)
    _, template = stack_slices(stack)
    transforms = _affines(rng, 5, template.physical_center())
    got = rf.warp_stack(stack, transforms, interpolator=interpolator, default_value=-7.0, dtype=np.float64)
    want = _per_slice(stack, transforms, interpolator=interpolator, default_value=-7.0, dtype=np.float64)
    assert got.shape == stack.shape and got.same_geometry(stack)
    np.testing.assert_allclose(got.array, want, rtol=0, atol=1e-9)
    assert np.any(got.array == -7.0) and np.any(got.array != -7.0)


def test_default_dtype_and_one_transform_for_all(rng):
    stack = _stack(rng)
    t = rf.Euler2DTransform(center=(0.0, 5.0), angle=0.1, translation=(2.0, -1.0))
    got = rf.warp_stack(stack, t)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.array, _per_slice(stack, [t] * 5), rtol=1e-6, atol=1e-4)
    ints = stack.with_array(stack.array.astype(np.int16))
    kept = rf.warp_stack(ints, t)  # the input's pixel type, as resample() keeps it
    assert kept.dtype == np.int16
    np.testing.assert_array_equal(kept.array, np.clip(np.rint(_per_slice(ints, [t] * 5)), -32768, 32767))
    assert rf.warp_stack(ints, t, interpolator="nearest").dtype == np.int16
    rounded = rf.warp_stack(ints, t, dtype=np.uint8)
    np.testing.assert_array_equal(rounded.array, np.clip(np.rint(_per_slice(ints, [t] * 5)), 0, 255))


def test_non_linear_and_composite_transforms(rng):
    stack = _stack(rng, nz=3, dtype=np.float64)
    _, template = stack_slices(stack)
    bsp = rf.BSplineTransform.from_domain(template, mesh_size=3)
    bsp.parameters = rng.normal(0, 1.0, bsp.n_parameters)
    aff = _affines(rng, 1, template.physical_center())[0]
    comp_linear = rf.CompositeTransform(2, [aff, rf.Euler2DTransform(angle=0.05, translation=(1.0, 2.0))])
    transforms = [bsp, comp_linear, rf.CompositeTransform(2, [aff, bsp])]
    got = rf.warp_stack(stack, transforms, default_value=1.5)
    np.testing.assert_allclose(got.array, _per_slice(stack, transforms, default_value=1.5), rtol=0, atol=1e-9)


def test_sequence_input_and_inputs_unchanged(rng):
    stack = _stack(rng, nz=3)
    array, template = stack_slices(stack)
    slices = [slice_image(array, template, k) for k in range(3)]
    before = array.copy()
    t = _affines(rng, 3, template.physical_center())
    params = [x.parameters.copy() for x in t]
    got = rf.warp_stack(slices, t)
    assert got.ndim == 3 and got.shape == stack.shape
    np.testing.assert_allclose(got.spacing[:2], template.spacing)
    np.testing.assert_array_equal(got.array, rf.warp_stack(stack, t).array)
    np.testing.assert_array_equal(array, before)
    assert all(np.array_equal(x.parameters, p) for x, p in zip(t, params))


def test_bit_identical_for_one_and_two_threads(rng):
    stack = _stack(rng, nz=4)
    _, template = stack_slices(stack)
    transforms = _affines(rng, 4, template.physical_center())
    before = numba.get_num_threads()
    try:
        runs = []
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            runs.append([rf.warp_stack(stack, transforms, interpolator=i).array for i in ("linear", "bspline")])
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()


def test_bad_inputs_raise_typed_errors(rng):
    stack = _stack(rng, nz=3)
    t = rf.Euler2DTransform()
    with pytest.raises(InvalidInputError, match="one per slice"):
        rf.warp_stack(stack, [t, t])
    with pytest.raises(InvalidInputError, match="2-D"):
        rf.warp_stack(stack, rf.Euler3DTransform())
    with pytest.raises(ShapeError, match="3-D"):
        rf.warp_stack(rf.Image(np.zeros((4, 5))), t)
    with pytest.raises(InvalidInputError, match="size and geometry"):
        rf.warp_stack([rf.Image(np.zeros((4, 5))), rf.Image(np.zeros((4, 6)))], t)
    with pytest.raises(InvalidInputError, match="interpolator"):
        rf.warp_stack(stack, t, interpolator="cubic")
    tilted = rf.Image(np.zeros((3, 4, 5)), direction=[[1, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])
    with pytest.raises(InvalidInputError, match="slice axis"):
        rf.warp_stack(tilted, t)


@pytest.mark.parametrize("interpolator", ["linear", "nearest", "bspline"])
def test_reference_grid_equals_per_slice_resample_onto_it(rng, interpolator):
    stack = _stack(rng)
    _, template = stack_slices(stack)
    c, s = np.cos(0.3), np.sin(0.3)  # another size, spacing, origin and direction, overlapping the slices
    grid = rf.Image(np.zeros((29, 51), np.float32), spacing=(0.9, 1.1), origin=(-40.0, 0.0),
                    direction=[[c, -s], [s, c]])
    transforms = _affines(rng, 5, template.physical_center())
    bsp = rf.BSplineTransform.from_domain(template, mesh_size=3)  # a non-linear one takes the per-slice path
    bsp.parameters = rng.normal(0, 1.0, bsp.n_parameters)
    transforms[3] = bsp
    got = rf.warp_stack(stack, transforms, interpolator=interpolator, default_value=-7.0, dtype=np.float64,
                        reference=grid)
    want = _per_slice(stack, transforms, reference=grid, interpolator=interpolator, default_value=-7.0,
                      dtype=np.float64)
    assert got.shape == (5, 29, 51)
    np.testing.assert_allclose(got.array, want, rtol=0, atol=1e-9)
    assert np.any(got.array == -7.0) and np.any(got.array != -7.0)
    np.testing.assert_allclose(got.spacing, [0.9, 1.1, stack.spacing[2]])  # z kept from the stack
    np.testing.assert_allclose(got.origin, [-40.0, 0.0, stack.origin[2]])
    np.testing.assert_allclose(got.direction[:2, :2], grid.direction)


def test_reference_stack_gives_its_geometry_and_must_match_the_slices(rng):
    stack = _stack(rng, nz=3)
    array, template = stack_slices(stack)
    t = _affines(rng, 3, template.physical_center())
    anchor = rf.Image(np.zeros((3, 30, 40), np.float32), spacing=(0.8, 0.8, 4.0), origin=(-30.0, 2.0, 7.0))
    got = rf.warp_stack(stack, t, reference=anchor)
    assert got.shape == anchor.shape and got.same_geometry(anchor)
    _, grid = stack_slices(anchor)
    np.testing.assert_allclose(got.array, _per_slice(stack, t, reference=grid), rtol=1e-6, atol=1e-4)
    slices = [slice_image(anchor.array, grid, k) for k in range(3)]  # a sequence: its in-plane grid
    np.testing.assert_array_equal(rf.warp_stack(stack, t, reference=slices).array, got.array)
    with pytest.raises(InvalidInputError, match="one slice per stack slice"):
        rf.warp_stack(stack, t, reference=slices[:2])
