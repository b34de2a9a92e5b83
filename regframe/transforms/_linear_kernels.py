"""Private numba kernels for linear (matrix + offset) transforms.

All kernels are n-D, parallel over fixed-size chunks and deterministic: point
maps have no reductions; the Jacobian-transpose product writes per-chunk
partials that the caller reduces in chunk order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel


@njit(cache=True)
def affine_points_chunks(c_lo, c_hi, points, matrix, offset, chunk_size, out):
    """``out[s] = matrix @ points[s] + offset`` for the ``(n, d)`` points of chunks ``c_lo..c_hi-1``.

    Serially; :func:`affine_points` runs the chunks in parallel (see
    :func:`regframe._parallel.run_chunks`).
    """
    n, d = points.shape
    for s in range(c_lo * chunk_size, min(c_hi * chunk_size, n)):
        for i in range(d):
            acc = offset[i]
            for j in range(d):
                acc += matrix[i, j] * points[s, j]
            out[s, i] = acc


@parallel_kernel
def affine_points(c_lo, c_hi, points, matrix, offset, chunk_size, out):
    """:func:`affine_points_chunks` with one chunk per ``prange`` iteration."""
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)  # (prange's index is unsigned: keep the serial kernel's one signature)
        affine_points_chunks(ci, ci + 1, points, matrix, offset, chunk_size, out)


@parallel_kernel
def outer_sum_partials(points, vectors, center, chunk_size):
    """Per-chunk ``sum_s v_s (x_s - c)^T`` and ``sum_s v_s``.

    Returns
    -------
    (n_chunks, d*d + d) ndarray
        Row ``c`` holds the flattened ``(d, d)`` outer-product sum followed by
        the vector sum of chunk ``c``.
    """
    n, d = points.shape
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, d * d + d))
    for c in prange(nc):
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        acc = np.zeros(d * d + d)
        for s in range(start, stop):
            for i in range(d):
                v = vectors[s, i]
                for j in range(d):
                    acc[i * d + j] += v * (points[s, j] - center[j])
                acc[d * d + i] += v
        part[c, :] = acc
    return part
