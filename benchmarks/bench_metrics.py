"""Metric cost per evaluation: regframe vs SimpleITK (issue 3).

One regframe ``value_and_gradient()`` is compared with SimpleITK's cost per
gradient-descent iteration (one metric value + derivative) on the same
images, transform, metric, full sampling, linear interpolation and thread
count.  SimpleITK's per-iteration cost is measured as the difference of two
registrations with different iteration counts (so set-up, gradient-filter and
initialisation costs cancel) divided by the extra iterations (each run best of 3); regframe's
as the best call of 7 rounds of 10 (2-D) or 2 (3-D) calls, one round before each SimpleITK
run, so both tools are timed over the same minutes.  Best-of for both: on a shared machine
noise only ever adds time.

Cases: 2-D 256^2 (elastix example pair) and 3-D >= 2 M voxels (the lung CT
resampled to half its voxel size, moving = the same volume shifted), affine
and B-spline (8 x 8 mesh in 2-D, 6 x 6 x 6 in 3-D) transforms, MeanSquares and
Mattes (50 bins).  Synthetic phantoms are used when ``../shared/data`` is
absent.  The first regframe call of each kernel (numba compilation or cache
load) is reported separately.

Usage::

    python benchmarks/bench_metrics.py [--threads 2] [--quick] [--cold]

``--cold`` additionally measures the first call in a fresh process with an
empty numba cache (true compile time).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / ".." / "shared" / "data"


def load_images(ndim: int):
    """(fixed, moving) as regframe Images (float64)."""
    import SimpleITK as sitk

    from regframe import Image
    from regframe.testing.strategies import smooth_arrays

    if ndim == 2:
        f, m = DATA / "elastix_example" / "fixed.mhd", DATA / "elastix_example" / "moving.mhd"
        if f.exists() and m.exists():
            fi = sitk.ReadImage(str(f), sitk.sitkFloat64)
            mi = sitk.ReadImage(str(m), sitk.sitkFloat64)
            conv = lambda im: Image(sitk.GetArrayFromImage(im), im.GetSpacing(), im.GetOrigin(), im.GetDirection())  # noqa: E731
            return conv(fi), conv(mi), "elastix_example 256x256"
        a, b = smooth_arrays((256, 256), 1), smooth_arrays((256, 256), 2)
        return Image(a), Image(b), "phantom 256x256"
    ct = DATA / "lung3d" / "3DCT_lung_baseline_small.mha"
    if ct.exists():
        im = sitk.ReadImage(str(ct), sitk.sitkFloat64)
        size = [2 * s for s in im.GetSize()]
        spacing = [sp / 2 for sp in im.GetSpacing()]
        origin = np.array(im.GetOrigin()) - 0.25 * np.array(im.GetSpacing())
        fine = sitk.Resample(im, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), spacing,
                             im.GetDirection(), -1000.0, sitk.sitkFloat64)
        arr = sitk.GetArrayFromImage(fine)
        fixed = Image(arr, fine.GetSpacing(), fine.GetOrigin(), fine.GetDirection())
        moving = Image(arr, fine.GetSpacing(), np.array(fine.GetOrigin()) + [1.3, -0.7, 2.1], fine.GetDirection())
        return fixed, moving, f"lung CT x2 {tuple(size)}"
    a, b = smooth_arrays((128, 128, 128), 1), smooth_arrays((128, 128, 128), 2)
    return Image(a), Image(b), "phantom 128^3"


def make_transforms(fixed, kind: str):
    """(regframe transform, SimpleITK transform) with identical parameters."""
    import SimpleITK as sitk

    from regframe import AffineTransform
    from regframe.transforms.bspline import BSplineTransform

    d = fixed.ndim
    rng = np.random.default_rng(0)
    if kind == "affine":
        t = AffineTransform(d)
        t.center = fixed.physical_center()
        t.parameters = np.r_[(np.eye(d) + 0.01 * rng.standard_normal((d, d))).ravel(), 0.5 * rng.standard_normal(d)]
        s = sitk.AffineTransform(d)
        s.SetFixedParameters(t.fixed_parameters.tolist())
        s.SetParameters(t.parameters.tolist())
        return t, s
    mesh = [8] * d if d == 2 else [6] * d
    t = BSplineTransform.from_domain(fixed, mesh_size=mesh)
    t.parameters = 0.5 * rng.standard_normal(t.n_parameters)
    s = sitk.BSplineTransform(d, 3)
    s.SetFixedParameters(t.fixed_parameters.tolist())
    s.SetParameters(t.parameters.tolist())
    return t, s


def to_sitk(image):
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(np.asarray(image.array, dtype=np.float64))
    out.SetSpacing(image.spacing.tolist())
    out.SetOrigin(image.origin.tolist())
    out.SetDirection(image.direction.ravel().tolist())
    return out


def sitk_seconds_per_iteration(fixed, moving, stx, metric: str, threads: int, iters: tuple[int, int],
                               between=lambda: None) -> float:
    """SimpleITK's cost of one gradient-descent iteration; ``between()`` runs before every registration."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    f, m = to_sitk(fixed), to_sitk(moving)

    def run(n: int) -> float:
        r = sitk.ImageRegistrationMethod()
        if metric == "MeanSquares":
            r.SetMetricAsMeanSquares()
        else:
            r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        r.SetMetricSamplingStrategy(r.NONE)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsGradientDescent(learningRate=1e-12, numberOfIterations=n, convergenceMinimumValue=1e-30,
                                        convergenceWindowSize=10_000, estimateLearningRate=r.Never)
        r.SetInitialTransform(stx, inPlace=False)
        r.SetNumberOfThreads(threads)
        between()
        t0 = time.perf_counter()
        r.Execute(f, m)
        elapsed = time.perf_counter() - t0
        assert r.GetOptimizerIteration() == n, (r.GetOptimizerIteration(), r.GetOptimizerStopConditionDescription())
        return elapsed

    lo, hi = iters
    # best of 3 for each iteration count, then the difference (a minimum of differences would
    # favour a noisy, slow short run and so underestimate the cost per iteration)
    t_lo = min(run(lo) for _ in range(3))
    t_hi = min(run(hi) for _ in range(3))
    return max(t_hi - t_lo, 1e-9) / (hi - lo)


