"""Benchmark: sparse B-spline Jacobian-transpose product ``sum_s J(x_s)^T v_s`` in 3-D.

Measures, for 10^5 and 10^6 random points in the valid region of a 3-D cubic
B-spline with a 10x10x10 mesh (13^3 control points, 6591 parameters):

* first-call time (numba compilation or cache load) separately from the steady
  state (median of repeats),
* peak memory: traced numpy allocations (``tracemalloc``) and the process'
  peak resident set size (``resource``), next to the bounded size of the
  per-chunk partials and the size a dense ``(n, 3, P)`` Jacobian would need,
* the time ratio between the two sizes (O(n * 4^3) predicts ~10).

Run: ``python benchmarks/bench_bspline_jacobian.py [--mesh 10] [--repeats 3]``.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
import tracemalloc

import numba
import numpy as np


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def main(mesh: int = 10, repeats: int = 3, sizes: tuple[int, ...] = (100_000, 1_000_000), seed: int = 0) -> dict:
    from regframe._parallel import SCATTER_CHUNK_SIZE
    from regframe.transforms import BSplineTransform
    from regframe.transforms.displacement import _SCATTER_BLOCK_CHUNKS

    rng = np.random.default_rng(seed)
    t = BSplineTransform(3)
    t.set_transform_domain(np.zeros(3), np.full(3, 200.0), np.full(3, mesh))
    t.parameters = rng.normal(scale=2.0, size=t.n_parameters)
    n_par = t.n_parameters
    print(f"CPU: {_cpu_model()}; numba threads: {numba.get_num_threads()}; threading layer: ", end="")

    # first call: compilation (or loading the on-disk cache) on a tiny input
    # of each code path (serial single-chunk and parallel multi-chunk)
    t0 = time.perf_counter()
    t.jacobian_vjp(rng.uniform(0, 200, (10, 3)), rng.normal(size=(10, 3)))
    t.jacobian_vjp(rng.uniform(0, 200, (SCATTER_CHUNK_SIZE + 10, 3)), rng.normal(size=(SCATTER_CHUNK_SIZE + 10, 3)))
    first = time.perf_counter() - t0
    print(numba.threading_layer())
    print(f"mesh {mesh}^3, {n_par} parameters; first calls (compile or cache load): {first:.2f} s")

    partial_bytes = _SCATTER_BLOCK_CHUNKS * n_par * 8
    results = {}
    for n in sizes:
        pts = rng.uniform(0.0, 200.0, (n, 3))
        vec = rng.normal(size=(n, 3))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = t.jacobian_vjp(pts, vec)
            times.append(time.perf_counter() - t0)
        tracemalloc.start()
        t.jacobian_vjp(pts, vec)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        med = float(np.median(times))
        results[n] = med
        print(
            f"n = {n:>9,d}: median {med * 1e3:8.1f} ms ({med / n * 1e9:6.1f} ns/point, "
            f"{med / (n * 64) * 1e9:5.2f} ns per support node); traced numpy peak "
            f"{traced_peak / 2**20:6.2f} MiB; partials bound {partial_bytes / 2**20:.2f} MiB; "
            f"inputs {2 * pts.nbytes / 2**20:.1f} MiB; dense Jacobian would be "
            f"{n * 3 * n_par * 8 / 2**30:,.0f} GiB; process peak RSS {_peak_rss_mb():.0f} MiB; "
            f"|grad| = {np.linalg.norm(out):.4g}"
        )
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        print(f"time ratio n={b:,d} / n={a:,d}: {results[b] / results[a]:.2f} (points ratio {b / a:.0f})")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(mesh=args.mesh, repeats=args.repeats)
