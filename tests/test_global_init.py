"""Global initialization candidates: phase correlation, Fourier-Mellin, global_candidates.

Every moving image is a real image moved by a known transform with SimpleITK (or
scipy.ndimage.shift); the truth is that transform.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy import ndimage

sitk = pytest.importorskip("SimpleITK")

from regframe.errors import InvalidInputError  # noqa: E402
from regframe.image import Image  # noqa: E402
from regframe.io import from_sitk  # noqa: E402
from regframe.registration.global_init import (  # noqa: E402
    fourier_mellin,
    global_candidates,
    phase_correlation,
    rotation_grid_3d,
)
from regframe.registration.initializers import centered_initializer  # noqa: E402
from regframe.registration.pyramid import ImagePyramid, LevelSchedule  # noqa: E402
from regframe.registration.resample import resample  # noqa: E402
from regframe.registration.rotation_search_3d import cube_rotations, local_rotations  # noqa: E402
from regframe.transforms import (  # noqa: E402
    AffineTransform,
    Euler2DTransform,
    Similarity2DTransform,
    TranslationTransform,
    VersorRigid3DTransform,
)


def _read(path) -> "sitk.Image":
    return sitk.ReadImage(str(path), sitk.sitkFloat64)


def _moved(image: "sitk.Image", truth: "sitk.Transform", default: float = 0.0) -> "sitk.Image":
    """``moving`` with ``fixed(x) = moving(truth(x))``: resample through the inverse (B-spline)."""
    return sitk.Resample(image, image, truth.GetInverse(), sitk.sitkBSpline, default)


def _rms_error(transform, truth: "sitk.Transform", image: Image) -> float:
    pts = image.voxel_points()[::37]
    expected = np.array([truth.TransformPoint(tuple(p)) for p in pts])
    return float(np.sqrt(np.mean(np.sum((transform.transform_points(pts) - expected) ** 2, axis=1))))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


# --------------------------------------------------------------------------- phase correlation
@pytest.mark.parametrize("shift", [(3.3, -7.6), (0.25, 0.5), (-40.4, 22.7), (61.7, 70.2)])
def test_phase_correlation_recovers_subpixel_shift_of_a_section(shared_data, shift):
    """scipy.ndimage.shift of a real EM crop, anisotropic spacing and an origin: physical translation."""
    section = _read(shared_data("lung_sem", "2016_12_02_0101_s00_03.png"))
    a = sitk.GetArrayFromImage(section)[300:556, 250:506]
    b = ndimage.shift(a, shift, order=3, mode="constant")  # b[n] = a[n - shift] -> a[n] = b[n + shift]
    spacing, origin = (0.7, 1.3), (-12.0, 40.0)
    fixed, moving = Image(a, spacing, origin), Image(b, spacing, origin)
    (t, score), *_ = phase_correlation(fixed, moving)
    expected = np.asarray(shift[::-1]) * spacing
    assert np.all(np.abs(t - expected) / spacing < 0.08), (t / spacing, expected / spacing)
    assert score > 0.7


def test_phase_correlation_sign_checked_by_resampling(shared_data):
    """The returned t, as a TranslationTransform, resamples moving back onto fixed."""
    fixed_s = _read(shared_data("rat_lung", "RatLungSlice1.mha"))
    truth = sitk.TranslationTransform(2, (-17.3, 9.6))
    fixed, moving = from_sitk(fixed_s), from_sitk(_moved(fixed_s, truth))
    t, _ = phase_correlation(fixed, moving)[0]
    np.testing.assert_allclose(t, truth.GetOffset(), atol=0.15)
    shift = TranslationTransform(2)
    shift.parameters = t
    back = resample(moving, shift, reference=fixed)
    inner = (slice(20, 100), slice(30, 100))  # where moving had content
    assert _ncc(back.array[inner], fixed.array[inner]) > 0.99
    shift.parameters = -t
    wrong = resample(moving, shift, reference=fixed)
    assert _ncc(wrong.array[inner], fixed.array[inner]) < 0.8


def test_phase_correlation_3d_ct_subvoxel(shared_data):
    """Lung CT (anisotropic voxels) shifted by SimpleITK: translation within 0.15 voxel per axis."""
    ct = _read(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    truth = sitk.TranslationTransform(3, (11.3, -7.9, 13.2))  # mm; voxels are 2.73 x 2.73 x 5
    fixed, moving = from_sitk(ct), from_sitk(_moved(ct, truth, default=-1024.0))
    peaks = phase_correlation(fixed, moving, n_peaks=2)
    t = peaks[0][0]
    assert np.all(np.abs(t - np.asarray(truth.GetOffset())) / fixed.spacing < 0.15), t
    assert len(peaks) <= 2 and peaks[0][1] >= peaks[-1][1]


def test_phase_correlation_masks_ignore_structure_outside(shared_data):
    """A bright block outside the masks (fixed in place in both images) would pin the shift at 0."""
    brain = _read(shared_data("elastix_example", "fixed.mhd"))
    mask = _read(shared_data("elastix_example", "mask_fixed.mhd"))
    truth = sitk.TranslationTransform(2, (9.4, -6.2))
    fixed_a = sitk.GetArrayFromImage(brain)
    moving_a = sitk.GetArrayFromImage(_moved(brain, truth))
    stripes = 3000.0 * (np.arange(fixed_a.shape[1]) % 7 < 3)
    for arr in (fixed_a, moving_a):  # the same stripes in both, outside both masks
        arr[:14, :] = stripes
        arr[236:, :] = stripes
    fixed, moving = Image(fixed_a), Image(moving_a)
    fmask = from_sitk(mask)
    mmask = from_sitk(_moved(mask, truth)).with_array(sitk.GetArrayFromImage(_moved(mask, truth)) > 0.5)
    unmasked = phase_correlation(fixed, moving)[0][0]
    assert np.linalg.norm(unmasked - truth.GetOffset()) > 3.0  # the stripes win without masks
    t, _ = phase_correlation(fixed, moving, fixed_mask=fmask, moving_mask=mmask)[0]
    np.testing.assert_allclose(t, truth.GetOffset(), atol=0.3)


def test_phase_correlation_needs_one_grid(shared_data):
    fixed = from_sitk(_read(shared_data("rat_lung", "RatLungSlice1.mha")))
    other = Image(fixed.array, spacing=(2.0, 2.0))
    with pytest.raises(InvalidInputError, match="same grid|one grid"):
        phase_correlation(fixed, other)
    with pytest.raises(InvalidInputError):
        phase_correlation(fixed, fixed.with_array(np.zeros(fixed.shape)))


# --------------------------------------------------------------------------- Fourier-Mellin
@pytest.mark.parametrize("angle, scale", [(-90.0, 1.0), (-45.0, 0.7), (-10.0, 0.83), (20.0, 1.2), (60.0, 1.4),
                                          (90.0, 0.9)])
def test_fourier_mellin_rotation_and_scale_of_brain(shared_data, angle, scale):
    brain = _read(shared_data("elastix_example", "fixed.mhd"))
    truth = sitk.Similarity2DTransform(scale, np.deg2rad(angle), (6.0, -9.0),
                                       brain.TransformContinuousIndexToPhysicalPoint((127.5, 127.5)))
    fixed, moving = from_sitk(brain), from_sitk(_moved(brain, truth))
    cands = fourier_mellin(fixed, moving)
    assert len(cands) == 4
    # the first peak and its 180-degree twin come first, with the same score
    (a0, s0, q0), (a1, s1, q1) = cands[:2]
    assert q0 == q1 and s0 == s1
    assert abs(np.angle(np.exp(1j * (a1 - a0 - np.pi)))) < 1e-9
    err = min(abs(np.degrees(np.angle(np.exp(1j * (a - np.deg2rad(angle)))))) for a in (a0, a1))
    assert err < 1.0
    assert abs(s0 / scale - 1.0) < 0.02


def test_fourier_mellin_and_phase_on_an_oblique_anisotropic_grid(shared_data):
    """World angles, scales and translations on a grid with direction R(30 deg) and spacing (0.9, 1.2)."""
    brain = _read(shared_data("elastix_example", "fixed.mhd"))
    centre = np.asarray(brain.TransformContinuousIndexToPhysicalPoint((127.5, 127.5)))
    grid = sitk.Image(240, 200, sitk.sitkFloat64)
    grid.SetSpacing((0.9, 1.2))
    th = np.deg2rad(30.0)
    grid.SetDirection((np.cos(th), -np.sin(th), np.sin(th), np.cos(th)))
    grid.SetOrigin(tuple(centre - np.asarray(grid.TransformContinuousIndexToPhysicalPoint((119.5, 99.5)))))
    fixed = from_sitk(sitk.Resample(brain, grid, sitk.Transform(), sitk.sitkBSpline, 0.0))
    for angle, scale in ((-25.0, 1.1), (70.0, 0.85)):
        truth = sitk.Similarity2DTransform(scale, np.deg2rad(angle), (5.0, -3.0), tuple(centre))
        moving = from_sitk(sitk.Resample(brain, grid, truth.GetInverse(), sitk.sitkBSpline, 0.0))
        cands = fourier_mellin(fixed, moving)
        assert min(abs(np.degrees(np.angle(np.exp(1j * (a - np.deg2rad(angle)))))) for a, _, _ in cands[:2]) < 1.0
        assert abs(cands[0][1] / scale - 1.0) < 0.02
    shift = sitk.TranslationTransform(2, (7.3, -4.1))
    moving = from_sitk(sitk.Resample(brain, grid, shift.GetInverse(), sitk.sitkBSpline, 0.0))
    np.testing.assert_allclose(phase_correlation(fixed, moving)[0][0], shift.GetOffset(), atol=0.1)


def test_fourier_mellin_without_scale_and_errors(shared_data):
    brain = _read(shared_data("elastix_example", "fixed.mhd"))
    truth = sitk.Euler2DTransform(brain.TransformContinuousIndexToPhysicalPoint((127.5, 127.5)), np.deg2rad(33.0))
    fixed, moving = from_sitk(brain), from_sitk(_moved(brain, truth))
    cands = fourier_mellin(fixed, moving, scale=False, n_candidates=2)
    assert len(cands) == 2 and all(s == 1.0 for _, s, _ in cands)
    assert min(abs(np.degrees(a) - 33.0) for a, _, _ in cands) < 1.0
    ct = from_sitk(_read(shared_data("lung3d", "3DCT_lung_baseline_small.mha")))
    with pytest.raises(InvalidInputError, match="2-D"):
        fourier_mellin(ct, ct)


# --------------------------------------------------------------------------- global candidates
def _coarse(image: Image, factor: int) -> Image:
    return ImagePyramid(image, LevelSchedule((factor,), (0.5 * (factor - 1),))).level(0)


def test_global_candidates_section_rigid_20deg_60px(shared_data):
    """An EM section moved by 20 degrees and 60 px: the best candidate is within a coarse voxel."""
    section = _read(shared_data("lung_sem", "2016_12_02_0101_s00_05.png"))
    centre = section.TransformContinuousIndexToPhysicalPoint((399.5, 399.5))
    truth = sitk.Euler2DTransform(centre, np.deg2rad(20.0), (42.0, -43.0))  # |t| = 60 px
    fixed, moving = from_sitk(section), from_sitk(_moved(section, truth))
    start = centered_initializer(fixed, moving, Euler2DTransform(), mode="moments")
    fl, ml = _coarse(fixed, 8), _coarse(moving, 8)
    cands = global_candidates(fl, ml, "rigid", start=start)
    assert 0 < len(cands) <= 8
    assert _rms_error(start, truth, fixed) > 60.0
    assert _rms_error(cands[0], truth, fixed) < 8.0  # one coarse voxel


@pytest.mark.parametrize("angle", [-8.0, 30.0])
def test_global_candidates_partial_overlap_falls_back_to_the_grid(shared_data, angle):
    """Two EM crops overlapping by about 45 %: the texture's spectrum tells no rotation, the sweep does."""
    section = _read(shared_data("lung_sem", "2016_12_02_0101_s00_04.png"))
    truth = sitk.Euler2DTransform((399.5, 399.5), np.deg2rad(angle), (0.0, 0.0))
    rotated = _moved(section, truth)
    fixed, moving = from_sitk(section[0:520, 0:520]), from_sitk(rotated[150:650, 200:700])
    start = centered_initializer(fixed, moving, Euler2DTransform(), mode="geometry")
    cands = global_candidates(_coarse(fixed, 8), _coarse(moving, 8), "rigid", start=start)
    assert _rms_error(start, truth, fixed) > 100.0
    assert _rms_error(cands[0], truth, fixed) < 8.0


