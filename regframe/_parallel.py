"""Deterministic parallel reduction rules shared by every numba kernel.

The determinism contract of regframe: results are bit-identical for any number
of numba threads and across processes.  Kernels achieve it by

1. splitting the data into chunks of a *fixed* size (never derived from the
   thread count),
2. letting each ``prange`` iteration (one chunk) accumulate into chunk-local
   variables and write only its own row of a partials array,
3. reducing the partials serially, in chunk order (:func:`reduce_in_order`),
4. never using ``fastmath`` in accumulation kernels, and
5. drawing random numbers only outside kernels, from a seeded
   :class:`numpy.random.Generator`.

Changing :data:`CHUNK_SIZE` changes the rounding of sums (not their thread
independence) and is a numerics-visible change.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
from numba import njit
from numpy.typing import NDArray

# Threading layer.  regframe calls kernels of 0.1-10 ms between stretches of
# Python (optimizer steps, scipy, bookkeeping).  numba picks TBB when it is
# installed (a dependency on x86-64): its workers spin briefly after a kernel and
# then sleep, which suits that rhythm.  Without TBB numba uses OpenMP, whose
# workers spin for a long time after every parallel region (libgomp's default);
# on machines whose cores are shared or CPU-quota'd (virtual machines,
# containers) the spinning slowed the Python in between several-fold and a
# whole registration 1.5-1.8x.  pip puts TBB's runtime where numba does not
# look (<venv>/lib), so it is loaded here by path (load_tbb).  For the OpenMP
# fallback, workers are told to sleep at once (costing a wake-up per kernel).  Only a default: an OMP_WAIT_POLICY
# set by the user wins, and it has no effect if OpenMP was already started
# before regframe was imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: File name of the TBB runtime numba's ``tbbpool`` extension links against.
_LIBTBB = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}.get(sys.platform, "")


def _tbb_candidates() -> Iterator[str]:
    """Paths where the ``tbb`` wheel may have put its runtime: ``<prefix>/lib``, then its record."""
    yield os.path.join(sys.prefix, "lib", _LIBTBB)
    import importlib.metadata  # (only when needed: ~0.1 s to import)

    try:
        files = importlib.metadata.distribution("tbb").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == _LIBTBB:
            yield str(f.locate())


def load_tbb() -> str | None:
    """Make the TBB runtime of the ``tbb`` wheel visible to numba; returns its path, or None.

    pip installs ``libtbb.so.12`` into ``<venv>/lib``, which is not on the
    dynamic loader's search path, so numba's ``tbbpool`` extension fails to
    load it and numba silently falls back to OpenMP.  Loading the library once
    by its full path with ``RTLD_GLOBAL`` registers its soname, after which
    numba's own ``CDLL("libtbb.so.12")`` and the extension's link resolve to
    it.  Nothing is done when the library is already loadable (a conda or
    system install), on platforms other than Linux and macOS, or when no
    ``tbb`` is installed.  Called once when regframe is imported, before any
    kernel starts numba's threading layer.
    """
    if not _LIBTBB:
        return None
    try:
        ctypes.CDLL(_LIBTBB)
        return _LIBTBB
    except OSError:
        pass
    for path in _tbb_candidates():
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return path
    return None


load_tbb()

#: Samples per chunk for point-wise reductions.
CHUNK_SIZE: int = 4096

#: Samples per chunk for reductions into large parameter vectors (B-splines,
#: displacement fields), where each chunk owns a full-length partial vector.
SCATTER_CHUNK_SIZE: int = 65536


#: numba's parallel options for regframe's kernels: only explicit ``prange`` loops run in
#: parallel.  The other conversions (numpy calls, array expressions, reductions and setitems
#: into parfors, and parfor fusion) have nothing to act on in kernels written as chunked
#: ``prange`` loops (they only turn the chunk-local ``np.empty``/``np.zeros`` into nested
#: loops), but their passes over the kernels' large inlined bodies took 15-30 % of the
#: first-run compile time.
PARALLEL_OPTIONS: dict[str, bool] = {
    "prange": True,
    "fusion": False,
    "numpy": False,
    "comprehension": False,
    "reduction": False,
    "inplace_binop": False,
    "setitem": False,
    "stencil": False,
}


def parallel_kernel(py_func: Callable[..., Any]) -> Any:
    """Decorator for parallel kernels: ``njit(parallel=PARALLEL_OPTIONS, cache=True)``, never fastmath.

    One place to keep the compilation policy of every ``prange`` kernel.  (A
    parallel call costs a few microseconds on an idle machine, so kernels are
    compiled once, in parallel form only: a serial twin would double the
    first-call compile time for no measurable gain.)
    """
    return njit(parallel=PARALLEL_OPTIONS, cache=True)(py_func)


#: Work items (samples, points) up to which :func:`run_chunks` runs a kernel's chunks serially.
SERIAL_MAX_ITEMS: int = 100_000


def run_chunks(serial: Callable[..., Any], parallel: Callable[..., Any], n_items: int, n_chunks: int,
               *args: Any) -> None:
    """Run chunks ``0..n_chunks-1`` of a chunked kernel, serially or spread over threads.

    ``serial(c_lo, c_hi, *args)`` computes chunks ``c_lo..c_hi-1`` in one
    thread (``njit``); ``parallel(c_lo, c_hi, *args)`` is a ``prange`` over
    the chunks whose body calls ``serial`` for one chunk, so both compute
    every chunk with the same code and write the same rows of the outputs in
    ``args``: the results are bit-identical.  Problems of up to
    :data:`SERIAL_MAX_ITEMS` items (2-D images, coarse levels, scale
    estimation) take the serial kernel: a thread wake-up per call buys them
    nothing, and a first run then never compiles the parallel kernel (numba's
    parallel lowering re-optimises the linked chunk code: seconds per kernel).
    The choice depends on the problem only, never on the thread count.
    """
    kernel = parallel if n_items > SERIAL_MAX_ITEMS else serial
    kernel(0, n_chunks, *args)


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def ordered_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(x) for x in items]``, spread over ``numba.get_num_threads()`` Python threads.

    For independent work items that release the GIL (``scipy.ndimage``
    filters on slabs of one array): ``fn`` must not share state between items;
    the results come back in input order and each is computed by the same code
    whatever thread runs it, so they never depend on the thread count.  One
    thread (``numba.set_num_threads(1)``, a ``register_many`` task) runs the
    plain loop.  The threads are kept for the next call.
    """
    items = list(items)
    workers = min(numba.get_num_threads(), len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="regframe")
    return list(pool.map(fn, items))


