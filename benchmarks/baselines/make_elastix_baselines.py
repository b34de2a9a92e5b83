"""Reference baselines from itk-elastix for regframe's deformable registration (issue 6).

Provenance script (committed, never run by CI; needs ``pip install itk-elastix``). It writes
``elastix_baselines.json`` next to itself.

Usage (from the repository root)::

    /root/itkenv/bin/python benchmarks/baselines/make_elastix_baselines.py \
        [--data-dir DIR] [--threads 2] [--repeats 3]

Cases
-----
* ``rat_lung``: fixed ``rat_lung/RatLungSlice1.mha``, moving ``RatLungSlice2.mha``; elastix
  default B-spline map (``GetDefaultParameterMap("bspline")``, unchanged). Score: mean squared
  intensity difference over *all* voxels of the fixed image between the fixed image and the
  moving image resampled onto it, before (moving as is; both images share one grid) and after
  (elastix's result image: cubic B-spline resampling, default pixel value 0; also transformix
  with linear resampling).
* ``brain_multimodal``: fixed ``elastix_example/fixed.mhd``, moving ``moving.mhd``; default
  rigid + affine + B-spline maps run as one elastix call (three stages, each initialised with
  the previous result). Score: Dice between ``mask_fixed`` and ``mask_moving`` warped by the
  result transform with nearest-neighbour resampling (transformix,
  ``ResampleInterpolator = FinalNearestNeighborInterpolator``), before and after.

For each case the elastix call (registration + elastix's own result-image resampling) is timed
with ``time.perf_counter``: one untimed warm-up, then ``--repeats`` timed runs in this single
process, median reported. The thread count is set with
``itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads`` and ``SetGlobalDefaultNumberOfThreads``
(elastix uses ITK's global threader). ``ElastixRegistrationMethod.SetNumberOfThreads(n)`` is *not*
used: with n > 1 it segfaults in itk-elastix 0.25.4 with the default (multi-metric) B-spline map
(known upstream: InsightSoftwareConsortium/ITKElastix issue #160). Process CPU time per run is
recorded next to the wall time so the effective parallelism is visible. The minimum determinant of the
spatial Jacobian of the result transform over the fixed-image grid comes from transformix
(``ComputeDeterminantOfSpatialJacobian``).
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
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

import itk

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / ".." / "shared" / "data"
OUT = HERE / "elastix_baselines.json"
IMG = itk.Image[itk.F, 2]


def read(path: Path):
    return itk.imread(str(path), itk.F)


def arr(image) -> np.ndarray:
    return np.asarray(itk.array_from_image(image), dtype=np.float64)


def same_grid(a, b) -> bool:
    return (
        tuple(a.GetLargestPossibleRegion().GetSize()) == tuple(b.GetLargestPossibleRegion().GetSize())
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(itk.array_from_matrix(a.GetDirection()), itk.array_from_matrix(b.GetDirection()))
    )


def parameter_object(stages: list[str]):
    po = itk.ParameterObject.New()
    for stage in stages:
        po.AddParameterMap(po.GetDefaultParameterMap(stage))
    return po


def maps_as_text(po) -> list[str]:
    texts = []
    for i in range(po.GetNumberOfParameterMaps()):
        pmap = po.GetParameterMap(i)
        lines = []
        for key in sorted(pmap.keys()):
            vals = " ".join(f'"{v}"' if not _is_number(v) else v for v in pmap[key])
            lines.append(f"({key} {vals})")
        texts.append("\n".join(lines) + "\n")
    return texts


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def run_elastix(fixed, moving, stages):
    method = itk.ElastixRegistrationMethod[IMG, IMG].New()
    method.SetFixedImage(fixed)
    method.SetMovingImage(moving)
    method.SetParameterObject(parameter_object(stages))
    method.SetLogToConsole(False)
    method.SetLogToFile(False)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    method.Update()
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return method.GetOutput(), method.GetTransformParameterObject(), elapsed, cpu


def with_overrides(tpo, overrides: dict[str, str]):
    out = itk.ParameterObject.New()
    for i in range(tpo.GetNumberOfParameterMaps()):
        pmap = tpo.GetParameterMap(i)
        for key, value in overrides.items():
            pmap[key] = (value,)
        out.AddParameterMap(pmap)
    return out


def transformix(moving, tpo, overrides: dict[str, str]):
    filt = itk.TransformixFilter[IMG].New()
    filt.SetMovingImage(moving)
    filt.SetTransformParameterObject(with_overrides(tpo, overrides))
    filt.SetLogToConsole(False)
    filt.Update()
    return filt.GetOutput()


def min_jacobian_determinant(moving, tpo) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        filt = itk.TransformixFilter[IMG].New()
        filt.SetMovingImage(moving)
        filt.SetTransformParameterObject(tpo)
        filt.SetComputeDeterminantOfSpatialJacobian(True)
        filt.SetOutputDirectory(tmp)
        filt.SetLogToConsole(False)
        filt.Update()
        det = arr(itk.imread(os.path.join(tmp, "spatialJacobian.nii"), itk.F))
    return {
        "min": float(det.min()),
        "max": float(det.max()),
        "fraction_nonpositive": float(np.mean(det <= 0)),
        "grid": "fixed image grid (transformix ComputeDeterminantOfSpatialJacobian, float32)",
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = a > 0.5
    b = b > 0.5
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def timed_runs(fixed, moving, stages, repeats):
    run_elastix(fixed, moving, stages)  # warm-up (library loading, first-touch)
    results = [run_elastix(fixed, moving, stages) for _ in range(repeats)]
    times = [r[2] for r in results]
    cpu = [r[3] for r in results]
    return results, times, cpu


def case_rat_lung(data: Path, repeats: int) -> dict:
    fixed = read(data / "rat_lung/RatLungSlice1.mha")
    moving = read(data / "rat_lung/RatLungSlice2.mha")
    assert same_grid(fixed, moving)
    F, M = arr(fixed), arr(moving)
    stages = ["bspline"]
    results, times, cpu = timed_runs(fixed, moving, stages, repeats)
    mses = [float(np.mean((F - arr(r[0])) ** 2)) for r in results]
    tpo = results[-1][1]
    linear = arr(transformix(moving, tpo, {"FinalBSplineInterpolationOrder": "1"}))
    return {
        "fixed_image": "rat_lung/RatLungSlice1.mha",
        "moving_image": "rat_lung/RatLungSlice2.mha",
        "stages": stages,
        "score": "mean squared intensity difference over all fixed-image voxels",
        "mse_before": float(np.mean((F - M) ** 2)),
        "mse_after": mses[-1],
        "mse_after_per_run": mses,
        "mse_after_linear_resampling": float(np.mean((F - linear) ** 2)),
        "after_resampling": "elastix result image (FinalBSplineInterpolator order 3, "
                            "DefaultPixelValue 0, float32); *_linear_resampling: transformix "
                            "with FinalBSplineInterpolationOrder 1",
        "runs_identical": len(set(mses)) == 1,
        "time_s_median": statistics.median(times),
        "time_s_runs": times,
        "cpu_s_runs": cpu,
        "jacobian_determinant": min_jacobian_determinant(moving, tpo),
        "parameter_maps": maps_as_text(parameter_object(stages)),
        "result_transform_parameter_maps": maps_as_text(tpo),
    }


def case_brain(data: Path, repeats: int) -> dict:
    base = data / "elastix_example"
    fixed = read(base / "fixed.mhd")
    moving = read(base / "moving.mhd")
    fmask = read(base / "mask_fixed.mhd")
    mmask = read(base / "mask_moving.mhd")
    assert same_grid(fixed, moving) and same_grid(fixed, fmask) and same_grid(moving, mmask)
    stages = ["rigid", "affine", "bspline"]
    results, times, cpu = timed_runs(fixed, moving, stages, repeats)
    nn = {
        "ResampleInterpolator": "FinalNearestNeighborInterpolator",
        "FinalBSplineInterpolationOrder": "0",
        "DefaultPixelValue": "0",
    }
    dices = [dice(arr(fmask), arr(transformix(mmask, r[1], nn))) for r in results]
    tpo = results[-1][1]
    return {
        "fixed_image": "elastix_example/fixed.mhd",
        "moving_image": "elastix_example/moving.mhd",
        "fixed_mask": "elastix_example/mask_fixed.mhd",
        "moving_mask": "elastix_example/mask_moving.mhd",
        "stages": stages,
        "score": "Dice(mask_fixed > 0.5, nearest-neighbour-warped mask_moving > 0.5) on the "
                 "fixed grid",
        "dice_before": dice(arr(fmask), arr(mmask)),
        "dice_after": dices[-1],
        "dice_after_per_run": dices,
        "runs_identical": len(set(dices)) == 1,
        "time_s_median": statistics.median(times),
        "time_s_runs": times,
        "cpu_s_runs": cpu,
        "jacobian_determinant": min_jacobian_determinant(moving, tpo),
        "parameter_maps": maps_as_text(parameter_object(stages)),
        "result_transform_parameter_maps": maps_as_text(tpo),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    data = args.data_dir.resolve()
    itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads(args.threads)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)

    load_before = os.getloadavg()
    cases = {
        "rat_lung": case_rat_lung(data, args.repeats),
        "brain_multimodal": case_brain(data, args.repeats),
    }
    for name, case in cases.items():
        score = {k: v for k, v in case.items() if k.startswith(("mse_", "dice_")) and "per_run" not in k}
        print(name, score, "time median %.3f s" % case["time_s_median"],
              "runs", ["%.3f" % t for t in case["time_s_runs"]],
              "min det J %.4f" % case["jacobian_determinant"]["min"], flush=True)
    out = {
        "schema_version": 1,
        "description": "itk-elastix default-parameter-map baselines for regframe issue 6. "
                       "Regenerate with benchmarks/baselines/make_elastix_baselines.py.",
        "command": "/root/itkenv/bin/python benchmarks/baselines/make_elastix_baselines.py "
                   f"--threads {args.threads} --repeats {args.repeats}",
        "threads": args.threads,
        "threads_how": "itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads/"
                       "SetGlobalDefaultNumberOfThreads (SetNumberOfThreads segfaults, "
                       "ITKElastix issue #160)",
        "repeats": args.repeats,
        "timing": "wall time of ElastixRegistrationMethod.Update() (registration + result "
                  "image), median of the timed runs after one untimed warm-up, single process",
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "versions": {
            "itk": itk.Version.GetITKVersion(),
            "itk-elastix": metadata.version("itk-elastix"),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
        },
        "data_root": "../shared/data relative to the repository root",
        "generated_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cases": cases,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