def test_global_candidates_brain_similarity(shared_data):
    """Scale 0.83, rotation -10 degrees, shift 20 % of the field of view."""
    brain = _read(shared_data("elastix_example", "fixed.mhd"))
    truth = sitk.Similarity2DTransform(0.83, np.deg2rad(-10.0), (0.2 * 256, -0.1 * 256),
                                       brain.TransformContinuousIndexToPhysicalPoint((127.5, 127.5)))
    fixed, moving = from_sitk(brain), from_sitk(_moved(brain, truth))
    start = centered_initializer(fixed, moving, Similarity2DTransform(), mode="moments")
    cands = global_candidates(_coarse(fixed, 4), _coarse(moving, 4), "similarity", start=start)
    best = cands[0]
    assert isinstance(best, Similarity2DTransform)
    assert _rms_error(start, truth, fixed) > 20.0
    assert _rms_error(best, truth, fixed) < 3.0
    assert abs(np.degrees(best.parameters[1]) + 10.0) < 2.0  # not the 180-degree twin


def test_grid_sweep_is_ranked_on_the_coarser_grid_and_keeps_the_right_pose(shared_data, monkeypatch):
    """The full-size brain slice, scale 1.2 and 125 degrees (a sweep rotation is 5 degrees off), grid search: the
    whole sweep is ranked on the working grid twice as coarse, only ``PRESCREEN_KEEP`` of it is scored on the
    working grid, and the best candidate is still the true pose."""
    from regframe.registration import global_init as gi

    brain = _read(shared_data("elastix_example", "fixed.mhd"))
    truth = sitk.Similarity2DTransform(1.2, np.deg2rad(125.0), (12.0, -9.0),
                                       brain.TransformContinuousIndexToPhysicalPoint((127.5, 127.5)))
    fixed, moving = from_sitk(brain), from_sitk(_moved(brain, truth))
    start = centered_initializer(fixed, moving, Similarity2DTransform(), mode="moments")
    calls: dict[tuple[int, ...], int] = {}
    evaluate = gi._Search.evaluate
    monkeypatch.setattr(gi._Search, "evaluate", lambda self, *a, **k: calls.update(
        {self.grid.shape: calls.get(self.grid.shape, 0) + 1}) or evaluate(self, *a, **k))
    cands = global_candidates(fixed, moving, "similarity", start=start, search="grid")
    n_sweep = (round(360.0 / gi.SWEEP_STEP) - 1) * len(gi.SCALE_SWEEP)
    (coarse, n_coarse), (work, n_work) = sorted(calls.items())
    assert n_coarse == n_sweep and 2 * coarse[0] <= work[0] + 2
    assert n_work < 0.35 * n_sweep  # kept sweep + hill-climb + finer scales + the start's translations
    assert _rms_error(start, truth, fixed) > 40.0
    assert _rms_error(cands[0], truth, fixed) < 3.0
    assert gi._Search(fixed, moving, start, None, None).coarser(8) is None  # too coarse: no prescreen


