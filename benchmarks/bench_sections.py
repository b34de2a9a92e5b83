"""Serial EM sections (``../shared/data/lung_sem``): rigid alignment of the 11 consecutive pairs.

Peers in the same process on the same pairs, all warmed up on the first pair:

- pystackreg: ``StackReg(StackReg.RIGID_BODY).register_transform(fixed, moving)``;
- regframe ``register(fixed, moving, transform="rigid")`` as it is (moments centre and the
  coarse rotation search);
- ``candidates``: a prototype of the global initialization that ``register()`` will wire in:
  the moments-centred start plus ``global_candidates(coarsest fixed, coarsest moving, "rigid")``,
  each refined briefly (regular-step gradient descent, 40 iterations) at the coarsest level on
  the same samples, the one with the lowest metric value wins, and ``register()`` runs the full
  pyramid from it (``transform=<winner>``).

Per pair: the normalized correlation of the fixed image and the aligned moving image over
their overlap (pixels where the moving image is defined), the recovered rotation (degrees, a
transform mapping fixed points to moving points), the wall time, and the RMS distance (pixels,
over the image) of three mappings from pystackreg's: the best unrefined candidate of
``global_candidates`` (first after the start), the prototype's final result, and ``register()``'s.  The CPU time of
candidate generation alone (``global_candidates`` on the coarsest level) is printed separately.

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


def _candidates(fixed, moving):
    """Prototype: global candidates -> equal brief refinement at the coarsest level -> rank -> register()."""
    from regframe.errors import NoOverlapError
    from regframe.metrics import FullSampler
    from regframe.optimizers import RegularStepGradientDescent
    from regframe.registration import register
    from regframe.registration.api import _default_schedule, make_metric, make_transform
    from regframe.registration.global_init import global_candidates
    from regframe.registration.initializers import centered_initializer
    from regframe.registration.method import RegistrationMethod
    from regframe.registration.pyramid import ImagePyramid, LevelSchedule

    t0 = time.perf_counter()
    schedule = _default_schedule(fixed)
    fl, ml = ImagePyramid(fixed, schedule).level(0), ImagePyramid(moving, schedule).level(0)
    start = centered_initializer(fixed, moving, make_transform("rigid", 2), mode="moments")
    tc = time.process_time()  # CPU time: the machine may be shared
    cands = [start] + global_candidates(fl, ml, "rigid", start=start)
    t_gen = time.process_time() - tc
    best_value, best = np.inf, start
    for cand in cands:
        method = RegistrationMethod(
            metric=make_metric("mattes"),
            optimizer=RegularStepGradientDescent(n_iterations=40, scales="physical_shift",
                                                 minimum_step_length=1e-3, relaxation_factor=0.5),
            sampler=FullSampler(),
            schedule=LevelSchedule.single(),
        )
        try:
            res = method.run(fl, ml, cand)
        except NoOverlapError:
            continue
        if res.final_value < best_value:
            best_value, best = res.final_value, res.optimized_transform
    res = register(fixed, moving, transform=best)
    elapsed = time.perf_counter() - t0
    return (_aligned(fixed, moving, res.transform), np.degrees(res.transform.parameters[0]), elapsed, t_gen,
            len(cands), res.transform, cands[1] if len(cands) > 1 else start)


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
    _candidates(images[0], images[1])

    print(f"{'pair':>5} | {'pystackreg NCC  rot   s':>24} | {'register() NCC  rot   s':>24} | "
          f"{'candidates NCC  rot   s (gen CPU ms, n)':>40} | px from pystackreg: best candidate, final, register()")
    rows = []
    for i in range(n):
        p = _pystackreg(arrays[i], arrays[i + 1])
        r = _regframe(images[i], images[i + 1])
        c = _candidates(images[i], images[i + 1])
        rows.append((p, r, c))
        print(f"{i:02d}-{i + 1:02d} | {p[0]:10.4f} {p[1]:6.2f} {p[2]:5.2f} | {r[0]:10.4f} {r[1]:6.2f} {r[2]:5.2f} | "
              f"{c[0]:10.4f} {c[1]:6.2f} {c[2]:5.2f} ({1e3 * c[3]:5.1f} ms, {c[4]}) | "
              f"{_distance(c[6], p[3], images[i]):6.2f} {_distance(c[5], p[3], images[i]):6.2f} "
              f"{_distance(r[3], p[3], images[i]):8.1f}")
    ok = lambda k: sum(row[k][0] >= row[0][0] - 0.01 for row in rows)  # noqa: E731
    print(f"pairs within 0.01 NCC of pystackreg (or better): register() {ok(1)}/{n}, candidates {ok(2)}/{n}")
    for k, name in ((0, "pystackreg"), (1, "register()"), (2, "candidates")):
        print(f"median time {name:>10}: {statistics.median(row[k][2] for row in rows):.2f} s")
    print(f"median time ratio candidates / pystackreg: "
          f"{statistics.median(row[2][2] / row[0][2] for row in rows):.2f}")
    gen = [1e3 * row[2][3] for row in rows]
    print(f"candidate generation (global_candidates on the coarsest level, CPU): median "
          f"{statistics.median(gen):.1f} ms, max {max(gen):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
