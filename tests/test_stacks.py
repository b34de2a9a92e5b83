"""align_stack on thin slices of the real lung CT moved by known rigid motions (SimpleITK), and its solver."""

from __future__ import annotations

import numpy as np
import pytest

import regframe as rf
from regframe.errors import InvalidInputError
from regframe.registration.stacks import solve_consistent, stack_pairs

sitk = pytest.importorskip("SimpleITK")

KW = {"initialization": "geometry", "progress": "none"}


@pytest.fixture(scope="module")
def moved_slices(request):
    """8 thin (1.25 mm) axial slices of the lung CT, each moved by a known rigid motion (about 2 deg, 3 px)."""
    from conftest import data_path

    vol = sitk.ReadImage(str(data_path("lung3d", "3DCT_lung_baseline_small.mha")), sitk.sitkFloat32)
    sp = (1.366, 1.366, 1.25)
    size = [int(round(s * o / n)) for s, o, n in zip(vol.GetSize(), vol.GetSpacing(), sp)]
    thin = sitk.GetArrayFromImage(sitk.Resample(vol, size, sitk.Transform(), sitk.sitkBSpline, vol.GetOrigin(),
                                                sp, vol.GetDirection(), -1000.0))
    base = thin[thin.shape[0] // 2: thin.shape[0] // 2 + 8]
    rng = np.random.default_rng(7)
    ny, nx = base.shape[1:]
    centre = [(nx - 1) / 2 * sp[0], (ny - 1) / 2 * sp[1]]
    moved, truth = [], []
    for k in range(len(base)):
        angle, shift = np.deg2rad(rng.normal(0, 2)), rng.normal(0, 2.1, 2) * sp[0]
        img = sitk.GetImageFromArray(base[k])
        img.SetSpacing(sp[:2])
        tr = sitk.Euler2DTransform(centre, angle, shift.tolist())
        moved.append(rf.Image(sitk.GetArrayFromImage(sitk.Resample(img, img, tr, sitk.sitkBSpline, -1000.0)),
                              spacing=sp[:2]))
        truth.append(rf.Euler2DTransform(center=centre, angle=angle, translation=shift))
    return moved, truth, base, sp


def _errors(transforms, truth, ref_slice=0, spacing=1.366):
    """Per-slice mean distance (pixels) of M_k T_k from M_0 T_0 over the inner domain."""
    g = np.arange(20, 100, 6) * spacing
    pts = np.stack(np.meshgrid(g, g * 1.3), -1).reshape(-1, 2)
    target = truth[ref_slice].transform_points(transforms[ref_slice].transform_points(pts))
    return np.array([np.mean(np.linalg.norm(m.transform_points(t.transform_points(pts)) - target, axis=1))
                     for m, t in zip(truth, transforms)]) / spacing


def test_stack_pairs():
    assert stack_pairs(4, "previous", 2) == [(0, 1), (1, 2), (0, 2), (2, 3), (1, 3)]
    assert stack_pairs(3, "first") == [(0, 1), (0, 2)]
    assert stack_pairs(2, "mean") == [(-1, 0), (-1, 1)]


def test_solver_recovers_exact_poses_and_chooses_the_gauge(rng):
    n = 6
    a = np.eye(2) + rng.normal(0, 0.05, (n, 2, 2))
    t = rng.normal(0, 0.3, (n, 2))
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)), -1).reshape(-1, 2)
    measured = []
    for j, i in stack_pairs(n, "previous", 2):  # P_ji = T_i o T_j^-1
        inv = np.linalg.inv(a[j])
        measured.append((j, i, a[i] @ inv, t[i] - a[i] @ inv @ t[j]))
    a0, t0 = solve_consistent(measured, n, grid, anchor="first")
    inv0 = np.linalg.inv(a[0])  # expected: T_k o T_0^-1
    np.testing.assert_allclose(a0, a @ inv0, atol=1e-7)
    np.testing.assert_allclose(t0, t - (a @ inv0) @ t[0], atol=1e-7)
    am, tm = solve_consistent(measured, n, grid, anchor="mean")
    np.testing.assert_allclose(am.mean(0), np.eye(2), atol=1e-7)
    np.testing.assert_allclose(tm.mean(0), 0, atol=1e-7)
    for k in range(n):  # same relative poses in either gauge
        np.testing.assert_allclose(am[k] @ np.linalg.inv(am[0]), a0[k], atol=1e-6)
    # the pull to the raw poses trades a little pair agreement for less drift: O(weight) changes
    for weight, tol in ((1e-7, 1e-5), (0.05, 5e-2)):
        ad, td = solve_consistent(measured, n, grid, anchor="first", drift_weight=weight)
        assert 0 < np.abs(ad - a0).max() < tol and np.abs(td - t0).max() < tol


