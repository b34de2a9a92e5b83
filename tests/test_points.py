"""register_points: the seed tutorial's cube, kinds, robustness, real lung surfaces, determinism."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import regframe as rf
from regframe.errors import InvalidInputError, NonFiniteError, ShapeError
from regframe.optimizers.base import StopReason
from regframe.points import estimate_normals, register_points
from regframe.points.surface import surface_points

REPO = Path(__file__).resolve().parents[1]


def _cube(seed: int):
    """The seed tutorial: 1000 points in the unit cube, 45 deg about z, shift (0.5, -0.2, 0.1), noise 0.01."""
    rng = np.random.default_rng(seed)
    p = rng.random((1000, 3))
    r = Rotation.from_euler("z", 45, degrees=True).as_matrix()
    t = np.array([0.5, -0.2, 0.1])
    q = p @ r.T + t + rng.normal(0, 0.01, p.shape)
    return p, q[rng.permutation(1000)], r, t


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_seed_tutorial_cube(seed):
    p, q, r, t = _cube(seed)
    res = register_points(p, q)
    a, o = res.transform.compute_matrix(), res.transform.offset
    assert np.linalg.norm(a - r) <= 1e-2
    assert np.linalg.norm(o - t) <= 1e-2
    assert res.stop_reason == StopReason.CONVERGED
    assert res.inlier_fraction > 0.95 and res.rms < 0.05
    assert isinstance(res.transform, rf.VersorRigid3DTransform)


def test_cube_without_global_initialization_finds_a_symmetric_solution():
    """The tutorial's failure: plain ICP from the centroids ends in a wrong (symmetric) optimum."""
    p, q, r, _ = _cube(0)
    res = register_points(p, q, initialization="centroids", robust="none")
    assert np.linalg.norm(res.transform.compute_matrix() - r) > 0.1