def regframe_seconds(metric, repeats: int) -> float:
    """Best of ``repeats`` calls of ``value_and_gradient()``: the same best-of statistic as SimpleITK's."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        metric.value_and_gradient()
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def cold_compile_seconds(threads: int) -> float:
    """First value_and_gradient (2-D affine MeanSquares + Mattes) in a fresh process, empty cache."""
    code = (
        "import time, numpy as np\n"
        "t0 = time.perf_counter()\n"
        "from regframe import Image, AffineTransform\n"
        "from regframe.metrics import MeanSquares, MattesMutualInformation\n"
        "a = np.random.default_rng(0).random((32, 32)); f = Image(a); m = Image(a[::-1].copy())\n"
        "t = AffineTransform(2)\n"
        "for M in (MeanSquares(), MattesMutualInformation()):\n"
        "    M.initialize(f, m, t).value_and_gradient()\n"
        "print(time.perf_counter() - t0)\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS=str(threads))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2-D cases only")
    parser.add_argument("--cold", action="store_true", help="also measure cold compile time")
    args = parser.parse_args(argv)

    import numba
    import SimpleITK as sitk

    from regframe.metrics import MattesMutualInformation, MeanSquares

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"# regframe metric benchmark: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, threads={args.threads} (numba {numba.get_num_threads()}), "
          f"SimpleITK {sitk.Version_VersionString()}, load average {os.getloadavg()[0]:.1f}")
    rows = []
    dims = (2,) if args.quick else (2, 3)
    header = f"{'case':44s} {'samples':>9s} {'first call s':>12s} {'regframe ns/s':>14s} {'SimpleITK ns/s':>15s} {'ratio':>7s}"
    print(header)
    for ndim in dims:
        fixed, moving, label = load_images(ndim)
        for kind in ("affine", "bspline"):
            t, stx = make_transforms(fixed, kind)
            for name in ("MeanSquares", "Mattes"):
                metric = MeanSquares() if name == "MeanSquares" else MattesMutualInformation(n_bins=50)
                metric.initialize(fixed, moving, t)
                t0 = time.perf_counter()
                metric.value_and_gradient()  # numba compilation or cache loading
                first = time.perf_counter() - t0
                best = [regframe_seconds(metric, 10 if ndim == 2 else 2)]

                def regframe_round() -> None:
                    best[0] = min(best[0], regframe_seconds(metric, 10 if ndim == 2 else 2))

                n = metric.n_samples
                iters = (2, 12) if kind == "affine" else ((1, 7) if ndim == 2 else (1, 2))
                s = sitk_seconds_per_iteration(fixed, moving, stx, "MeanSquares" if name == "MeanSquares" else "Mattes",
                                               args.threads, iters, between=regframe_round)
                steady = best[0]
                row = {"case": f"{ndim}-D {label} {kind} {name}", "samples": n, "first_call_s": first,
                       "regframe_ns": steady / n * 1e9, "sitk_ns": s / n * 1e9}
                row["ratio"] = row["sitk_ns"] / row["regframe_ns"]
                rows.append(row)
                print(f"{row['case']:44s} {n:9d} {first:12.3f} {row['regframe_ns']:14.1f} {row['sitk_ns']:15.1f} "
                      f"{row['ratio']:6.1f}x", flush=True)
    if args.cold:
        print(f"cold compile (empty numba cache, fresh process, MeanSquares + Mattes first calls): "
              f"{cold_compile_seconds(args.threads):.1f} s")
    return rows


if __name__ == "__main__":
    main()