@pytest.mark.data
def test_previous_recovers_known_motion(moved_slices):
    moved, truth, _, sp = moved_slices
    res = rf.align_stack(moved, "rigid", "previous", **KW)
    err = _errors(res.transforms, truth)
    assert err.mean() < 0.35 and err.max() < 0.7, err
    assert res.aligned.shape == (len(moved),) + moved[0].shape
    assert len(res.pairs) == len(res.results) == 2 * len(moved) - 3 and not res.warnings
    assert all(isinstance(t, rf.Euler2DTransform) for t in res.transforms)
    assert np.isnan(res.metric_values[0]) and np.all(np.isfinite(res.metric_values[1:]))
    assert res.framewise_displacement[0] == 0 and np.all(res.framewise_displacement[1:] > 0.5)
    np.testing.assert_allclose(res.transforms[0].parameters, [0, 0, 0], atol=1e-9)  # anchor "first"
    # the aligned stack is each moved slice resampled through its transform
    np.testing.assert_allclose(res.aligned.array[3], rf.resample(moved[3], res.transforms[3]).array, atol=1e-9)
    summary = res.summary()
    assert summary["n_slices"] == len(moved) and summary["n_failed_pairs"] == 0


@pytest.mark.data
@pytest.mark.slow
def test_first_and_mean_references(moved_slices):
    moved, truth, base, sp = moved_slices
    err_first = _errors(rf.align_stack(moved, "rigid", "first", **KW).transforms, truth)
    assert err_first.mean() < 0.5, err_first
    res = rf.align_stack(moved, "translation", "mean", mean_iterations=2, **KW)
    assert all(isinstance(t, rf.TranslationTransform) for t in res.transforms)
    assert len(res.pairs) == len(moved) and all(j == -1 for j, _ in res.pairs)


@pytest.mark.data
def test_other_contrast_anchor(moved_slices):
    moved, truth, base, sp = moved_slices
    # anchor of another contrast: the unmoved slices, intensities inverted and squared
    inverted = (base.max() - base) ** 2
    anchors = [rf.Image(a, spacing=sp[:2]) for a in inverted]
    res = rf.align_stack(moved, "rigid", anchors, **KW)
    # with an anchor, T_k should undo M_k exactly (no gauge): M_k T_k = identity
    err = _errors(res.transforms, truth) + 0  # relative to slice 0 ...
    g = np.arange(20, 100, 6) * sp[0]
    pts = np.stack(np.meshgrid(g, g * 1.3), -1).reshape(-1, 2)
    absolute = [np.mean(np.linalg.norm(m.transform_points(t.transform_points(pts)) - pts, axis=1)) / sp[0]
                for m, t in zip(truth, res.transforms)]
    assert np.mean(absolute) < 0.3 and err.max() < 0.6, absolute


def test_bad_arguments(rng):
    slices = [rf.Image(rng.random((20, 20))) for _ in range(3)]
    with pytest.raises(InvalidInputError, match="transform"):
        rf.align_stack(slices, "spline")
    with pytest.raises(InvalidInputError, match="reference"):
        rf.align_stack(slices, "rigid", "last")
    with pytest.raises(InvalidInputError, match="one slice per stack slice"):
        rf.align_stack(slices, "rigid", slices[:2])
    with pytest.raises(InvalidInputError, match="neighbours"):
        rf.align_stack(slices, "rigid", neighbours=0)