def scatter_chunk_size(n_parameters: int) -> int:
    """Samples per chunk for a reduction into ``n_parameters`` partial sums per chunk.

    About 16 samples per parameter, clamped to ``[CHUNK_SIZE,
    SCATTER_CHUNK_SIZE]``: small parameter vectors (a coarse B-spline grid)
    get small chunks, so even a 2-D image is split across threads, while large
    ones keep the per-chunk rows affordable.  Depends only on the problem,
    never on the thread count.
    """
    return int(min(SCATTER_CHUNK_SIZE, max(CHUNK_SIZE, 16 * int(n_parameters))))


def n_chunks(n: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Number of fixed-size chunks covering ``n`` items."""
    return (n + chunk_size - 1) // chunk_size


@njit(cache=True)
def _reduce_rows(partials: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.zeros(partials.shape[1])
    for c in range(partials.shape[0]):
        for k in range(partials.shape[1]):
            out[k] += partials[c, k]
    return out


def reduce_in_order(partials: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sum per-chunk partials serially in chunk order.

    Parameters
    ----------
    partials : (n_chunks, ...) ndarray of float64
        One row per chunk.

    Returns
    -------
    ndarray
        The sum over the first axis, with the trailing shape of ``partials``.
    """
    partials = np.ascontiguousarray(partials, dtype=np.float64)
    tail = partials.shape[1:]
    flat = partials.reshape(partials.shape[0], -1)
    if flat.shape[0] == 0:
        return np.zeros(tail)
    return _reduce_rows(flat).reshape(tail)


# BLAS threads.  OpenBLAS (numpy's and SciPy's) splits a dot product of more than
# some thousands of elements over its own threads: the sum's rounding then depends
# on the machine's core count, and on 2 cores its threads fought numba's for the
# CPU - a 27 000-element norm took 0.7 ms inside a 2-D B-spline registration
# against 5 us alone, and SciPy's L-BFGS-B (BLAS inside) 1.6 s of a 7.6 s run.
# Registrations therefore hold BLAS at one thread (threadpoolctl); nested and
# concurrent holders share one limit, set by the first and lifted by the last.
_blas_lock = threading.Lock()
_blas_depth = 0
_blas_limiter: Any = None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold numpy's and SciPy's BLAS at one thread for the duration (thread-safe, re-entrant)."""
    global _blas_depth, _blas_limiter
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_depth == 0:
            _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
