"""Bit-identical metric values and gradients for any numba thread count and across processes.

Every built-in metric, in its fused (linear transform) and general (B-spline
transform) paths, exact and ITK central-difference gradients, is evaluated on
an image with many chunks; the results are compared as exact float bit
patterns for NUMBA_NUM_THREADS = 1, 2 and 4 (separate processes) and for
``numba.set_num_threads`` within one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import numpy as np
from regframe import AffineTransform, Image
from regframe.metrics import MattesMutualInformation, MeanSquares, NormalizedCorrelation, RandomSampler
from regframe.testing.strategies import smooth_arrays
from regframe.transforms.bspline import BSplineTransform

def results(set_threads=None):
    import numba
    import regframe._parallel as par
    if set_threads is not None:
        numba.set_num_threads(set_threads)
    out = {}
    default = par.SERIAL_MAX_ITEMS
    for path in ("auto", "parallel"):  # these sample sets are small: "auto" runs chunks serially
        par.SERIAL_MAX_ITEMS = default if path == "auto" else 0
        out.update({f"{path}/{k}": v for k, v in results_on_one_path().items()})
    par.SERIAL_MAX_ITEMS = default
    return out

def results_on_one_path():
    a = smooth_arrays((34, 36, 38), 1)
    b = smooth_arrays((34, 36, 38), 2)
    fixed = Image(a, spacing=(1.0, 1.1, 1.2))
    moving = Image(b, spacing=(1.0, 1.1, 1.2), origin=(0.3, -0.2, 0.4))
    aff = AffineTransform(3)
    aff.center = fixed.physical_center()
    aff.parameters = [1.02, 0.01, -0.02, 0.0, 0.98, 0.03, 0.01, -0.01, 1.01, 0.4, -0.3, 0.2]
    bsp = BSplineTransform.from_domain(fixed, mesh_size=3)
    bsp.parameters = 0.5 * np.random.default_rng(0).standard_normal(bsp.n_parameters)
    out = {}
    for tname, t in (("affine", aff), ("bspline", bsp)):
        for grad in ("exact", "central_difference"):
            for metric in (MeanSquares(gradient=grad), NormalizedCorrelation(gradient=grad),
                           MattesMutualInformation(gradient=grad)):
                for sampler in (None, RandomSampler(0.3, seed=5)):
                    metric.initialize(fixed, moving, t, sampler=sampler)
                    v, g = metric.value_and_gradient()
                    key = f"{tname}/{grad}/{type(metric).__name__}/{sampler is None}"
                    out[key] = [float(v).hex()] + [float(x).hex() for x in g]
    return out

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "inprocess":
        print(json.dumps([results(1), results(2)]))
    else:
        print(json.dumps(results()))
"""


def run(env_threads: int, *args: str) -> object:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(env_threads))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bit_identical_across_thread_counts_and_processes():
    one = run(1)
    two = run(2)
    four = run(4)
    assert len(one) == 48
    assert one == two == four
    # chunked kernels run serially and in parallel with the same bits
    assert {k[5:]: v for k, v in one.items() if k.startswith("auto/")} == {
        k[9:]: v for k, v in one.items() if k.startswith("parallel/")}
    # numba.set_num_threads inside one process (2 available)
    in_1, in_2 = run(2, "inprocess")
    assert in_1 == in_2 == one
    # sanity: the results are real numbers, not all zeros
    vals = np.array([float.fromhex(v[0]) for v in one.values()])
    assert np.all(np.isfinite(vals)) and np.any(vals != 0)