@pytest.mark.parametrize("kind", ["translation", "rigid", "similarity", "affine"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_kinds_recover_known_maps(kind, ndim):
    rng = np.random.default_rng(10 + ndim)
    p = rng.normal(0, 1, (1500, ndim)) * np.arange(3, 3 + ndim) + 40.0  # anisotropic, far from 0
    angle = 0.5
    if ndim == 2:
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    else:
        rot = Rotation.from_rotvec(angle * np.array([1.0, 2.0, 2.0]) / 3.0).as_matrix()
    a = {"translation": np.eye(ndim), "rigid": rot, "similarity": 1.2 * rot,
         "affine": rot @ np.diag(np.linspace(0.9, 1.15, ndim)) + 0.05}[kind]
    o = np.linspace(2.0, -3.0, ndim)
    q = (p @ a.T + o)[rng.permutation(p.shape[0])]
    res = register_points(p, q, kind)
    assert np.allclose(res.transform.compute_matrix(), a, atol=1e-6)
    assert np.allclose(res.transform.offset, o, atol=1e-5)


def _ellipsoid(n: int, seed: int, bumps: bool = True) -> np.ndarray:
    """A random sampling of an ellipsoid, bent into an asymmetric egg by default."""
    v = np.random.default_rng(seed).normal(size=(n, 3))
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    r = 1.0 + (0.3 * u[:, :1] + 0.2 * u[:, 1:2] * u[:, 2:3] if bumps else 0.0)
    return u * r * [40.0, 25.0, 15.0]


def test_point_to_plane_on_independently_sampled_surface():
    """Two different samplings of one surface: point-to-plane is near exact, point-to-point is biased."""
    rot = Rotation.from_rotvec(np.deg2rad(8) * np.array([1.0, 2.0, 3.0]) / np.sqrt(14)).as_matrix()
    fixed = _ellipsoid(6000, 0)
    moving = _ellipsoid(6000, 1) @ rot.T + [3.0, -2.0, 1.0]
    res = register_points(fixed, moving, method="point_to_plane")
    err = Rotation.from_matrix(res.transform.compute_matrix() @ rot.T).magnitude()
    assert np.rad2deg(err) < 0.1
    assert np.allclose(res.transform.offset, [3.0, -2.0, 1.0], atol=0.1)


def test_normals_of_a_plane_and_a_sphere():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(-5, 5, (400, 2)), np.zeros(400)]
    n = estimate_normals(plane)
    assert np.allclose(np.abs(n[:, 2]), 1.0)
    sphere = _ellipsoid(3000, 2, bumps=False) / [40.0, 25.0, 15.0] * 10.0
    n = estimate_normals(sphere)
    cos = np.abs(np.einsum("ni,ni->n", n, sphere / 10.0))
    assert np.median(cos) > 0.99


@pytest.fixture(scope="module")
def lung_surface():
    from tests.conftest import data_path

    mask = rf.read_image(data_path("lung3d", "3DCT_lung_baseline_mask.mha"))
    return surface_points(mask, sigma=1.0)


def _lung_case(surface, deg, axis, shift, seed, n=20000, noise=0.3, same_sampling=False):
    """Fixed and moving: random subsets of the lung surface (disjoint unless ``same_sampling``,
    then the moving points are the fixed ones, shuffled); moving moved by a known rigid map."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(surface.shape[0])
    fixed = surface[order[:n]]
    other = fixed[rng.permutation(n)] if same_sampling else surface[order[n : 2 * n]]
    rot = Rotation.from_rotvec(np.deg2rad(deg) * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix()
    c = fixed.mean(0)
    offset = c + np.asarray(shift) - rot @ c
    moving = other @ rot.T + offset + rng.normal(0, noise, other.shape)
    return fixed, moving, rot, offset


def _errors(res, fixed, rot, offset):
    a, o = res.transform.compute_matrix(), res.transform.offset
    deg = np.rad2deg(Rotation.from_matrix(a @ rot.T).magnitude())
    mm = float(np.mean(np.linalg.norm(fixed @ (a - rot).T + o - offset, axis=1)))
    return deg, mm


def test_lung_surface_known_rigid_motion(lung_surface):
    fixed, moving, rot, offset = _lung_case(lung_surface, 8.0, [1, 2, 3], [4.0, -6.0, 3.0], 0)
    res = register_points(fixed, moving, method="point_to_plane")
    deg, mm = _errors(res, fixed, rot, offset)
    assert deg < 0.02 and mm < 0.05


@pytest.mark.parametrize("method", ["point_to_point", "point_to_plane"])
def test_lung_surface_outliers_and_partial_overlap(lung_surface, method):
    """30 % of the moving points replaced by outliers, 70 % overlap: <= 0.1 deg and 0.3 mm.

    Point-to-point on the same sampling (it is biased across different samplings of a surface);
    point-to-plane on disjoint samplings.
    """
    fixed, moving, rot, offset = _lung_case(lung_surface, 7.0, [2, -1, 1], [-5.0, 3.0, 6.0], 1,
                                            same_sampling=method == "point_to_point")
    rng = np.random.default_rng(5)
    axis = np.array([0.3, 1.0, 0.2])
    sf = fixed @ axis
    fixed = fixed[sf < np.quantile(sf, 0.85)]
    sm = (moving - offset) @ rot @ axis  # the same axis in fixed space
    moving = moving[sm > np.quantile(sm, 0.15)].copy()
    k = int(0.3 * moving.shape[0])
    lo, hi = moving.min(0), moving.max(0)
    moving[rng.choice(moving.shape[0], k, replace=False)] = rng.uniform(lo, hi, (k, 3))
    res = register_points(fixed, moving, method=method)
    deg, mm = _errors(res, fixed, rot, offset)
    assert deg <= 0.1 and mm <= 0.3, (deg, mm)
    assert 0.4 < res.inlier_fraction < 0.95  # the outliers and the unmatched part lost their weight


@pytest.mark.slow
@pytest.mark.parametrize("axis", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, -2, 0.5]])
def test_lung_surface_rotations_up_to_90_degrees(lung_surface, axis):
    for deg in (60.0, 90.0):
        fixed, moving, rot, offset = _lung_case(lung_surface, deg, axis, [5.0, -3.0, 8.0], 2, n=10000)
        res = register_points(fixed, moving, method="point_to_plane")
        got_deg, mm = _errors(res, fixed, rot, offset)
        assert got_deg < 0.1 and mm < 0.2, (axis, deg, got_deg, mm)


def test_lung_surface_90_degrees_fast(lung_surface):
    fixed, moving, rot, offset = _lung_case(lung_surface, 90.0, [1, 1, 0], [5.0, -3.0, 8.0], 3, n=8000)
    res = register_points(fixed, moving, method="point_to_plane")
    deg, mm = _errors(res, fixed, rot, offset)
    assert deg < 0.1 and mm < 0.2


def test_deterministic_and_independent_of_workers():
    p, q, _, _ = _cube(4)
    runs = [register_points(p, q, method=m, workers=w) for m in ("point_to_point", "point_to_plane") for w in (1, 2)]
    for a, b in ((runs[0], runs[1]), (runs[2], runs[3])):
        assert np.array_equal(a.transform.parameters, b.transform.parameters)
        assert a.final_value == b.final_value and a.n_iterations == b.n_iterations
    again = register_points(p, q, method="point_to_point", workers=1)
    assert np.array_equal(again.transform.parameters, runs[0].transform.parameters)


def test_bit_identical_for_1_and_2_numba_threads():
    script = textwrap.dedent(
        """
        import json, numba, numpy as np
        from regframe.points import register_points
        from regframe.points.normals import estimate_normals
        rng = np.random.default_rng(0)
        v = rng.normal(size=(20000, 3)); v /= np.linalg.norm(v, axis=1, keepdims=True)
        out = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            n = estimate_normals(v * [3.0, 2.0, 1.0])
            r = register_points(v * [3.0, 2.0, 1.0], v[::-1] * [3.0, 2.0, 1.0] + 0.1, method="point_to_plane")
            out.append([float(x).hex() for x in np.r_[n.ravel()[::97], r.transform.parameters, r.final_value]])
        print(json.dumps(out[0] == out[1]))
        """
    )
    env = {"PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "true"


def test_inputs_untouched_result_frozen_and_errors():
    p, q, _, _ = _cube(5)
    keep_p, keep_q = p.copy(), q.copy()
    res = register_points(p, q, "similarity")
    assert np.array_equal(p, keep_p) and np.array_equal(q, keep_q)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.rms = 0.0
    with pytest.raises(ShapeError):
        register_points(p[:, :2], q)
    with pytest.raises(ShapeError):
        register_points(p[:3], q)
    with pytest.raises(ShapeError):
        register_points(np.zeros((10, 4)), np.zeros((10, 4)))
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        register_points(bad, q)
    with pytest.raises(InvalidInputError):
        register_points(p, q, "bspline")
    with pytest.raises(InvalidInputError):
        register_points(p, q, method="plane")
    with pytest.raises(InvalidInputError):
        register_points(p, q, max_distance=1e-9, initialization="none", initial_transform=rf.TranslationTransform(3))
    with pytest.raises(InvalidInputError):
        register_points(p, q, initial_transform=rf.BSplineTransform(3))


def test_initial_transform_is_used():
    p, q, r, t = _cube(6)
    start = rf.AffineTransform(3)
    start.set_matrix(r.ravel())
    start.set_translation(t)
    res = register_points(p, q, initialization="none", initial_transform=start)
    assert np.linalg.norm(res.transform.compute_matrix() - r) <= 1e-2
    assert res.n_iterations <= 5
