"""SimpleITK baseline for regframe's 3-D rigid/affine registration (issue 4, benchmark).

Provenance script (committed, never run by CI). Writes ``sitk_lung3d_baselines.json`` next to
itself.

Usage (from the repository root)::

    /root/itkenv/bin/python benchmarks/baselines/make_sitk_lung3d_baselines.py \
        [--data-dir DIR] [--threads 2] [--repeats 3]

Set-up (the "well-tuned SimpleITK pipeline" of issue 4):

* fixed: ``lung3d/3DCT_lung_baseline_small.mha`` (57x78x64, 2.732x2.732x5 mm, read as float32);
* moving: the fixed image resampled onto its own grid through the inverse of a known transform
  ``T_true`` (cubic B-spline interpolation, default value -1024 HU), so that
  ``moving(T_true(x)) = fixed(x)``; ``T_true`` is a rigid ``Euler3DTransform`` (rotation
  about 11 degrees, translation about 11 mm) or an ``AffineTransform`` (rotation, scale and shear),
  centred on the image centre; parameters are stored in the output;
* registration: ``ImageRegistrationMethod`` with Mattes MI (50 bins), RANDOM sampling 20 %
  (fixed seed), linear interpolation, regular-step gradient descent with physical-shift scales,
  3 levels (shrink 4, 2, 1; smoothing 2, 1, 0 voxels), initial transform from
  ``CenteredTransformInitializer`` (geometry); ``VersorRigid3DTransform`` for the rigid case,
  ``AffineTransform`` for the affine case;
* error: distance ``|T_est(p) - T_true(p)|`` (mm) at the 100 landmark points of
  ``lung3d/3DCT_lung_baseline_landmarks.txt``, mean and max;
* time: wall time of ``Execute`` (median of ``--repeats`` runs, single process), thread count
  from ``SetGlobalDefaultNumberOfThreads``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / ".." / "shared" / "data"
OUT = HERE / "sitk_lung3d_baselines.json"
SEED = 12345


def image_center(image: sitk.Image) -> list[float]:
    size = np.array(image.GetSize(), float)
    return list(image.TransformContinuousIndexToPhysicalPoint(list((size - 1) / 2)))


def true_transforms(center: list[float]) -> dict[str, sitk.Transform]:
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(center)
    rigid.SetRotation(*np.deg2rad([4.0, -3.0, 10.0]))
    rigid.SetTranslation((8.0, -6.0, 5.0))

    affine = sitk.AffineTransform(3)
    affine.SetCenter(center)
    az = np.deg2rad(6.0)
    rot = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    shear = np.array([[1.0, 0.03, 0.0], [0.0, 1.0, -0.02], [0.01, 0.0, 1.0]])
    matrix = rot @ shear @ np.diag([1.05, 0.95, 1.03])
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation((5.0, -4.0, 3.0))
    return {"rigid": rigid, "affine": affine}


def read_landmarks(path: Path) -> np.ndarray:
    lines = path.read_text().split("\n")
    assert lines[0].strip() == "point"
    n = int(lines[1])
    return np.array([[float(v) for v in line.split()] for line in lines[2:2 + n]])


def register(fixed, moving, kind: str):
    if kind == "rigid":
        initial = sitk.VersorRigid3DTransform()
    else:
        initial = sitk.AffineTransform(3)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, initial, sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=300,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    iterations = []
    reg.AddCommand(sitk.sitkMultiResolutionIterationEvent,
                   lambda: iterations.append(0))
    reg.AddCommand(sitk.sitkIterationEvent,
                   lambda: iterations.__setitem__(-1, iterations[-1] + 1) if iterations else None)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = reg.Execute(fixed, moving)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return result, elapsed, cpu, reg.GetOptimizerStopConditionDescription(), iterations


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    data = args.data_dir.resolve()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    fixed = sitk.ReadImage(str(data / "lung3d/3DCT_lung_baseline_small.mha"), sitk.sitkFloat32)
    landmarks = read_landmarks(data / "lung3d/3DCT_lung_baseline_landmarks.txt")
    load_before = os.getloadavg()
    cases = {}
    for kind, t_true in true_transforms(image_center(fixed)).items():
        moving = sitk.Resample(fixed, fixed, t_true.GetInverse(), sitk.sitkBSpline, -1024.0,
                               sitk.sitkFloat32)
        truth = np.array([t_true.TransformPoint(p.tolist()) for p in landmarks])
        runs = []
        for _ in range(args.repeats):
            result, elapsed, cpu, stop, iterations = register(fixed, moving, kind)
            est = np.array([result.TransformPoint(p.tolist()) for p in landmarks])
            err = np.linalg.norm(est - truth, axis=1)
            runs.append({
                "time_s": elapsed, "cpu_s": cpu,
                "mean_landmark_error_mm": float(err.mean()),
                "max_landmark_error_mm": float(err.max()),
                "iterations_per_level": iterations,
                "stop_condition": stop,
                "result_transform": str(result.GetName()),
                "result_parameters": list(result.GetParameters()) if result.GetName() != "CompositeTransform"
                else [list(result.GetNthTransform(i).GetParameters()) for i in range(result.GetNumberOfTransforms())],
            })
            print(kind, "%.2f s (cpu %.2f)" % (elapsed, cpu),
                  "mean err %.4f mm, max %.4f mm" % (err.mean(), err.max()), iterations, flush=True)
        cases[kind] = {
            "true_transform": {"class": t_true.GetName(),
                               "parameters": list(t_true.GetParameters()),
                               "fixed_parameters": list(t_true.GetFixedParameters())},
            "moving_image": "fixed image resampled through the inverse of true_transform "
                            "(sitkBSpline, default -1024, float32, fixed grid)",
            "time_s_median": statistics.median(r["time_s"] for r in runs),
            "mean_landmark_error_mm_median": statistics.median(
                r["mean_landmark_error_mm"] for r in runs),
            "runs": runs,
        }
    out = {
        "schema_version": 1,
        "description": "SimpleITK 3-D rigid/affine baseline for regframe issue 4 "
                       "(see the generator's docstring for the exact pipeline).",
        "command": "/root/itkenv/bin/python benchmarks/baselines/make_sitk_lung3d_baselines.py "
                   f"--threads {args.threads} --repeats {args.repeats}",
        "threads": args.threads,
        "fixed_image": "lung3d/3DCT_lung_baseline_small.mha",
        "landmarks": "lung3d/3DCT_lung_baseline_landmarks.txt (100 points, mm)",
        "registration": {
            "metric": f"MattesMutualInformation, 50 bins, RANDOM 20 %, seed {SEED}",
            "interpolator": "linear",
            "optimizer": "RegularStepGradientDescent(learningRate=2.0, minStep=1e-4, "
                         "numberOfIterations=300, relaxationFactor=0.5, "
                         "gradientMagnitudeTolerance=1e-8), scales from physical shift",
            "pyramid": "shrink [4, 2, 1], smoothing sigmas [2, 1, 0] voxels",
            "initializer": "CenteredTransformInitializer GEOMETRY",
            "transforms": {"rigid": "VersorRigid3DTransform", "affine": "AffineTransform"},
        },
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": {"SimpleITK": sitk.Version.VersionString(), "ITK": sitk.Version.ITKVersionString(),
                     "python": sys.version.split()[0], "numpy": np.__version__},
        "data_root": "../shared/data relative to the repository root",
        "generated_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cases": cases,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
