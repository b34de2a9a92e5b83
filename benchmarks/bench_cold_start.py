"""First register() in a fresh environment: compile time with an empty numba cache (issue 12).

Runs ``register(fixed, moving, KIND, "mattes")`` on the 2-D elastix example (a phantom pair
when ``../shared/data`` is absent) in a fresh process whose ``NUMBA_CACHE_DIR`` is a new
empty folder, and prints wall and CPU seconds (CPU time is the steadier figure on a shared
machine) and, with ``--kernels``, every dispatcher compiled, with its inclusive compile time.

Usage::

    python benchmarks/bench_cold_start.py [--kind rigid|bspline] [--kernels]

Goal: <= 8 s wall for the first 2-D rigid/Mattes call on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "elastix_example"

CHILD = r"""
import collections, resource, sys, time
t0 = time.time()
from numba.core import event
times, counts = collections.defaultdict(float), collections.Counter()
class Listener(event.Listener):
    def __init__(self):
        self.start = {}
    def on_start(self, ev):
        self.start[id(ev.data["dispatcher"])] = time.perf_counter()
    def on_end(self, ev):
        d = ev.data["dispatcher"]
        key = f"{d.py_func.__module__}.{d.py_func.__name__}"
        times[key] += time.perf_counter() - self.start.pop(id(d), time.perf_counter())
        counts[key] += 1
event.register("numba:compile", Listener())
import regframe as rf
from regframe.datasets import brain_pair
from regframe.registration import register
from pathlib import Path
t1 = time.time()
d, kind, show = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
if (d / "fixed.mhd").exists():
    f, m = rf.read_image(d / "fixed.mhd"), rf.read_image(d / "moving.mhd")
else:
    f, m = brain_pair(2, 256, multimodal=True)
res = register(f, m, kind, "mattes")
t2 = time.time()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(f"{kind}: import {t1 - t0:.1f} s, first register() {t2 - t1:.1f} s, total wall {t2 - t0:.1f} s, "
      f"CPU {ru.ru_utime + ru.ru_stime:.1f} s; {sum(counts.values())} compilations; "
      f"final value {res.final_value:.6f}")
if show:
    for k, v in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {v:7.2f} s  x{counts[k]}  {k}  (inclusive of nested compiles)")
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="rigid", choices=["translation", "rigid", "similarity", "affine", "bspline"])
    ap.add_argument("--kernels", action="store_true", help="list the compiled dispatchers")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="regframe-cold-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(DATA), args.kind, "1" if args.kernels else "0"],
                              env=env, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
