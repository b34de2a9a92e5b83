"""Samplers: the grid, reproducible random subsets, jitter, masks."""

from __future__ import annotations

import numpy as np
import pytest

from regframe import Image, TranslationTransform
from regframe.errors import EmptyMaskError, InvalidInputError
from regframe.metrics import FullSampler, MeanSquares, RandomSampler, RegularSampler


def oblique_image(shape=(9, 11, 13)):
    rng = np.random.default_rng(0)
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return Image(rng.uniform(0, 10, shape), spacing=(0.8, 1.1, 2.0), origin=(3.0, -1.0, 5.0), direction=direction)


def test_full_sampler_is_every_voxel_in_raster_order():
    img = oblique_image()
    ss = FullSampler().sample(img)
    np.testing.assert_array_equal(ss.voxels, np.arange(img.n_voxels))
    np.testing.assert_allclose(ss.points, img.voxel_points(), rtol=0, atol=1e-12)
    assert ss.on_grid and ss.n_samples == img.n_voxels == ss.n_candidates


def test_regular_sampler_takes_every_step_th_voxel_like_itk():
    img = oblique_image()
    ss = RegularSampler(0.3).sample(img)  # ITK: ceil(1 / 0.3) = 4
    np.testing.assert_array_equal(ss.voxels, np.arange(0, img.n_voxels, 4))
    np.testing.assert_allclose(ss.points, img.voxel_points()[::4], atol=1e-12)
    assert RegularSampler(0.5).step == 2 and RegularSampler(1.0).step == 1


def test_random_sampler_same_seed_same_samples():
    img = oblique_image()
    a = RandomSampler(0.2, seed=42).sample(img)
    b = RandomSampler(0.2, seed=42).sample(img)
    c = RandomSampler(0.2, seed=43).sample(img)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.voxels, b.voxels)
    assert not np.array_equal(a.voxels, c.voxels)
    assert a.n_samples == int(np.floor(0.2 * img.n_voxels))
    assert np.all(np.diff(a.voxels) > 0)  # sorted, no duplicates
    np.testing.assert_allclose(a.points, img.voxel_points()[a.voxels], atol=1e-12)


def test_jitter_is_reproducible_and_stays_in_the_buffer():
    img = oblique_image()
    a = RegularSampler(0.5, jitter=True, seed=5).sample(img)
    b = RegularSampler(0.5, jitter=True, seed=5).sample(img)
    np.testing.assert_array_equal(a.points, b.points)
    assert not a.on_grid
    assert img.is_inside(a.points).all()
    # jitter ~ N(0, spacing / 3) along each world axis
    delta = a.points - img.voxel_points()[a.voxels]
    np.testing.assert_allclose(delta.std(axis=0), img.spacing / 3, rtol=0.15)
    assert a.n_samples < img.n_voxels // 2 + 1  # points jittered out of the buffer are dropped


def test_fixed_mask_is_respected_in_physical_space():
    img = oblique_image()
    mask_arr = np.zeros(img.shape, bool)
    mask_arr[2:6, 3:8, 4:10] = True
    for sampler in (FullSampler(), RegularSampler(0.5), RandomSampler(0.5, seed=1)):
        ss = sampler.sample(img, mask_arr)
        idx, inside = img.physical_to_nearest_index(ss.points)
        assert inside.all()
        assert mask_arr[idx[:, 2], idx[:, 1], idx[:, 0]].all()
        assert ss.n_candidates == mask_arr.sum()
    assert FullSampler().sample(img, mask_arr).n_samples == mask_arr.sum()


def test_mask_with_its_own_geometry():
    img = oblique_image()
    # a finer mask image on the same physical region, covering only world x > threshold
    fine = Image(np.zeros((18, 22, 26)), spacing=img.spacing / 2, origin=img.origin, direction=img.direction)
    pts = fine.voxel_points()
    thr = np.median(img.voxel_points()[:, 0])
    fine = fine.with_array((pts[:, 0] > thr).reshape(fine.shape))
    ss = FullSampler().sample(img, fine)
    assert 0 < ss.n_samples < img.n_voxels
    assert np.all(ss.points[:, 0] > thr - 1.0)  # nearest-voxel rounding at the boundary


def test_sampler_errors():
    img = oblique_image()
    with pytest.raises(EmptyMaskError):
        FullSampler().sample(img, np.zeros(img.shape, bool))
    with pytest.raises(InvalidInputError, match="fraction"):
        RandomSampler(0.0)
    with pytest.raises(InvalidInputError, match="fraction"):
        RegularSampler(1.5)
    with pytest.raises(InvalidInputError, match="seed"):
        RandomSampler(0.1, seed=-1)


