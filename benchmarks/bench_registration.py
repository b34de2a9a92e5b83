"""3-D rigid and affine registration of the lung CT: regframe ``register()`` vs a tuned SimpleITK pipeline.

Both run in the same process on the same inputs: the CT of ``../shared/data/lung3d`` as the
fixed image, and the CT resampled (SimpleITK, B-spline, default -1024 HU) through the inverse
of a known rigid or affine transform as the moving image.  The error is the distance between
the recovered and the true mapping at the 100 landmark points.

SimpleITK pipeline (issue 4's "well-tuned" recipe, in ``_sitk_lung3d.py``): regular-step gradient descent, physical-shift
scales, 3 levels (shrink 4/2/1, sigmas 2/1/0 voxels), 20 % random sampling, Mattes 50 bins,
geometry-centred initial transform.

regframe: ``register(fixed, moving, kind, "mattes")`` with its defaults (no tuning).  The first
call, which includes numba compilation (or loading the on-disk cache), is reported separately;
steady-state times are medians over ``--repeats`` runs.

Run: ``python benchmarks/bench_registration.py [--threads 2] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import SimpleITK as sitk  # noqa: E402
from _sitk_lung3d import image_center, read_landmarks, true_transforms  # noqa: E402
from _sitk_lung3d import register as sitk_register  # noqa: E402

import regframe as rf  # noqa: E402
from regframe.registration import register  # noqa: E402

DEFAULT_DATA = HERE.parents[1] / "shared" / "data"


def _regframe_run(fixed, moving, kind):
    t0 = time.perf_counter()
    result = register(fixed, moving, kind, "mattes")
    return result, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data = args.data_dir.resolve()
    ct_path = data / "lung3d" / "3DCT_lung_baseline_small.mha"
    if not ct_path.exists():
        print(f"skipped: {ct_path} not found (expected ../shared/data beside the repository)")
        return 0
    import numba

    numba.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    fixed_s = sitk.ReadImage(str(ct_path), sitk.sitkFloat32)
    landmarks = read_landmarks(data / "lung3d" / "3DCT_lung_baseline_landmarks.txt")
    fixed = rf.from_sitk(fixed_s)

    rows = []
    for kind, t_true in true_transforms(image_center(fixed_s)).items():
        moving_s = sitk.Resample(fixed_s, fixed_s, t_true.GetInverse(), sitk.sitkBSpline, -1024.0,
                                 sitk.sitkFloat32)
        moving = rf.from_sitk(moving_s)
        truth = np.array([t_true.TransformPoint(p.tolist()) for p in landmarks])

        sitk_times, sitk_errs = [], []
        for _ in range(args.repeats):
            res, elapsed, _cpu, _stop, _its = sitk_register(fixed_s, moving_s, kind)
            est = np.array([res.TransformPoint(p.tolist()) for p in landmarks])
            sitk_times.append(elapsed)
            sitk_errs.append(float(np.linalg.norm(est - truth, axis=1).mean()))

        first_result, first_time = _regframe_run(fixed, moving, kind)
        rf_times, rf_errs = [], []
        for _ in range(args.repeats):
            result, elapsed = _regframe_run(fixed, moving, kind)
            est = result.transform.transform_points(landmarks)
            rf_times.append(elapsed)
            rf_errs.append(float(np.linalg.norm(est - truth, axis=1).mean()))
            assert np.array_equal(result.transform.parameters, first_result.transform.parameters)
        rows.append((kind, statistics.median(sitk_times), statistics.median(sitk_errs),
                     first_time, statistics.median(rf_times), statistics.median(rf_errs),
                     first_result.iterations_per_level))

    print(f"threads: {args.threads}; repeats: {args.repeats}; SimpleITK {sitk.Version.VersionString()}")
    print(f"{'case':8} {'SimpleITK s':>12} {'err mm':>8} {'regframe 1st s':>15} {'regframe s':>11} "
          f"{'err mm':>8} {'speed-up':>9}")
    for kind, st, se, ft, rt, re_, its in rows:
        print(f"{kind:8} {st:12.2f} {se:8.4f} {ft:15.2f} {rt:11.2f} {re_:8.4f} {st / rt:8.1f}x"
              f"   iterations {its}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
