"""Serial EM sections (``../shared/data/lung_sem``): rigid alignment of the 11 consecutive pairs.

Peers in the same process on the same pairs, all warmed up on the first pair:

- pystackreg: ``StackReg(StackReg.RIGID_BODY).register_transform(fixed, moving)``;
- regframe ``register(fixed, moving, transform="rigid")`` with its defaults
  (``initialization="auto"``: centres, phase correlation, Fourier-Mellin and a rotation grid,
  every candidate refined with the same budget and ranked; the never-worse guard).

Per pair: the normalized correlation of the fixed image and the aligned moving image over
their overlap (pixels where the moving image is defined), the recovered rotation (degrees, a
transform mapping fixed points to moving points), the wall time, and the RMS distance (pixels,
over the image) of regframe's mapping from pystackreg's.  Goal (issue 11): NCC >= pystackreg's,
rotation below 5 degrees, in less time.

Run: ``/work/benchenv/bin/python benchmarks/bench_sections.py [--threads 2] [--pairs 11]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _ncc_overlap(fixed: np.ndarray, aligned: np.ndarray, overlap: np.ndarray) -> float:
    a = fixed[overlap] - fixed[overlap].mean()
    b = aligned[overlap] - aligned[overlap].mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def _pystackreg(fixed: np.ndarray, moving: np.ndarray):
    from pystackreg import StackReg

    sr = StackReg(StackReg.RIGID_BODY)
    t0 = time.perf_counter()
    aligned = sr.register_transform(fixed, moving)
    tmat = sr.get_matrix()
    elapsed = time.perf_counter() - t0
    overlap = sr.transform(np.ones_like(moving), tmat) > 0.999
    angle = np.degrees(np.arctan2(tmat[1, 0], tmat[0, 0]))  # tmat maps fixed (x, y) to moving (x, y)
    return _ncc_overlap(fixed, aligned, overlap), angle, elapsed, tmat


def _distance(transform, tmat: np.ndarray, image) -> float:
    """RMS distance (pixels) between a transform's mapping and pystackreg's over the image."""
    pts = image.voxel_points()[::97]  # PNG: spacing 1, origin 0, so physical (x, y) = pixel (column, row)
    theirs = pts @ tmat[:2, :2].T + tmat[:2, 2]
    return float(np.sqrt(np.mean(np.sum((transform.transform_points(pts) - theirs) ** 2, axis=1))))


def _aligned(fixed, moving, transform):
    from regframe.registration.resample import resample

    aligned = resample(moving, transform, reference=fixed).array
    ones = moving.with_array(np.ones(moving.shape))
    overlap = resample(ones, transform, reference=fixed, interpolator="nearest").array > 0.5
    return _ncc_overlap(np.asarray(fixed.array, float), aligned, overlap)


def _regframe(fixed, moving):
    from regframe.registration import register

    t0 = time.perf_counter()
    res = register(fixed, moving, transform="rigid")
    elapsed = time.perf_counter() - t0
    return _aligned(fixed, moving, res.transform), np.degrees(res.transform.parameters[0]), elapsed, res.transform


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=11)
    args = parser.parse_args(argv)
    files = sorted((args.data_dir / "lung_sem").glob("*.png"))
    if len(files) < 2:
        print(f"skipped: no sections in {args.data_dir / 'lung_sem'}")
        return 0
    import numba

    import regframe as rf

    numba.set_num_threads(args.threads)
    images = [rf.read_image(f, dtype=np.float64) for f in files]
    arrays = [np.asarray(im.array) for im in images]
    n = min(args.pairs, len(files) - 1)
    # warm-up (numba compilation / cache loading, FFT plans) on the first pair
    _pystackreg(arrays[0], arrays[1])
    _regframe(images[0], images[1])

    print(f"{'pair':>5} | {'pystackreg NCC  rot     s':>26} | {'register() NCC  rot     s':>26} | "
          f"px from pystackreg | NCC >= | faster")
    rows = []
    for i in range(n):
        p = _pystackreg(arrays[i], arrays[i + 1])
        r = _regframe(images[i], images[i + 1])
        rows.append((p, r))
        print(f"{i + 1:02d}-{i + 2:02d} | {p[0]:10.4f} {p[1]:6.2f} {p[2]:7.3f} | {r[0]:10.4f} {r[1]:6.2f} {r[2]:7.3f} | "
              f"{_distance(r[3], p[3], images[i]):18.2f} | {'yes' if r[0] >= p[0] else 'NO':>6} | "
              f"{'yes' if r[2] < p[2] else 'NO':>6}", flush=True)
    better = sum(row[1][0] >= row[0][0] for row in rows)
    faster = sum(row[1][2] < row[0][2] for row in rows)
    small = sum(abs(row[1][1]) < 5.0 for row in rows)
    print(f"register() NCC >= pystackreg's on {better}/{n} pairs, rotation < 5 degrees on {small}/{n}, "
          f"faster on {faster}/{n}")
    for k, name in ((0, "pystackreg"), (1, "register()")):
        print(f"median time {name:>10}: {statistics.median(row[k][2] for row in rows):.3f} s")
    print(f"median time ratio register() / pystackreg: "
          f"{statistics.median(row[1][2] / row[0][2] for row in rows):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
