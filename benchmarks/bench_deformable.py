"""Benchmark of the B-spline registration stage (issue 6).

1. **Accuracy and time vs elastix** (``benchmarks/baselines/elastix_baselines.json``):
   rat lung (mean squares; score = MSE over all fixed voxels of the cubic-resampled
   moving image, as elastix's result image) and the multi-modal brain (Mattes; score =
   Dice of the fixed mask and the nearest-neighbour-warped moving mask), with the
   minimum Jacobian determinant on the fixed grid.  Wall and CPU time, median of
   ``--repeats`` runs after one untimed warm-up (numba compilation).
2. **3-D 256^3 B-spline, 10 mm grid** (1 mm voxels, a CT resampled from
   ``lung3d``, moving = fixed warped by a known smooth B-spline): per-iteration time and
   peak memory (RSS of a fresh subprocess) of regframe vs SimpleITK's
   ``ImageRegistrationMethod`` with a ``BSplineTransform`` of the same grid, the same
   metric (mean squares), random sampling of the same fraction and gradient descent.

Run (from the repository root)::

    python benchmarks/bench_deformable.py --case all [--repeats 3] [--threads N]

``--threads`` sets ``NUMBA_NUM_THREADS`` for the regframe runs (results are
bit-identical for any thread count; on a loaded machine one thread can be faster).
Output: a table on stdout and ``--json`` (optional) with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
BASELINES = REPO / "benchmarks" / "baselines" / "elastix_baselines.json"


def _timed(fn, repeats: int):
    fn()  # warm-up: numba compilation and caches
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return out, walls, cpus


def bench_rat_lung(repeats: int) -> dict:
    import regframe as rf
    from regframe.quality import jacobian_determinant
    from regframe.registration import resample
    from regframe.registration.deformable import register_bspline

    fixed = rf.read_image(DATA / "rat_lung" / "RatLungSlice1.mha")
    moving = rf.read_image(DATA / "rat_lung" / "RatLungSlice2.mha")
    res, walls, cpus = _timed(lambda: register_bspline(fixed, moving, "mse", linear_stage=None), repeats)
    f = fixed.array.astype(np.float64)
    out = {"iterations": res.iterations_per_level, "wall_s": walls, "cpu_s": cpus}
    for interp in ("bspline", "linear"):
        warped = resample(moving, res.transform, reference=fixed, interpolator=interp)
        out[f"mse_after_{interp}"] = float(np.mean((f - warped.array) ** 2))
    out["mse_before"] = float(np.mean((f - moving.array) ** 2))
    det = jacobian_determinant(res.transform, fixed).array
    out["det_min"], out["det_max"] = float(det.min()), float(det.max())
    return out


def bench_brain(repeats: int) -> dict:
    import regframe as rf
    from regframe.quality import jacobian_determinant
    from regframe.registration import resample
    from regframe.registration.deformable import register_bspline

    d = DATA / "elastix_example"
    fixed, moving = rf.read_image(d / "fixed.mhd"), rf.read_image(d / "moving.mhd")
    fmask, mmask = rf.read_image(d / "mask_fixed.mhd"), rf.read_image(d / "mask_moving.mhd")
    res, walls, cpus = _timed(lambda: register_bspline(fixed, moving, "mattes"), repeats)
    f = fmask.array > 0.5

    def dice(transform) -> float:
        w = resample(mmask, transform, reference=fmask, interpolator="nearest").array > 0.5
        return float(2 * np.sum(f & w) / (f.sum() + w.sum()))

    det = jacobian_determinant(res.transform, fixed).array
    return {
        "iterations": res.iterations_per_level,
        "wall_s": walls,
        "cpu_s": cpus,
        "dice_before": dice(rf.TranslationTransform(2)),
        "dice_after_linear": dice(res.transform[0]),
        "dice_after": dice(res.transform),
        "det_min": float(det.min()),
        "det_max": float(det.max()),
    }


# ---------------------------------------------------------------------- 3-D
def _volume(size: int):
    """A size^3, 1 mm CT volume (lung3d resampled, centred) and a known smooth warp of it."""
    import regframe as rf
    from regframe.registration import resample

    ct = rf.read_image(DATA / "lung3d" / "3DCT_lung_baseline_small.mha")
    centre = ct.physical_center()
    origin = centre - (size - 1) / 2.0
    ref = rf.Image(np.zeros((size,) * 3, dtype=np.float32), origin=origin, spacing=(1.0, 1.0, 1.0))
    fixed = resample(ct, rf.TranslationTransform(3), reference=ref, interpolator="linear",
                     default_value=-1000.0, dtype=np.float32)
    warp = rf.BSplineTransform.from_domain(fixed, control_point_spacing=40.0)
    warp.parameters = np.random.default_rng(0).normal(0.0, 3.0, warp.n_parameters)
    moving = resample(fixed, warp, reference=fixed, interpolator="linear", default_value=-1000.0,
                      dtype=np.float32)
    return fixed, moving


def _write_volumes(size: int, folder: Path) -> tuple[Path, Path]:
    """Write the 3-D pair as float32 .mha files (workers read them: small loading peak)."""
    import regframe as rf

    fixed, moving = _volume(size)
    paths = folder / f"fixed{size}.mha", folder / f"moving{size}.mha"
    rf.write_image(fixed, paths[0])
    rf.write_image(moving, paths[1])
    return paths


def _rss_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM``; ``ru_maxrss`` survives exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_regframe(folder: Path, size: int, fraction: float, iterations: int) -> dict:
    import regframe as rf
    from regframe.metrics import MeanSquares, RandomSampler
    from regframe.metrics.regularized import RegularizedMetric
    from regframe.optimizers import GradientDescent

    fixed = rf.read_image(folder / f"fixed{size}.mha")
    moving = rf.read_image(folder / f"moving{size}.mha")
    rss_images = _rss_mib()
    t = rf.BSplineTransform.from_domain(fixed, control_point_spacing=10.0)
    cost = RegularizedMetric(MeanSquares(), weight=0.0)
    cost.initialize(fixed, moving, t, sampler=RandomSampler(fraction, seed=0))
    cost.value_and_gradient()  # compile
    times = []
    for _ in range(3):
        w0 = time.perf_counter()
        cost.value_and_gradient()
        times.append(time.perf_counter() - w0)
    opt = GradientDescent(n_iterations=iterations, learning_rate=1.0, estimate_learning_rate=None)
    stamps: list[float] = []
    w0 = time.perf_counter()
    opt.optimize(cost, callback=lambda s: stamps.append(time.perf_counter()) and False)
    total = time.perf_counter() - w0
    return {
        "tool": "regframe",
        "n_parameters": t.n_parameters,
        "mesh_size": t.mesh_size,
        "n_samples": cost.n_samples,
        "evaluation_s": float(np.median(times)),
        "iteration_s": float(np.median(np.diff(stamps))) if len(stamps) > 1 else total,
        "iterations": len(stamps),
        "rss_after_images_mib": rss_images,
        "peak_rss_mib": _rss_mib(),
    }


def worker_sitk(folder: Path, size: int, fraction: float, iterations: int) -> dict:
    import SimpleITK as sitk

    fixed = sitk.ReadImage(str(folder / f"fixed{size}.mha"), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(folder / f"moving{size}.mha"), sitk.sitkFloat32)
    rss_images = _rss_mib()
    phys = [(n - 1) * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh = [max(1, int(round(p / 10.0))) for p in phys]
    tx = sitk.BSplineTransformInitializer(fixed, mesh, 3)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(fraction, 0)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=iterations,
                                      estimateLearningRate=reg.Never)
    reg.SetShrinkFactorsPerLevel([1])
    reg.SetSmoothingSigmasPerLevel([0])
    reg.SetInitialTransform(tx, inPlace=True)
    stamps: list[float] = []
    reg.AddCommand(sitk.sitkIterationEvent, lambda: stamps.append(time.perf_counter()))
    w0 = time.perf_counter()
    reg.Execute(fixed, moving)
    total = time.perf_counter() - w0
    return {
        "tool": "SimpleITK",
        "n_parameters": tx.GetNumberOfParameters(),
        "mesh_size": mesh,
        "iteration_s": float(np.median(np.diff(stamps))) if len(stamps) > 1 else total,
        "iterations": len(stamps),
        "total_s": total,
        "threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "rss_after_images_mib": rss_images,
        "peak_rss_mib": _rss_mib(),
    }


def bench_3d(size: int, fraction: float, iterations: int, sitk_iterations: int, env: dict) -> dict:
    import tempfile

    out = {"size": size, "sampling_fraction": fraction,
           "image_mib_float32": size**3 * 4 / 2**20}
    folder = Path(tempfile.mkdtemp(prefix="bench_deformable_"))
    _write_volumes(size, folder)
    for tool, its in (("regframe", iterations), ("sitk", sitk_iterations)):
        cmd = [sys.executable, __file__, "--worker", tool, "--size", str(size), "--fraction", str(fraction),
               "--iterations", str(its), "--folder", str(folder)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0:
            out[tool] = {"error": proc.stderr[-2000:]}
        else:
            out[tool] = json.loads(proc.stdout.strip().splitlines()[-1])
    for f in folder.glob("*"):
        f.unlink()
    folder.rmdir()
    if "iteration_s" in out.get("regframe", {}) and "iteration_s" in out.get("sitk", {}):
        out["speedup_per_iteration"] = out["sitk"]["iteration_s"] / out["regframe"]["iteration_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("lung", "brain", "3d", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="NUMBA_NUM_THREADS for regframe")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--fraction", type=float, default=0.01, help="3-D sampling fraction (both tools)")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--sitk-iterations", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", choices=("regframe", "sitk"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "regframe":
        print(json.dumps(worker_regframe(args.folder, args.size, args.fraction, args.iterations)))
        return
    if args.worker == "sitk":
        print(json.dumps(worker_sitk(args.folder, args.size, args.fraction, args.iterations)))
        return

    env = dict(os.environ)
    if args.threads is not None:
        env["NUMBA_NUM_THREADS"] = str(args.threads)
        if os.environ.get("NUMBA_NUM_THREADS") != str(args.threads):  # re-exec so numba sees it
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
    base = json.loads(BASELINES.read_text())["cases"] if BASELINES.exists() else {}
    results: dict = {"load_average_before": os.getloadavg(),
                     "numba_threads": os.environ.get("NUMBA_NUM_THREADS", "default")}
    if args.case in ("lung", "all"):
        r = bench_rat_lung(args.repeats)
        results["rat_lung"] = r
        b = base.get("rat_lung", {})
        print(f"rat lung  regframe MSE {r['mse_before']:.2f} -> {r['mse_after_bspline']:.2f} (cubic) / "
              f"{r['mse_after_linear']:.2f} (linear), wall {np.median(r['wall_s']):.2f} s, "
              f"CPU {np.median(r['cpu_s']):.2f} s, det [{r['det_min']:.3f}, {r['det_max']:.3f}]")
        if b:
            print(f"          elastix  MSE {b['mse_before']:.2f} -> {b['mse_after']:.2f} (cubic) / "
                  f"{b['mse_after_linear_resampling']:.2f} (linear), wall {b['time_s_median']:.2f} s, "
                  f"CPU {np.median(b['cpu_s_runs']):.2f} s, det min {b['jacobian_determinant']['min']:.3f}")
    if args.case in ("brain", "all"):
        r = bench_brain(args.repeats)
        results["brain_multimodal"] = r
        b = base.get("brain_multimodal", {})
        print(f"brain     regframe Dice {r['dice_before']:.4f} -> {r['dice_after_linear']:.4f} (affine) -> "
              f"{r['dice_after']:.4f}, wall {np.median(r['wall_s']):.2f} s, CPU {np.median(r['cpu_s']):.2f} s, "
              f"det [{r['det_min']:.3f}, {r['det_max']:.3f}]")
        if b:
            print(f"          elastix  Dice {b['dice_before']:.4f} -> {b['dice_after']:.4f}, wall "
                  f"{b['time_s_median']:.2f} s, CPU {np.median(b['cpu_s_runs']):.2f} s, det min "
                  f"{b['jacobian_determinant']['min']:.3f}")
    if args.case in ("3d", "all"):
        r = bench_3d(args.size, args.fraction, args.iterations, args.sitk_iterations, env)
        results["bspline_3d"] = r
        for tool in ("regframe", "sitk"):
            t = r[tool]
            if "error" in t:
                print(f"3-D {tool}: failed: {t['error']}")
                continue
            print(f"3-D {args.size}^3 {t['tool']:>9}: {t['n_parameters']} parameters, "
                  f"{t['iteration_s']:.3f} s/iteration, peak RSS {t['peak_rss_mib']:.0f} MiB "
                  f"(after loading images {t['rss_after_images_mib']:.0f} MiB; one float32 image "
                  f"{r['image_mib_float32']:.0f} MiB)")
        if "speedup_per_iteration" in r:
            print(f"3-D per-iteration speed-up regframe vs SimpleITK: {r['speedup_per_iteration']:.1f}x")
    results["load_average_after"] = os.getloadavg()
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
