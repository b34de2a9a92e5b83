"""Peak memory of resample() and of a 3-D B-spline register(), against image size (issue 12).

Each case runs in its own process.  The process first warms up (imports, numba
kernels loaded or compiled on a small image), then resets the kernel's resident-set
high-water mark (``/proc/self/clear_refs``) and runs the case; the peak is
``VmHWM - VmRSS before``, so compilation, imports and the inputs themselves do not
count, and arrays allocated inside numba kernels do (tracemalloc does not see
those).  tracemalloc's peak of numpy allocations is printed beside it, with the
largest allocation sites at the peak when ``--top`` is given.  Ratios are to one
float32 copy of the output (resample) or of the fixed image (register).

Usage::

    python benchmarks/bench_memory.py [--sizes 64 128 256] [--register-sizes 64 128] [--cli-sizes 32 128] [--top 8]

Goals (issue 12): resample <= 4x, 3-D B-spline registration <= 15x one float32
copy.  The issue's CLI run, ``regframe register -t bspline`` on 256x256x128, is
``--cli-sizes 128``: the real lung CT resampled to that grid and moved rigidly
(SimpleITK); it counts reading the inputs and writing the outputs, and the whole
process's high-water mark is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"

CHILD = r"""
import gc, json, sys, tracemalloc
import numpy as np
import regframe as rf
from regframe.datasets import phantom
from regframe.registration import register, resample

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0

case, size, top, DATA = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def make(n):
    fixed = phantom(3, n, seed=1)
    t = rf.AffineTransform(3)
    t.fixed_parameters = fixed.physical_center()
    t.parameters = np.r_[(np.eye(3) + 0.01 * np.array([[1, 2, 0], [-1, 0, 1], [0, 1, -2]])).ravel(), 1.5, -2.0, 1.0]
    return fixed, t

if case == "cli":
    import os, tempfile
    import SimpleITK as sitk
    from regframe import cli

    def lung_pair(n, folder):
        # the lung CT resampled to 2n x 2n x n voxels (SimpleITK), and a rigidly moved copy
        ct = sitk.ReadImage(DATA + "/lung3d/3DCT_lung_baseline_small.mha", sitk.sitkFloat32)
        shape = [2 * n, 2 * n, n]
        ref = sitk.Image(shape, sitk.sitkFloat32)
        ref.SetSpacing([a * b / s for a, b, s in zip(ct.GetSize(), ct.GetSpacing(), shape)])
        ref.SetOrigin(ct.GetOrigin())
        ref.SetDirection(ct.GetDirection())
        fixed = sitk.Resample(ct, ref, sitk.Transform(), sitk.sitkBSpline, -1000.0)
        centre = fixed.TransformContinuousIndexToPhysicalPoint([s / 2 for s in shape])
        moved = sitk.Resample(fixed, fixed, sitk.Euler3DTransform(centre, 0.03, -0.02, 0.05, (2.0, -3.0, 1.5)),
                              sitk.sitkBSpline, -1000.0)
        paths = [os.path.join(folder, name) for name in ("fixed.mha", "moving.mha")]
        sitk.WriteImage(fixed, paths[0])
        sitk.WriteImage(moved, paths[1])
        return paths

    folder = tempfile.mkdtemp()
    command = lambda paths: cli.main(["--quiet", "register", *paths, "-t", "bspline", "-o", os.path.join(folder, "r")])
    os.makedirs(os.path.join(folder, "s"), exist_ok=True)
    small = lung_pair(8, os.path.join(folder, "s"))
    large = lung_pair(size, folder)
    import regframe._parallel as par
    serial_max = par.SERIAL_MAX_ITEMS
    for par.SERIAL_MAX_ITEMS in (0, serial_max):  # warm-up: the parallel and the serial kernels
        command(small)
    run = lambda: command(large)
    n_out = 4 * size ** 3
elif case == "resample":
    img, t = make(size)
    run = lambda: resample(img, t, reference=img)
    import regframe._parallel as par
    serial_max = par.SERIAL_MAX_ITEMS
    for par.SERIAL_MAX_ITEMS in (0, serial_max):  # warm-up: the parallel and the serial kernels
        resample(*make(12), interpolator="linear")
    n_out = img.array.size