def test_metric_uses_sampler_and_masks():
    img = oblique_image()
    moving = img.with_array(np.asarray(img.array) * 1.5)
    metric = MeanSquares().initialize(img, moving, TranslationTransform(3), sampler=RandomSampler(0.25, seed=9))
    ss = RandomSampler(0.25, seed=9).sample(img)
    np.testing.assert_array_equal(metric.sample_points, ss.points)
    np.testing.assert_array_equal(metric.fixed_values, np.asarray(img.array).ravel()[ss.voxels])
    mmask = np.zeros(moving.shape, bool)
    mmask[:, :, :6] = True
    masked = MeanSquares().initialize(img, moving, TranslationTransform(3), moving_mask=mmask)
    masked.value()
    assert masked.n_valid == mmask.sum()  # identity transform: exactly the masked voxels


@pytest.mark.parametrize(
    "sampler", [RandomSampler(0.013, seed=4), RandomSampler(1.0), RegularSampler(0.3), FullSampler()]
)
def test_unmasked_selection_equals_selection_among_all_voxels(sampler):
    """The built-ins choose among all voxels without building ``arange(n_voxels)``; same result."""
    fast = sampler._select_all(12345, np.random.default_rng(3))
    reference = sampler._select(np.arange(12345, dtype=np.int64), np.random.default_rng(3))
    assert fast.dtype == np.int64
    np.testing.assert_array_equal(fast, reference)


def test_random_sampling_memory_does_not_scale_with_the_image():
    """1 % of a 10^6-voxel image: no 8-byte-per-voxel candidate array (issue 12, memory)."""
    import tracemalloc

    img = Image(np.zeros((100, 100, 100), dtype=np.float32))
    tracemalloc.start()
    try:
        samples = RandomSampler(0.01, jitter=True).sample(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert samples.points.shape[0] > 9000
    assert peak < 2 * img.n_voxels, f"peak {peak / img.n_voxels:.2f} bytes per voxel"


def test_margin_leaves_out_the_outer_voxel_layers():
    img = oblique_image()  # numpy shape (9, 11, 13)
    ss = FullSampler(margin=2).sample(img)
    interior = np.zeros(img.shape, bool)
    interior[2:-2, 2:-2, 2:-2] = True
    np.testing.assert_array_equal(ss.voxels, np.flatnonzero(interior))
    np.testing.assert_allclose(ss.points, img.voxel_points()[ss.voxels], atol=1e-12)
    assert ss.on_grid and ss.n_candidates == interior.sum() == 5 * 7 * 9
    ci = img.physical_to_index(ss.points)
    assert ci.min() > 1.5 and np.all(ci.max(axis=0) < np.array(img.size) - 2.5)


@pytest.mark.parametrize("sampler", [RandomSampler(0.1, seed=4, margin=1), RegularSampler(0.3, margin=2),
                                     FullSampler(margin=1)])
def test_margin_without_a_mask_equals_the_margin_with_a_full_mask(sampler):
    """The unmasked path chooses among the interior without listing it; same samples."""
    img = oblique_image()
    fast = sampler.sample(img)
    masked = sampler.sample(img, np.ones(img.shape, bool))
    np.testing.assert_array_equal(fast.voxels, masked.voxels)
    np.testing.assert_array_equal(fast.points, masked.points)
    assert fast.n_candidates == masked.n_candidates
    assert np.all(np.diff(fast.voxels) > 0)


def test_margin_with_a_mask_and_jitter():
    img = oblique_image()
    mask = np.zeros(img.shape, bool)
    mask[:, :6] = True  # touches the border on five sides
    ss = RandomSampler(0.5, seed=2, jitter=True, margin=1).sample(img, mask)
    ci = img.physical_to_index(ss.points)
    size = np.array(img.size)
    assert np.all(ci >= 0.5) and np.all(ci < size - 1.5)  # ITK's buffer rule shrunk by one voxel
    idx, _ = img.physical_to_nearest_index(ss.points)
    assert mask[idx[:, 2], idx[:, 1], idx[:, 0]].all()
    assert FullSampler(margin=1).sample(img, mask).n_candidates == 7 * 5 * 11


def test_margin_of_a_short_axis_keeps_its_middle():
    img = Image(np.arange(3 * 4 * 9, dtype=float).reshape(3, 4, 9))  # z: 3 voxels, y: 4
    ss = FullSampler(margin=2).sample(img)
    idx = img.voxel_indices()[ss.voxels]
    assert set(idx[:, 2]) == {1} and set(idx[:, 1]) == {1, 2} and set(idx[:, 0]) == set(range(2, 7))
    assert repr(FullSampler(margin=2)) == "FullSampler(jitter=False, seed=0, margin=2)"
    assert repr(FullSampler()) == "FullSampler(jitter=False, seed=0)"