def test_global_candidates_different_grids_and_masks(shared_data):
    """Moving on another grid (spacing 1.25, other size and origin) with masks; full-size inputs."""
    brain = _read(shared_data("elastix_example", "fixed.mhd"))
    mask = sitk.ReadImage(str(shared_data("elastix_example", "mask_fixed.mhd")), sitk.sitkUInt8)
    truth = sitk.Similarity2DTransform(1.15, np.deg2rad(35.0), (-20.0, 25.0),
                                       brain.TransformContinuousIndexToPhysicalPoint((127.5, 127.5)))
    grid = sitk.Image(230, 215, sitk.sitkFloat64)
    grid.SetSpacing((1.25, 1.25))
    grid.SetOrigin((-30.0, -12.0))
    inverse = truth.GetInverse()
    moving = from_sitk(sitk.Resample(brain, grid, inverse, sitk.sitkBSpline, 0.0))
    moving_mask = from_sitk(sitk.Resample(mask, grid, inverse, sitk.sitkNearestNeighbor, 0))
    fixed, fixed_mask = from_sitk(brain), from_sitk(mask)
    start = centered_initializer(fixed, moving, Similarity2DTransform(), mode="geometry")
    cands = global_candidates(fixed, moving, "similarity", start=start, fixed_mask=fixed_mask,
                              moving_mask=moving_mask)
    assert _rms_error(start, truth, fixed) > 40.0
    assert _rms_error(cands[0], truth, fixed) < 3.0