@pytest.mark.data
def test_drift_figure(moved_slices, tmp_path):
    pytest.importorskip("matplotlib")
    moved, *_ = moved_slices
    res = rf.align_stack(moved[:4], "translation", "previous", **KW)
    fig = res.plot(tmp_path / "drift.png")
    assert (tmp_path / "drift.png").stat().st_size > 10_000
    assert len(fig.axes) == 4


@pytest.mark.data
@pytest.mark.parametrize("kind", ["similarity", "affine", pytest.param("bspline", marks=pytest.mark.slow)])
def test_other_kinds_recover_the_rigid_motion(moved_slices, kind):
    moved, truth, _, _ = moved_slices
    res = rf.align_stack(moved[:4], kind, "previous", **KW)
    err = _errors(res.transforms, truth[:4])
    assert err.max() < (0.5 if kind != "bspline" else 0.8), err
    expected = {"similarity": rf.Similarity2DTransform, "affine": rf.AffineTransform,
                "bspline": rf.CompositeTransform}[kind]
    assert all(isinstance(t, expected) for t in res.transforms)


def test_bad_register_options_fail_before_any_registration(rng, monkeypatch):
    from regframe.registration import stacks

    def no_registration(*args, **kwargs):
        raise AssertionError("a pair was registered")

    monkeypatch.setattr(stacks, "register_many", no_registration)
    slices = [rf.Image(rng.random((20, 20))) for _ in range(3)]
    with pytest.raises(InvalidInputError, match="'metric' must be one of 'mattes', 'mse', 'ncc'; got 'foo'"):
        rf.align_stack(slices, "rigid", metric="foo")
    with pytest.raises(InvalidInputError, match=r"\['transfrom'\].*'initialization'"):
        rf.align_stack(slices, "rigid", transfrom="affine")
    with pytest.raises(InvalidInputError, match="optimizer"):
        rf.align_stack(slices, "rigid", "first", optimizer="adam")
    with pytest.raises(InvalidInputError, match="sampling"):
        rf.align_stack(slices, "rigid", "mean", sampling=2.0)


def test_every_pair_failing_raises_with_the_count_and_first_error():
    flat = [rf.Image(np.zeros((24, 24), np.float32)) for _ in range(4)]  # no contrast: every pair fails
    with pytest.raises(InvalidInputError, match="all 3 pairwise registrations failed.*first error: "):
        rf.align_stack(flat, "translation", "first", progress="none")


def _sections(sem_sections, n):
    return [rf.from_sitk(s) for s in sem_sections[:n]]


@pytest.mark.data
def test_progress_counts_the_pairwise_registrations(sem_sections, capsys):
    res = rf.align_stack(_sections(sem_sections, 3), "translation", "previous", initialization="geometry",
                         progress="lines")
    err = capsys.readouterr().err
    assert len(res.pairs) == 3 and "[align_stack] 3/3 done" in err, err  # 2 steps + 1 span of two slices


@pytest.mark.data
def test_anchor_output_is_on_the_anchor_grid(sem_sections):
    shifts = [(1.5, -1.0), (-2.0, 0.5), (0.5, 2.0)]  # slice k holds section k at x + s: T_k(x) = x - s
    slices = [rf.from_sitk(sitk.Resample(s, s, sitk.TranslationTransform(2, d), sitk.sitkBSpline, 0.0))
              for s, d in zip(sem_sections, shifts)]
    crop = [rf.from_sitk(s[6:90, 4:96]) for s in sem_sections[:3]]  # another grid (x from 6, y from 4), same space
    anchors = [a.with_array((255.0 - a.array) ** 2) for a in crop]  # and another contrast
    res = rf.align_stack(slices, "translation", anchors, **KW)
    assert res.aligned.shape == (3, 92, 84) and not res.warnings
    np.testing.assert_allclose(res.aligned.origin[:2], anchors[0].origin)
    for k, d in enumerate(shifts):  # aligned[k] is slice k resampled through T_k onto anchor slice k
        np.testing.assert_allclose(res.transforms[k].parameters, -np.array(d), atol=0.15)
        want = rf.resample(slices[k], res.transforms[k], reference=anchors[k]).array
        np.testing.assert_allclose(res.aligned.array[k], want, atol=1e-4)
