"""Point-cloud registration of a real lung surface: regframe ``register_points`` vs Open3D ICP.

Surface: the marching-cubes vertices (edge crossings of the 0.5 level after a 1-voxel Gaussian
smoothing; :func:`regframe.points.surface.surface_points`) of the baseline lung mask of
``../shared/data/lung3d`` (~78 600 points).  Fixed and moving clouds are *disjoint* random halves
of them (~40 000 / ~38 600 points: different samplings of one surface); the moving half is moved
by a known rigid map made with scipy (rotation about the fixed centroid plus a shift) and gets
Gaussian noise.  Cases: a 8-degree / 7.8-mm motion; the same with 30 % of the moving points
replaced by uniform outliers and 70 % overlap; a 90-degree rotation about an oblique axis.

Open3D (``open3d-cpu``, benchmark environment only): ``registration_icp`` from the identity with
a 10 mm correspondence distance, 100 iterations, point-to-point, point-to-plane (normals from
``KDTreeSearchParamHybrid(radius=5, max_nn=30)``, timed with the ICP) and point-to-plane with a
Tukey kernel (k = 1 mm).  regframe: ``register_points`` with its defaults (global
initialization, Tukey weights), point-to-point and point-to-plane.  Both use every core
(``--threads``), both are warmed up first; times are medians over ``--repeats`` runs.  Errors:
rotation angle of ``R_est R_true^T`` (degrees) and the mean distance between the estimated and
the true mapping over the fixed points (mm).

Run: ``PYTHONPATH=$PWD /work/benchenv/bin/python benchmarks/bench_points.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

import regframe as rf
from regframe.points import register_points
from regframe.points.surface import surface_points

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data"


def make_case(surface, deg, axis, shift, *, outliers=0.0, overlap=1.0, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(surface.shape[0])
    half = surface.shape[0] // 2
    fixed, other = surface[order[:half]], surface[order[half:]]
    rot = Rotation.from_rotvec(np.deg2rad(deg) * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix()
    c = fixed.mean(0)
    offset = c + np.asarray(shift, float) - rot @ c
    if overlap < 1.0:
        direction = np.array([0.3, 1.0, 0.2])
        cut = (1.0 - overlap) / 2.0
        sf, so = fixed @ direction, other @ direction
        fixed = fixed[sf < np.quantile(sf, 1.0 - cut)]
        other = other[so > np.quantile(so, cut)]
    moving = other @ rot.T + offset + rng.normal(0, noise, other.shape)
    if outliers > 0:
        k = int(outliers * moving.shape[0])
        moving[rng.choice(moving.shape[0], k, replace=False)] = rng.uniform(moving.min(0), moving.max(0), (k, 3))
    return fixed, moving, rot, offset


def errors(a, o, fixed, rot, offset):
    deg = float(np.rad2deg(Rotation.from_matrix(a @ rot.T).magnitude()))
    mm = float(np.mean(np.linalg.norm(fixed @ (a - rot).T + o - offset, axis=1)))
    return deg, mm


def run_open3d(o3d, fixed, moving, kind):
    reg = o3d.pipelines.registration
    src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(fixed))
    tgt = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(moving))
    t0 = time.perf_counter()
    if kind == "point_to_point":
        est = reg.TransformationEstimationPointToPoint()
    else:
        tgt.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=5.0, max_nn=30))
        est = reg.TransformationEstimationPointToPlane(reg.TukeyLoss(k=1.0)) if kind == "plane+tukey" \
            else reg.TransformationEstimationPointToPlane()
    res = reg.registration_icp(src, tgt, 10.0, np.eye(4), est, reg.ICPConvergenceCriteria(max_iteration=100))
    elapsed = time.perf_counter() - t0
    m = np.asarray(res.transformation)
    return m[:3, :3], m[:3, 3], elapsed


def run_regframe(fixed, moving, method):
    t0 = time.perf_counter()
    res = register_points(fixed, moving, method=method)
    elapsed = time.perf_counter() - t0
    return res.transform.compute_matrix(), res.transform.offset, elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    mask_path = args.data_dir.resolve() / "lung3d" / "3DCT_lung_baseline_mask.mha"
    if not mask_path.exists():
        print(f"skipped: {mask_path} not found (expected ../shared/data beside the repository)")
        return 0
    try:
        import open3d as o3d
    except ImportError as exc:
        print(f"skipped: open3d is not importable ({exc}); run with the benchmark environment")
        return 0
    import numba

    numba.set_num_threads(args.threads)
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    surface = surface_points(rf.read_image(mask_path), sigma=1.0)
    cases = {
        "8 deg, 7.8 mm": dict(deg=8.0, axis=[1, 2, 3], shift=[4.0, -6.0, 3.0]),
        "7 deg, 30% outliers, 70% overlap": dict(deg=7.0, axis=[2, -1, 1], shift=[-5.0, 3.0, 6.0],
                                                 outliers=0.3, overlap=0.7, seed=1),
        "90 deg oblique": dict(deg=90.0, axis=[1, 1, 0.3], shift=[5.0, -3.0, 8.0], seed=2),
    }
    runners = [
        ("open3d point_to_point", lambda f, m: run_open3d(o3d, f, m, "point_to_point")),
        ("open3d point_to_plane", lambda f, m: run_open3d(o3d, f, m, "point_to_plane")),
        ("open3d plane+tukey", lambda f, m: run_open3d(o3d, f, m, "plane+tukey")),
        ("regframe point_to_point", lambda f, m: run_regframe(f, m, "point_to_point")),
        ("regframe point_to_plane", lambda f, m: run_regframe(f, m, "point_to_plane")),
    ]
    print(f"lung surface: {surface.shape[0]} points; threads {args.threads}; median of {args.repeats} runs\n")
    print(f"{'case':34s} {'method':24s} {'n_fix':>6s} {'n_mov':>6s} {'deg':>9s} {'mm':>9s} {'time s':>7s}")
    for name, spec in cases.items():
        fixed, moving, rot, offset = make_case(surface, **spec)
        rows = {}
        for label, run in runners:
            run(fixed, moving)  # warm-up (numba cache, first-touch)
            times, out = [], None
            for _ in range(args.repeats):
                a, o, elapsed = run(fixed, moving)
                times.append(elapsed)
                out = (a, o)
            deg, mm = errors(out[0], out[1], fixed, rot, offset)
            rows[label] = (deg, mm, statistics.median(times))
            print(f"{name:34s} {label:24s} {fixed.shape[0]:6d} {moving.shape[0]:6d} {deg:9.4f} {mm:9.4f} "
                  f"{rows[label][2]:7.3f}")
        best_o3d = min((v for k, v in rows.items() if k.startswith("open3d")), key=lambda v: (v[0], v[1]))
        best_rf = min((v for k, v in rows.items() if k.startswith("regframe")), key=lambda v: (v[0], v[1]))
        fastest_o3d = min(v[2] for k, v in rows.items() if k.startswith("open3d point_to_plane"))
        print(f"{'':34s} best regframe / best open3d: error {best_rf[0] / max(best_o3d[0], 1e-12):.2f}x (deg), "
              f"{best_rf[1] / max(best_o3d[1], 1e-12):.2f}x (mm); regframe point_to_plane time / open3d "
              f"point_to_plane time {rows['regframe point_to_plane'][2] / fastest_o3d:.2f}x\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