def test_global_candidates_3d_oblique_rotation(shared_data):
    """Lung CT rotated 45 degrees about an oblique axis and shifted by 25 % of its extent."""
    ct = _read(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    fixed = from_sitk(ct)
    extent = np.asarray(fixed.size) * fixed.spacing
    direction = np.array([1.0, -0.5, 0.3]) / np.linalg.norm([1.0, -0.5, 0.3])
    truth = sitk.VersorRigid3DTransform()
    truth.SetCenter(tuple(fixed.physical_center()))
    truth.SetRotation((1 / np.sqrt(3),) * 3, np.deg2rad(45.0))
    truth.SetTranslation(tuple(0.25 * extent * direction))
    moving = from_sitk(_moved(ct, truth, default=-1024.0))
    start = centered_initializer(fixed, moving, VersorRigid3DTransform(), mode="moments")
    cands = global_candidates(_coarse(fixed, 4), _coarse(moving, 4), "rigid", start=start)
    assert isinstance(cands[0], VersorRigid3DTransform)
    r_true = np.asarray(truth.GetMatrix()).reshape(3, 3)
    angle = np.degrees(np.arccos(np.clip((np.trace(cands[0].matrix.T @ r_true) - 1) / 2, -1, 1)))
    assert _rms_error(start, truth, fixed) > 60.0
    assert angle < 8.0
    assert _rms_error(cands[0], truth, fixed) < 11.0  # one coarse voxel: 10.9 x 10.9 x 20 mm


def test_global_candidates_3d_translation(shared_data):
    """A pure shift of the CT: a phase-correlation candidate within half a coarse voxel."""
    ct = _read(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    truth = sitk.TranslationTransform(3, (15.0, -20.0, 10.0))
    fixed, moving = from_sitk(ct), from_sitk(_moved(ct, truth, default=-1024.0))
    start = centered_initializer(fixed, moving, TranslationTransform(3), mode="moments")
    cands = global_candidates(_coarse(fixed, 4), _coarse(moving, 4), "translation", start=start)
    assert all(type(c) is TranslationTransform for c in cands)
    assert _rms_error(start, truth, fixed) > 15.0
    assert _rms_error(cands[0], truth, fixed) < 5.5


@pytest.mark.parametrize("kind, cls", [("translation", TranslationTransform), ("rigid", Euler2DTransform),
                                       ("similarity", Similarity2DTransform), ("affine", AffineTransform)])
def test_global_candidates_contract(shared_data, kind, cls):
    """Same class and centre as start, start itself excluded, at most max_candidates, start untouched."""
    fixed_s = _read(shared_data("rat_lung", "RatLungSlice1.mha"))
    truth = sitk.Euler2DTransform((64.0, 64.0), np.deg2rad(25.0), (12.0, -5.0))
    fixed, moving = from_sitk(fixed_s), from_sitk(_moved(fixed_s, truth))
    start = centered_initializer(fixed, moving, cls(2) if cls in (TranslationTransform, AffineTransform) else cls(),
                                 mode="geometry")
    before = (start.parameters.copy(), start.fixed_parameters.copy())
    cands = global_candidates(fixed, moving, kind, start=start, max_candidates=3)
    assert 0 < len(cands) <= 3
    for c in cands:
        assert type(c) is cls
        np.testing.assert_array_equal(c.fixed_parameters, start.fixed_parameters)
        assert not np.allclose(c.parameters, start.parameters)
    np.testing.assert_array_equal(start.parameters, before[0])
    np.testing.assert_array_equal(start.fixed_parameters, before[1])
    if kind != "translation":
        assert _rms_error(cands[0], truth, fixed) < 3.0


def test_global_candidates_search_modes_and_errors(shared_data):
    fixed_s = _read(shared_data("rat_lung", "RatLungSlice1.mha"))
    truth = sitk.Euler2DTransform((64.0, 64.0), np.deg2rad(-40.0), (8.0, 6.0))
    fixed, moving = from_sitk(fixed_s), from_sitk(_moved(fixed_s, truth))
    start = centered_initializer(fixed, moving, Euler2DTransform(), mode="geometry")
    only_t = global_candidates(fixed, moving, "rigid", start=start, search="translation")
    assert all(c.parameters[0] == start.parameters[0] for c in only_t)
    only_r = global_candidates(fixed, moving, "rigid", start=start, search="rotation")
    assert all(np.allclose(c.translation, start.translation) for c in only_r)
    assert min(abs(np.degrees(c.parameters[0]) + 40.0) for c in only_r) < 2.0
    grid = global_candidates(fixed, moving, "rigid", start=start, search="grid")
    assert _rms_error(grid[0], truth, fixed) < 3.0
    with pytest.raises(InvalidInputError, match="search"):
        global_candidates(fixed, moving, "rigid", start=start, search="everything")
    with pytest.raises(InvalidInputError, match="kind"):
        global_candidates(fixed, moving, "bspline", start=start)


def _with_1_and_2_threads(run):
    """``[run() with 1 numba thread, run() with 2]``."""
    previous = numba.get_num_threads()
    try:
        out = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            out.append(run())
        return out
    finally:
        numba.set_num_threads(previous)


def test_global_candidates_deterministic_across_threads(shared_data):
    fixed_s = _read(shared_data("rat_lung", "RatLungSlice1.mha"))
    truth = sitk.Euler2DTransform((64.0, 64.0), np.deg2rad(30.0), (5.0, 7.0))
    fixed, moving = from_sitk(fixed_s), from_sitk(_moved(fixed_s, truth))
    start = centered_initializer(fixed, moving, Euler2DTransform(), mode="geometry")
    runs = _with_1_and_2_threads(lambda: [c.parameters for c in global_candidates(fixed, moving, "rigid", start=start)])
    assert len(runs[0]) == len(runs[1])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_rotation_grid_3d_covers_so3():
    grid = rotation_grid_3d(72)
    assert grid.shape == (72, 3, 3)
    np.testing.assert_allclose(grid @ grid.transpose(0, 2, 1), np.broadcast_to(np.eye(3), grid.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(grid), 1.0, atol=1e-12)
    rng = np.random.default_rng(5)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    worst = 0.0
    for w, x, y, z in q:  # random rotations: distance to the nearest grid rotation
        r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        cos = (np.einsum("kij,ij->k", grid, r) - 1) / 2
        worst = max(worst, np.degrees(np.arccos(np.clip(cos.max(), -1, 1))))
    assert worst < 60.0  # measured: 56 degrees at worst, 46 for 99 % of rotations


# --------------------------------------------------------------------------- through register()
def test_cube_and_local_rotation_sets():
    cube = cube_rotations()
    assert cube.shape == (24, 3, 3)
    np.testing.assert_array_equal(cube[0], np.eye(3))
    np.testing.assert_allclose(np.linalg.det(cube), 1.0)
    assert len({tuple(m.ravel()) for m in cube}) == 24
    local = local_rotations(50.0, 1000)  # about 1000 (0.87 - sin 0.87) / pi = 34 rotations
    cos = (np.trace(local, axis1=1, axis2=2) - 1) / 2
    assert 25 < len(local) < 45 and np.all(cos >= np.cos(np.deg2rad(50.0)) - 1e-12)


def test_register_3d_oblique_45_degrees_and_quarter_fov_shift(shared_data):
    """Lung CT rotated 45 degrees about an oblique axis, shifted by 25 % of its extent: register() defaults."""
    from regframe.registration import register

    ct = _read(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    fixed = from_sitk(ct)
    extent = np.asarray(fixed.size) * fixed.spacing
    axis = np.array([0.36, 0.86, 0.35]) / np.linalg.norm([0.36, 0.86, 0.35])
    truth = sitk.VersorRigid3DTransform()
    truth.SetCenter(tuple(fixed.physical_center()))
    truth.SetRotation(tuple(axis), np.deg2rad(45.0))
    truth.SetTranslation(tuple(np.array([0.25, -0.1, 0.15]) * extent))
    moving = from_sitk(_moved(ct, truth, default=float(np.min(sitk.GetArrayViewFromImage(ct)))))
    res = register(fixed, moving, "rigid")
    assert not res.warnings
    assert _rms_error(res.transform, truth, fixed) < 0.3  # mm; voxels are 2.7 x 2.7 x 5 mm


def test_global_candidates_3d_deterministic_across_threads(shared_data):
    ct = _read(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    truth = sitk.Euler3DTransform(tuple(from_sitk(ct).physical_center()), 0.3, -0.2, 0.4, (20.0, -15.0, 10.0))
    fixed = _coarse(from_sitk(ct), 2)
    moving = _coarse(from_sitk(_moved(ct, truth, default=-1024.0)), 2)
    start = centered_initializer(fixed, moving, VersorRigid3DTransform(), mode="moments")
    runs = _with_1_and_2_threads(lambda: [c.parameters for c in global_candidates(fixed, moving, "rigid", start=start)])
    assert len(runs[0]) == len(runs[1]) > 0
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def _stretched_section(shared_data):
    """An EM crop under scale 0.68, rotation 32 degrees and an 11 % anisotropic stretch, shifted by 24 % of the
    field of view (a case of benchmarks/bench_defaults.py), made with SimpleITK."""
    section = _read(shared_data("lung_sem", "2016_12_02_0101_s00_01.png"))
    crop = section[200:600, 200:600]
    crop.SetOrigin((0.0, 0.0))
    fixed = from_sitk(crop)
    truth = sitk.AffineTransform(2)
    truth.SetCenter(tuple(fixed.physical_center()))
    truth.SetMatrix((0.590, -0.328, 0.392, 0.565))
    truth.SetTranslation((-61.9, 72.6))
    moving = from_sitk(_moved(crop, truth, default=float(np.min(sitk.GetArrayViewFromImage(crop)))))
    return fixed, moving, truth


def test_global_candidates_anisotropic_blocks_find_a_stretched_section(shared_data):
    """No scaled rotation makes the stretched texture correlate; the matched blocks' affine fit does."""
    fixed, moving, truth = _stretched_section(shared_data)
    start = centered_initializer(fixed, moving, AffineTransform(2), mode="moments")
    plain = global_candidates(fixed, moving, "affine", start=start, anisotropic=False)
    assert min(_rms_error(c, truth, fixed) for c in plain) > 40.0  # px: the right basin is missing
    cands = global_candidates(fixed, moving, "affine", start=start)  # anisotropic by default for "affine"
    assert isinstance(cands[0], AffineTransform)
    assert _rms_error(cands[0], truth, fixed) < 4.0


def test_global_candidates_anisotropic_projected_onto_a_similarity_start(shared_data):
    """The similarity start of an affine registration gets the nearest scaled rotation of the fit; bit-identical
    with 1 and 2 threads."""
    fixed, moving, truth = _stretched_section(shared_data)
    start = centered_initializer(fixed, moving, Similarity2DTransform(), mode="moments")
    runs = _with_1_and_2_threads(lambda: global_candidates(fixed, moving, "similarity", start=start, anisotropic=True))
    cands = runs[0]
    assert all(isinstance(c, Similarity2DTransform) for c in cands)
    assert _rms_error(cands[0], truth, fixed) < 15.0  # px: the anisotropy is left to the affine stage
    assert len(runs[1]) == len(cands)
    for a, b in zip(cands, runs[1]):
        np.testing.assert_array_equal(a.parameters, b.parameters)


def test_block_search_gives_up_after_its_patience_on_a_multimodal_pair(shared_data, monkeypatch):
    """The brain slice pair of two modalities (masked): no affine map of the blocks correlates better than the
    scaled rotations, so the search ends after BLOCK_PATIENCE chunks of cells instead of matching all 150; the
    stretched section is still fitted within them."""
    from regframe.registration import _block_search as bs

    matched = []
    match = bs._Blocks.match
    monkeypatch.setattr(bs._Blocks, "match", lambda self, *a: matched.append(1) or match(self, *a))
    images = [from_sitk(_read(shared_data("elastix_example", name)))
              for name in ("fixed.mhd", "moving.mhd", "mask_fixed.mhd", "mask_moving.mhd")]
    fixed, moving, fixed_mask, moving_mask = images
    start = centered_initializer(fixed, moving, Similarity2DTransform(), mode="moments")
    cands = global_candidates(fixed, moving, "similarity", start=start, fixed_mask=fixed_mask,
                              moving_mask=moving_mask, anisotropic=True)
    assert cands
    n_cells = int(round(360.0 / bs.BLOCK_STEP)) * 5
    assert 0 < len(matched) <= bs.BLOCK_PATIENCE * bs.BLOCK_CHUNK < n_cells, len(matched)
    matched.clear()
    fixed, moving, truth = _stretched_section(shared_data)
    start = centered_initializer(fixed, moving, AffineTransform(2), mode="moments")
    cands = global_candidates(fixed, moving, "affine", start=start)
    assert 0 < len(matched) <= bs.BLOCK_PATIENCE * bs.BLOCK_CHUNK
    assert _rms_error(cands[0], truth, fixed) < 4.0


@pytest.mark.slow
def test_register_affine_em_section_with_anisotropic_stretch(shared_data):
    """register(..., "affine") recovers the stretched section to well under a pixel."""
    from regframe.registration import register

    fixed, moving, truth = _stretched_section(shared_data)
    res = register(fixed, moving, "affine")
    assert _rms_error(res.transform, truth, fixed) < 0.5  # px


@pytest.mark.parametrize("angles, confident", [((4.0, -3.0, 10.0), True), ((30.0, 0.0, 20.0), False)])
def test_rotation_search_3d_stops_after_a_convincing_start_climb(shared_data, monkeypatch, angles, confident):
    """Lung CT turned by 11 degrees (bench_registration's rigid case): the climb from the start correlates by
    CONFIDENT_NCC and the other rotations are skipped; turned by 36 degrees it does not and the whole search
    runs.  Either way the best candidate is within 5 degrees (when confident, every candidate)."""
    from regframe.registration import rotation_search_3d as rs

    calls = []
    evaluate = rs._NccSearch.evaluate
    monkeypatch.setattr(rs._NccSearch, "evaluate", lambda self, *a, **k: calls.append(1) or evaluate(self, *a, **k))
    ct = _read(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    fixed = from_sitk(ct)
    truth = sitk.Euler3DTransform(tuple(fixed.physical_center()), *np.deg2rad(angles), (8.0, -6.0, 5.0))
    moving = from_sitk(_moved(ct, truth, default=-1024.0))
    start = centered_initializer(fixed, moving, VersorRigid3DTransform(), mode="moments")
    cands = global_candidates(fixed, moving, "rigid", start=start)
    r_true = np.asarray(truth.GetMatrix()).reshape(3, 3)
    angles = [np.degrees(np.arccos(np.clip((np.trace(c.matrix.T @ r_true) - 1) / 2, -1, 1))) for c in cands]
    assert angles[0] < 5.0
    assert (len(calls) < 30) == confident, len(calls)
    if confident:  # only the convincing candidates go on to be refined
        assert max(angles) < 5.0, angles


def test_initialize_stage_3d_auto_refines_the_global_candidates_only(shared_data):
    """In 3-D, "auto" leaves rotations to the global search (no +-30 degree grid to refine besides), while
    "moments" still adds the grid; the affine preset asks the 2-D search for anisotropic candidates."""
    from regframe.registration import presets
    from regframe.registration.pipeline import RegistrationInputs
    from regframe.registration.pipeline.base import StageCache, StageContext
    from regframe.registration.pipeline.chain import TransformChain
    from regframe.registration.stages import InitializeStage

    ct = _read(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    fixed = from_sitk(ct)
    truth = sitk.Euler3DTransform(tuple(fixed.physical_center()), *np.deg2rad([4.0, -3.0, 10.0]), (8.0, -6.0, 5.0))
    ctx = StageContext(RegistrationInputs.for_images(fixed, from_sitk(_moved(ct, truth, default=-1024.0))),
                       StageCache())
    auto, n_auto = InitializeStage(target="rigid").candidates(ctx, TransformChain())
    grid, _ = InitializeStage(target="rigid", mode="moments").candidates(ctx, TransformChain())
    assert n_auto == 2 and len(auto) - n_auto <= 8  # the plain starts and the global candidates
    assert len(grid) == 1 + 26  # the moments start and the grid of 3 x 3 x 3 rotations
    assert presets.linear("affine")[0].anisotropic and not presets.linear("similarity")[0].anisotropic


def test_register_affine_em_section_large_scale_rotation_and_shift(shared_data):
    """An EM section crop moved by scale 1.4, rotation 93 degrees, a shear and a shift of 23 % of the FOV
    (a case of benchmarks/bench_defaults.py: at scale 1 no rotation correlates)."""
    from regframe.registration import register

    section = _read(shared_data("lung_sem", "2016_12_02_0101_s00_01.png"))
    crop = section[200:600, 200:600]
    crop.SetOrigin((0.0, 0.0))
    fixed = from_sitk(crop)
    extent = np.asarray(fixed.size) * fixed.spacing
    truth = sitk.AffineTransform(2)
    truth.SetCenter(tuple(fixed.physical_center()))
    truth.SetMatrix((-0.07801723065361335, -1.320586072553783, 1.4117849783567682, 0.02103902116134977))
    truth.SetTranslation(tuple(np.array([0.2295388213487211, -0.06529779445415956]) * extent))
    moving = from_sitk(_moved(crop, truth, default=float(np.min(sitk.GetArrayViewFromImage(crop)))))
    res = register(fixed, moving, "affine")
    assert _rms_error(res.transform, truth, fixed) < 0.5  # px


def test_register_affine_flipped_slice_loses_at_the_finer_level(shared_data):
    """Rat-lung slice turned by 90 degrees with a shear: at the coarsest level a flipped pose matches
    best; the re-ranking one level finer keeps the right one."""
    from regframe.registration import register

    slice_ = _read(shared_data("rat_lung", "RatLungSlice1.mha"))
    fixed = from_sitk(slice_)
    extent = np.asarray(fixed.size) * fixed.spacing
    truth = sitk.AffineTransform(2)
    truth.SetCenter(tuple(fixed.physical_center()))
    truth.SetMatrix((-0.046, -0.95, 1.06, 0.016))
    truth.SetTranslation(tuple(np.array([0.15, -0.02]) * extent))
    moving = from_sitk(_moved(slice_, truth, default=float(np.min(sitk.GetArrayViewFromImage(slice_)))))
    res = register(fixed, moving, "affine")
    assert _rms_error(res.transform, truth, fixed) < 0.5 * float(np.min(fixed.spacing))


# --------------------------------------------------------------------------- the fused kernels of the searches
def test_search_kernels_match_their_numpy_definitions():
    """Moving sampling (both images, one affine index map), the normalized cross-power spectrum, the
    overlap correlation (2-D and 3-D) and the one-peak shortcut against the plain numpy forms."""
    from scipy import fft as sfft

    from regframe.interpolators import LinearInterpolator
    from regframe.registration import _global_init_kernels as gk
    from regframe.registration._peaks import find_peaks
    from regframe.registration.global_init import MIN_OVERLAP, _overlap_ncc

    rng = np.random.default_rng(7)
    # sampling: an oblique moving grid, a rotated and scaled map, points inside, in the skirt and outside
    mov = Image(rng.random((23, 31)), spacing=(0.7, 1.3), origin=(-4.0, 2.5),
                direction=np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]))
    weights = rng.random(mov.shape)
    grid = Image(np.zeros((20, 26)), spacing=(1.1, 0.9), origin=(-9.0, -3.0))
    a = 1.2 * np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    t = np.array([1.5, -2.0])
    mapped = grid.voxel_points() @ a.T + t
    gmat = mov.physical_to_index_matrix @ a @ grid.index_to_physical_matrix
    goff = mov.physical_to_index_matrix @ (a @ grid.origin + t - mov.origin)
    got_a, got_b = gk.sample_pair_2d(gmat, goff, *grid.shape, np.ascontiguousarray(mov.array), weights,
                                     np.asarray(mov.size, dtype=np.int64))
    for got, arr in ((got_a, mov.array), (got_b, weights)):
        ref, inside = LinearInterpolator().set_image(mov.with_array(arr)).evaluate(mapped)
        assert 0.2 < inside.mean() < 0.95  # the map leaves the moving grid: the outside rule is tested
        np.testing.assert_allclose(got.reshape(-1), ref, rtol=0, atol=1e-12)
    # valid mask, raw values and the zero-mean tapered image of a sample
    total, valid, raw, prepared = gk.split_tapered(got_a * got_b, got_b, 0.05)
    assert total == pytest.approx(got_b.sum(), rel=1e-13) and 0 < valid.mean() < 1
    np.testing.assert_array_equal(valid, got_b > 0.05)
    np.testing.assert_allclose(raw, np.where(valid, got_a * got_b / np.maximum(got_b, 1e-12), 0.0), rtol=1e-15)
    mw = got_a * got_b
    np.testing.assert_allclose(prepared, mw - mw.sum() / got_b.sum() * got_b, rtol=0, atol=1e-13)
    # cross-power spectrum
    fa = sfft.rfftn(rng.random((30, 28)), s=(45, 42))
    fb = sfft.rfftn(rng.random((30, 28)), s=(45, 42))
    low = rng.random(fa.shape)
    cross = np.conj(fa) * fb
    ref = cross / np.maximum(np.abs(cross), 1e-12 * np.abs(cross).max() + 1e-300) * low
    np.testing.assert_allclose(gk.normalized_cross_power(fa, fb, low), ref, rtol=1e-13, atol=1e-15)

    # overlap correlation
    def reference(x, mx, y, my, shift):
        sa = tuple(slice(max(0, -k), min(n, n - k)) for n, k in zip(x.shape, shift))
        sb = tuple(slice(s.start + k, s.stop + k) for s, k in zip(sa, shift))
        both = mx[sa] & my[sb]
        xs, ys = x[sa][both], y[sb][both]
        xs, ys = xs - xs.mean(), ys - ys.mean()
        frac = both.sum() / min(mx.sum(), my.sum())
        return np.sum(xs * ys) / np.sqrt(np.sum(xs * xs) * np.sum(ys * ys)) * min(1.0, frac / MIN_OVERLAP)

    for shape, shift in (((40, 37), (5, -9)), ((40, 37), (-30, 20)), ((12, 14, 11), (2, -3, 4))):
        x = rng.random(shape)
        y = 0.5 * rng.random(shape) + np.roll(x, shift, axis=tuple(range(len(shape))))  # y[n + shift] ~ x[n]
        mx, my = rng.random(shape) > 0.3, rng.random(shape) > 0.2
        got = _overlap_ncc(x, mx, y, my, shift)
        assert got > 0.1
        np.testing.assert_allclose(got, reference(x, mx, y, my, shift), rtol=0, atol=1e-13)
    assert _overlap_ncc(x, mx, y, my, (11, 0, 0)) == -np.inf  # one voxel thick
    # one peak: the same as the general search
    surface = ndimage.gaussian_filter(rng.random((30, 33)), 2.0, mode="wrap")
    assert find_peaks(surface, 1, 2.0) == find_peaks(surface, 2, 2.0)[:1]
