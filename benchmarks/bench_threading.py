"""numba threading layers side by side: TBB (loaded by regframe) vs OpenMP (passive wait).

Each round runs one fresh process per layer (``NUMBA_THREADING_LAYER``), alternating, so both
see the same machine load: back-to-back ``value_and_gradient()`` of MeanSquares and Mattes on
the 256x256 elastix example (affine transform; best of 7 x 20 calls, ns per sample) and a
2-D rigid/Mattes ``register()`` (best of 3, after one warm-up).  Kernels must be compiled
already (run once first).  Prints each run and the per-layer best.

Usage::

    python benchmarks/bench_threading.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "elastix_example"

CHILD = r"""
import json, sys, time
import numba, numpy as np, regframe as rf
from regframe.datasets import brain_pair
from regframe.metrics import MattesMutualInformation, MeanSquares
from regframe.registration import register
from pathlib import Path
d = Path(sys.argv[1])
if (d / "fixed.mhd").exists():
    f, m = rf.read_image(d / "fixed.mhd"), rf.read_image(d / "moving.mhd")
else:
    f, m = brain_pair(2, 256, multimodal=True)
t = rf.AffineTransform(2)
t.fixed_parameters = f.physical_center()
out = {}
for M in (MeanSquares, MattesMutualInformation):
    met = M()
    met.initialize(f, m, t)
    met.value_and_gradient()
    best = 1e9
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(20):
            met.value_and_gradient()
        best = min(best, (time.perf_counter() - t0) / 20)
    out[M.__name__ + " ns/sample"] = best / f.array.size * 1e9
register(f, m, "rigid", "mattes")
best = 1e9
for _ in range(3):
    t0 = time.perf_counter()
    register(f, m, "rigid", "mattes")
    best = min(best, time.perf_counter() - t0)
out["register rigid/mattes s"] = best
out["layer"] = numba.threading_layer()
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for layer in ("tbb", "omp"):
            env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
            proc = subprocess.run([sys.executable, "-c", CHILD, str(DATA)], env=env, capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                print(f"{layer}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            got = r.pop("layer")
            print(f"{layer:<4} (running {got}): " + ", ".join(f"{k} {v:.3g}" for k, v in r.items()))
            b = best.setdefault(layer, {})
            for k, v in r.items():
                b[k] = min(b.get(k, v), v)
    print("best per layer:")
    for layer, b in best.items():
        print(f"  {layer:<4} " + ", ".join(f"{k} {v:.3g}" for k, v in b.items()))
    if {"tbb", "omp"} <= best.keys():
        print("ratio tbb/omp: " + ", ".join(f"{k} {best['tbb'][k] / best['omp'][k]:.2f}" for k in best["tbb"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
