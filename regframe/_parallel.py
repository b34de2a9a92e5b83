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

import types
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

#: Samples per chunk for point-wise reductions.
CHUNK_SIZE: int = 4096

#: Samples per chunk for reductions into large parameter vectors (B-splines,
#: displacement fields), where each chunk owns a full-length partial vector.
SCATTER_CHUNK_SIZE: int = 65536


#: Below this many items a kernel runs its serial twin: waking a thread team costs
#: far more than the work (microseconds of work against up to milliseconds of
#: wake-up latency on a loaded machine).  Serial and parallel twins share the
#: chunking, so their results are bit-identical.
PARALLEL_THRESHOLD: int = 16384


class ParallelKernel:
    """A numba kernel compiled twice: parallel (``prange`` threads) and serial.

    Calls dispatch on the length of the first argument: the serial twin below
    :data:`PARALLEL_THRESHOLD`, the parallel one above.  Because kernels chunk
    their data by fixed sizes (never by thread count), both give bit-identical
    results.  Both twins are cached on disk under distinct names.
    """

    def __init__(self, py_func: Callable[..., Any]) -> None:
        self.py_func = py_func
        self.parallel = njit(parallel=True, cache=True)(py_func)
        twin = types.FunctionType(
            py_func.__code__, py_func.__globals__, py_func.__name__ + "_serial",
            py_func.__defaults__, py_func.__closure__,
        )
        twin.__qualname__ = py_func.__qualname__ + "_serial"
        twin.__doc__ = py_func.__doc__
        self.serial = njit(cache=True)(twin)
        self.__doc__ = py_func.__doc__
        self.__name__ = py_func.__name__

    def __call__(self, *args: Any) -> Any:
        first = args[0]
        n = first.shape[0] if hasattr(first, "shape") and first.ndim else 0
        return (self.parallel if n >= PARALLEL_THRESHOLD else self.serial)(*args)


def parallel_kernel(py_func: Callable[..., Any]) -> ParallelKernel:
    """Decorator building a :class:`ParallelKernel` (use instead of ``@njit(parallel=True)``)."""
    return ParallelKernel(py_func)


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