def test_openmp_workers_sleep_between_kernels_unless_the_user_says_otherwise():
    code = "import os, regframe; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_numba_runs_on_tbb_when_the_tbb_wheel_is_installed():
    """pip puts libtbb.so.12 in <venv>/lib, where numba does not look; regframe loads it (issue 12)."""
    import importlib.metadata

    import pytest

    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the tbb wheel is not installed (not a dependency on this platform)")
    if sys.platform not in ("linux", "darwin"):
        pytest.skip("regframe loads TBB by path on Linux and macOS only")
    code = textwrap.dedent(
        """
        import numba, numpy as np
        import regframe._parallel
        from regframe import Image, TranslationTransform
        from regframe.metrics import MeanSquares
        regframe._parallel.SERIAL_MAX_ITEMS = 0  # (a small problem would run serially)
        a = np.random.default_rng(0).random((40, 50))
        m = MeanSquares()
        m.initialize(Image(a), Image(a), TranslationTransform(2))
        m.value_and_gradient()
        print(numba.threading_layer())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "tbb"


def test_register_compiles_each_fused_kernel_once():
    """Sample arrays of every kind (dense, jittered, cached across stages) share one specialisation.

    A read-only or differently laid-out array makes numba compile a kernel again (seconds each on
    a fresh install); the first ``regframe demo`` once spent 20 s on such duplicates.
    """
    code = textwrap.dedent(
        """
        import numba
        from regframe.metrics import _linear_fused_kernels, _parzen_kernels, _sample_kernels
        from regframe.datasets import phantom
        from regframe.registration import register
        f = phantom(2, 48, seed=1)
        m = phantom(2, 48, contrast="pd", seed=1)
        register(f, m, "affine", "mattes")
        register(f, m, "rigid", "mse")
        f3 = phantom(3, 24, seed=2)
        register(f3, f3, "affine", "mattes")
        mods = (_linear_fused_kernels, _parzen_kernels, _sample_kernels)
        print(max(len(getattr(k, n).signatures) for k in mods for n in dir(k)
                  if isinstance(getattr(k, n), numba.core.registry.CPUDispatcher)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "1"


def test_serial_and_parallel_chunk_kernels_are_bit_identical(monkeypatch):
    """``run_chunks`` runs small problems serially and large ones in parallel, with the same bits."""
    import regframe._parallel as par
    from regframe import Image
    from regframe.interpolators import LinearInterpolator
    from regframe.metrics import MattesMutualInformation, RandomSampler
    from regframe.testing.strategies import smooth_arrays
    from regframe.transforms import AffineTransform

    out = {}
    for limit in (par.SERIAL_MAX_ITEMS, 0):
        monkeypatch.setattr(par, "SERIAL_MAX_ITEMS", limit)
        rng = np.random.default_rng(4)
        got = []
        for shape in ((40, 50), (12, 14, 16)):
            d = len(shape)
            img = Image(smooth_arrays(shape, 2), spacing=np.linspace(0.8, 1.3, d))
            pts = np.random.default_rng(1).uniform(-2, np.array(img.size) + 1, (9000, d))
            got += list(LinearInterpolator().set_image(img).evaluate_with_gradient(pts))
            aff = AffineTransform(d)
            aff.parameters = np.r_[(np.eye(d) + 0.05 * rng.standard_normal((d, d))).ravel(), rng.uniform(-1, 1, d)]
            aff.center = img.physical_center()
            got.append(aff.transform_points(pts))
            metric = MattesMutualInformation().initialize(img, img.with_array(smooth_arrays(shape, 3)), aff,
                                                          sampler=RandomSampler(0.9, seed=1))
            v, g = metric.value_and_gradient()
            got += [np.array([v]), g]
        out[limit] = got
    serial, parallel = out.values()
    assert len(serial) == len(parallel) == 12
    for a, b in zip(serial, parallel):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_registrations_hold_blas_at_one_thread_and_restore_it():
    """OpenBLAS splits long dot products over its threads: sums would depend on the core count."""
    from threadpoolctl import threadpool_limits

    import regframe as rf
    from regframe._parallel import single_threaded_blas
    from regframe.datasets import phantom
    from regframe.metrics import MeanSquares
    from regframe.optimizers import RegularStepGradientDescent
    from regframe.registration import RegistrationMethod, register

    fixed = phantom(2, 48, seed=3)
    moving = rf.Image(np.roll(fixed.array, 2, axis=1), spacing=fixed.spacing, origin=fixed.origin)
    with threadpool_limits(limits=2, user_api="blas"):
        outside = _blas_threads()
        assert outside and max(outside) == 2
        seen: list[list[int]] = []
        register(fixed, moving, "translation", "mse", callbacks=[lambda s: seen.append(_blas_threads())])
        assert seen and all(t == [1] * len(outside) for t in seen)
        n = len(seen)
        method = RegistrationMethod(metric=MeanSquares(), optimizer=RegularStepGradientDescent(n_iterations=3),
                                    callbacks=[lambda s: seen.append(_blas_threads())])
        method.run(fixed, moving, rf.TranslationTransform(2))
        assert len(seen) > n and all(t == [1] * len(outside) for t in seen[n:])
        assert _blas_threads() == outside                       # restored afterwards

        # holders that leave out of order (two threads): the limit stays until the last one leaves
        first, second = single_threaded_blas(), single_threaded_blas()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert _blas_threads() == [1] * len(outside)
        second.__exit__(None, None, None)
        assert _blas_threads() == outside
