"""Private numba kernels for linear (matrix + offset) transforms.

All kernels are n-D, parallel over fixed-size chunks and deterministic: point
maps have no reductions; the Jacobian-transpose product writes per-chunk
partials that the caller reduces in chunk order.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._parallel import parallel_kernel


@parallel_kernel
def affine_points(points, matrix, offset):
    """``out[s] = matrix @ points[s] + offset`` for ``(n, d)`` points."""
    n, d = points.shape
    out = np.empty((n, d))
    for s in prange(n):
        for i in range(d):
            acc = offset[i]
            for j in range(d):
                acc += matrix[i, j] * points[s, j]
            out[s, i] = acc
    return out


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
