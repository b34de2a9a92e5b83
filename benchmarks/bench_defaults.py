"""Do ``register()``'s defaults recover known transforms of real images nobody tuned them on?

2-D: real images from ``../shared/data`` (the brain slice of ``elastix_example``, an EM
section of ``lung_sem`` cropped to 400x400, the rat-lung slice) moved by known similarity
and affine transforms made with SimpleITK (scales 0.7-1.4 x rotations -90..90 degrees x
shifts up to 25 % of the field of view), registered back with ``register(fixed, moving,
kind)`` and its defaults; the error is the RMS distance in pixels between the recovered and
the true mapping over the image.  Goal: every case <= 0.5 px.

3-D: the lung CT rotated up to 45 degrees about random axes plus shifts of 25 % of the field
of view, ``register(fixed, moving, "rigid")``; error at the 100 landmarks.  Goal <= 0.2 mm.

Run: ``python benchmarks/bench_defaults.py [--quick] [--threads 2]``
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import regframe as rf
from regframe.registration import register

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data"


def _sitk(image: rf.Image) -> sitk.Image:
    return rf.to_sitk(image)


def moved(image: rf.Image, truth: rf.Transform) -> rf.Image:
    """``moving(y) = image(truth^-1(y))`` on the image's grid, resampled by SimpleITK (B-spline)."""
    inv = truth.inverse()
    st = sitk.AffineTransform(image.ndim)
    st.SetMatrix(inv.matrix.ravel().tolist())
    st.SetCenter(inv.center.tolist())
    st.SetTranslation(inv.translation.tolist())
    src = _sitk(image)
    out = sitk.Resample(src, src, st, sitk.sitkBSpline, float(np.min(image.array)), sitk.sitkFloat64)
    return rf.from_sitk(out)


def truth_2d(image: rf.Image, kind: str, scale: float, angle_deg: float, shift_frac: tuple[float, float],
             rng: np.random.Generator) -> rf.Transform:
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = scale * rot
    if kind == "affine":
        shear = np.eye(2) + rng.uniform(-0.08, 0.08, size=(2, 2))
        m = m @ shear
    t = rf.AffineTransform(2)
    t.fixed_parameters = image.physical_center()
    extent = np.array(image.size) * image.spacing
    t.parameters = np.concatenate([m.ravel(), np.array(shift_frac) * extent])
    return t


def rms_px(a: rf.Transform, b: rf.Transform, image: rf.Image) -> float:
    pts = image.voxel_points()[::7]
    d = a.transform_points(pts) - b.transform_points(pts)
    return float(np.sqrt(np.mean(np.sum((d / image.spacing) ** 2, axis=1))))


def images_2d(data: Path) -> dict[str, rf.Image]:
    out = {"brain": rf.read_image(data / "elastix_example" / "fixed.mhd", dtype=np.float64)}
    sem = rf.read_image(data / "lung_sem" / sorted(p.name for p in (data / "lung_sem").glob("*.png"))[0],
                        dtype=np.float64) if list((data / "lung_sem").glob("*.png")) else None
    if sem is not None:
        out["em_section"] = rf.Image(sem.array[200:600, 200:600].copy(), spacing=sem.spacing)
    out["rat_lung"] = rf.read_image(next((data / "rat_lung").glob("*1*.mh*")), dtype=np.float64)
    return out


def sweep_2d(data: Path, quick: bool) -> list[tuple]:
    rng = np.random.default_rng(0)
    scales = (0.7, 1.0, 1.4) if quick else (0.7, 0.85, 1.0, 1.2, 1.4)
    angles = (-90.0, 0.0, 90.0) if quick else (-90.0, -45.0, -10.0, 30.0, 60.0, 90.0)
    rows = []
    for (name, image), kind in itertools.product(images_2d(data).items(), ("similarity", "affine")):
        for scale, angle in itertools.product(scales, angles):
            shift = tuple(rng.uniform(-0.25, 0.25, size=2))
            truth = truth_2d(image, kind, scale, angle, shift, rng)
            moving = moved(image, truth)
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = register(image, moving, kind)
            dt = time.perf_counter() - t0
            err = rms_px(res.transform, truth, image)
            rows.append((name, kind, scale, angle, shift, err, dt, len(caught)))
            print(f"{name:11s} {kind:10s} scale {scale:4.2f} rot {angle:6.1f} shift ({shift[0]:+.2f},{shift[1]:+.2f})"
                  f" FOV -> {err:8.3f} px {dt:6.2f} s{'  WARN' if res.warnings else ''}", flush=True)
    return rows


def read_landmarks(path: Path) -> np.ndarray:
    lines = path.read_text().split()
    n = int(lines[1])
    return np.array(lines[2:2 + 3 * n], dtype=float).reshape(n, 3)


def sweep_3d(data: Path, quick: bool) -> list[tuple]:
    ct = rf.read_image(data / "lung3d" / "3DCT_lung_baseline_small.mha", dtype=np.float64)
    pts = read_landmarks(data / "lung3d" / "3DCT_lung_baseline_landmarks.txt")
    rng = np.random.default_rng(1)
    rows = []
    n = 4 if quick else 10
    extent = np.array(ct.size) * ct.spacing
    for k in range(n):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rng.uniform(15.0, 45.0))
        truth = rf.VersorRigid3DTransform()
        truth.fixed_parameters = ct.physical_center()
        truth.parameters = [*(axis * np.sin(angle / 2)), *(rng.uniform(-0.25, 0.25, size=3) * extent)]
        moving = moved(ct, truth)
        t0 = time.perf_counter()
        res = register(ct, moving, "rigid")
        dt = time.perf_counter() - t0
        err = np.linalg.norm(res.transform.transform_points(pts) - truth.transform_points(pts), axis=1)
        rows.append((np.rad2deg(angle), err.mean(), err.max(), dt))
        print(f"lung CT rigid {np.rad2deg(angle):5.1f} deg about {np.round(axis, 2)}: mean {err.mean():.3f} mm, "
              f"max {err.max():.3f} mm, {dt:.2f} s{'  WARN' if res.warnings else ''}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    parser.add_argument("--only", choices=("2d", "3d"), default=None)
    args = parser.parse_args(argv)
    data = args.data_dir.resolve()
    if not (data / "elastix_example").exists():
        print(f"skipped: {data} has no elastix_example (expected ../shared/data beside the repository)")
        return 0
    import numba

    numba.set_num_threads(args.threads)
    brain = rf.read_image(data / "elastix_example" / "fixed.mhd", dtype=np.float64)
    register(brain, brain, "similarity")  # warm-up: numba compilation or cache loading
    ok = True
    if args.only in (None, "2d"):
        rows = sweep_2d(data, args.quick)
        errs = np.array([r[5] for r in rows])
        bad = int(np.sum(errs > 0.5))
        print(f"\n2-D: {len(rows)} cases, {bad} above 0.5 px; median {np.median(errs):.3f} px, max {errs.max():.3f} px; "
              f"median time {np.median([r[6] for r in rows]):.2f} s")
        ok &= bad == 0
    if args.only in (None, "3d"):
        rows3 = sweep_3d(data, args.quick)
        means = np.array([r[1] for r in rows3])
        bad = int(np.sum(means > 0.2))
        print(f"\n3-D: {len(rows3)} cases, {bad} above 0.2 mm mean; worst mean {means.max():.3f} mm, "
              f"median time {np.median([r[3] for r in rows3]):.2f} s")
        ok &= bad == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