else:
    fixed, t = make(size)
    moving = resample(fixed, t.inverse(), reference=fixed)
    run = lambda: register(fixed, moving, "bspline", "mattes")
    f12, t12 = make(16)
    import regframe._parallel as par
    serial_max = par.SERIAL_MAX_ITEMS
    for par.SERIAL_MAX_ITEMS in (0, serial_max):  # warm-up: the parallel and the serial kernels
        register(f12, resample(f12, t12.inverse(), reference=f12), "bspline", "mattes")
    n_out = fixed.array.size
gc.collect()
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
tracemalloc.start(1)
run()
peak_np = tracemalloc.get_traced_memory()[1]
peak_rss = status("VmHWM") - base
shape = [size, 2 * size, 2 * size] if case == "cli" else list(img.shape if case == "resample" else fixed.shape)
out = {"case": case, "size": size, "shape": shape, "total_rss": status("VmHWM"), "base_rss": base,
       "float32_copy": 4 * n_out, "peak_rss": peak_rss, "peak_numpy": peak_np}
print(json.dumps(out))
"""

def run_case(case: str, size: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, case, str(size), "0", str(DATA)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def top_allocations(case: str, size: int, top: int) -> str:
    """Largest numpy allocation sites live at tracemalloc's peak (approximated by a peak-tracking hook)."""
    code = CHILD.split("gc.collect()")[0] + PEAK_SITES
    proc = subprocess.run([sys.executable, "-c", code, case, str(size), str(top), str(DATA)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return proc.stdout


# Snapshot the live numpy allocations each time the traced total reaches a new maximum
# (checked from a profiler hook on every Python call/return: slow, for diagnosis only).
PEAK_SITES = r"""
import tracemalloc
tracemalloc.start(12)
best = [0, None]
def hook(frame, event, arg):
    if event in ("call", "return"):
        cur = tracemalloc.get_traced_memory()[0]
        if cur > best[0] * 1.02 + (1 << 20):
            best[0] = cur
            best[1] = tracemalloc.take_snapshot()
sys.setprofile(hook)
run()
sys.setprofile(None)
snap = best[1]
print(f"numpy peak ~{best[0] / 2**20:.1f} MiB ({best[0] / (4 * n_out):.2f}x float32); largest live sites:")
for st in snap.statistics("traceback")[:top]:
    frames = [f for f in st.traceback if "regframe" in f.filename] or list(st.traceback)
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-3:][::-1])
    print(f"  {st.size / 2**20:8.1f} MiB  {where}")
""".replace("Path(", "__import__('pathlib').Path(")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256],
                    help="phantom sizes along x for resample (y = 0.9x, z = 0.7x)")
    ap.add_argument("--register-sizes", type=int, nargs="*", default=[48, 96],
                    help="phantom sizes along x for the 3-D B-spline register()")
    ap.add_argument("--cli-sizes", type=int, nargs="*", default=[32],
                    help="z sizes n of the lung CT resampled to 2n x 2n x n for 'regframe register -t bspline' "
                         "(reads, registers, writes; the issue's 256x256x128 is 128)")
    ap.add_argument("--top", type=int, default=0, help="also list the N largest numpy allocation sites")
    args = ap.parse_args(argv)
    print(f"{'case':<18}{'shape (z,y,x)':<18}{'float32 MiB':>12}{'peak RSS MiB':>14}{'ratio':>8}"
          f"{'numpy MiB':>11}{'ratio':>8}")
    cases = ([("resample", s) for s in args.sizes] + [("register bspline", s) for s in args.register_sizes]
             + [("CLI -t bspline", s) for s in args.cli_sizes])
    totals = []
    for case, size in cases:
        key = {"resample": "resample", "register bspline": "register"}.get(case, "cli")
        r = run_case(key, size)
        f32 = r["float32_copy"]
        print(f"{case:<18}{'x'.join(map(str, r['shape'])):<18}{f32 / 2**20:12.1f}{r['peak_rss'] / 2**20:14.1f}"
              f"{r['peak_rss'] / f32:8.2f}{r['peak_numpy'] / 2**20:11.1f}{r['peak_numpy'] / f32:8.2f}")
        if key == "cli":
            totals.append(f"{case} {'x'.join(map(str, r['shape']))}: whole process {r['total_rss'] / 2**20:.0f} MiB "
                          f"= {r['total_rss'] / f32:.1f}x, of which {r['base_rss'] / 2**20:.0f} MiB before the run "
                          f"(Python, numpy, SciPy, SimpleITK, loaded kernels)")
        if args.top:
            print(top_allocations(key, size, args.top))
    print("\n".join(totals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
