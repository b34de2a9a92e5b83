"""Private numba kernel of :func:`regframe.warp_stack`: one 2-D linear map per slice.

Each slice ``z`` of ``data`` (shape ``(nz, ny, nx)``, numpy order) is sampled
at the continuous indices ``ci = maps[z, :, :2] @ (i, j) + maps[z, :, 2]`` of
the output voxels ``(i, j)`` (ITK order: ``i`` along x).  The map is the fused
"output index -> physical point -> transform -> input index" chain of a linear
transform, so no point array is ever built: memory is the output alone.

Parallel over fixed-size blocks of ``rows`` output rows of every slice
(``nz * ceil(ny_out / rows)`` tasks, never derived from the thread count).
Every output voxel is written by exactly one task and nothing is reduced, so
results are bit-identical for any number of threads.  No fastmath.

Interpolation rules are those of the interpolators (see
``regframe/interpolators/_kernels.py``): ITK's inside-buffer rule
(``ci`` in ``[-0.5, size - 0.5)``), ITK's linear cell choice, nearest rounding
half up, and cubic B-spline with mirrored coefficients.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel
from ..interpolators._kernels import _cubic_weights, _mirror

#: Interpolation codes of :func:`warp_slices`.
NEAREST, LINEAR, BSPLINE = 0, 1, 3


@njit(cache=True, inline="always")
def _linear_at(sl, c0, c1, nx, ny):
    """Bilinear value of slice ``sl`` (2-D array) at continuous index ``(c0, c1)`` (inside)."""
    b0 = max(math.floor(c0), 0.0)
    b1 = max(math.floor(c1), 0.0)
    f0 = max(c0 - b0, 0.0)
    f1 = max(c1 - b1, 0.0)
    i0 = np.int64(b0)
    i1 = np.int64(b1)
    u0 = i0 + 1 if i0 + 1 < nx else i0
    u1 = i1 + 1 if i1 + 1 < ny else i1
    v00 = np.float64(sl[i1, i0])
    v10 = np.float64(sl[i1, u0])
    v01 = np.float64(sl[u1, i0])
    v11 = np.float64(sl[u1, u0])
    a0 = v00 + f0 * (v10 - v00)
    a1 = v01 + f0 * (v11 - v01)
    return a0 + f1 * (a1 - a0)


@njit(cache=True, inline="always")
def _nearest_at(sl, c0, c1, nx, ny):
    k0 = min(max(np.int64(math.floor(c0 + 0.5)), 0), nx - 1)
    k1 = min(max(np.int64(math.floor(c1 + 0.5)), 0), ny - 1)
    return np.float64(sl[k1, k0])


@njit(cache=True, inline="always")
def _bspline_at(sl, c0, c1, nx, ny, w, dw):
    """Cubic B-spline value from the coefficients ``sl`` (mirror boundary)."""
    f0 = math.floor(c0)
    f1 = math.floor(c1)
    _cubic_weights(c0 - f0, w, dw, 0)
    _cubic_weights(c1 - f1, w, dw, 1)
    s0 = np.int64(f0) - 1
    s1 = np.int64(f1) - 1
    val = 0.0
    for m in range(4):
        row = _mirror(s1 + m, ny)
        acc = 0.0
        for k in range(4):
            acc += w[0, k] * sl[row, _mirror(s0 + k, nx)]
        val += w[1, m] * acc
    return val


@parallel_kernel
def warp_slices(data, out, maps, kind, default_value, rows):
    """Fill ``out[z]`` with ``data[z]`` sampled through ``maps[z]`` (see the module doc).

    Parameters
    ----------
    data : (nz, ny, nx) float32 or float64
        Input slices (B-spline coefficients for ``kind == BSPLINE``).
    out : (nz, ny_out, nx_out) float32 or float64
        Output, written in place.
    maps : (nz, 2, 3) float64
        Output index -> input continuous index, per slice.
    kind : int
        :data:`NEAREST`, :data:`LINEAR` or :data:`BSPLINE`.
    default_value : float
        Value of output voxels mapping outside the input slice.
    rows : int
        Output rows per parallel task.
    """
    nz, ny, nx = data.shape
    ny_out, nx_out = out.shape[1], out.shape[2]
    blocks = (ny_out + rows - 1) // rows
    for task in prange(nz * blocks):
        z = task // blocks
        r0 = (task % blocks) * rows
        sl = data[z]
        m00, m01, m02 = maps[z, 0, 0], maps[z, 0, 1], maps[z, 0, 2]
        m10, m11, m12 = maps[z, 1, 0], maps[z, 1, 1], maps[z, 1, 2]
        w = np.empty((2, 4))
        dw = np.empty((2, 4))
        for j in range(r0, min(r0 + rows, ny_out)):
            base0 = m01 * j + m02
            base1 = m11 * j + m12
            orow = out[z, j]
            for i in range(nx_out):
                c0 = m00 * i + base0
                c1 = m10 * i + base1
                if kind == LINEAR and c0 >= 0.0 and c0 < nx - 1 and c1 >= 0.0 and c1 < ny - 1:
                    # interior cell (the common case): no clamping, truncation is floor
                    i0 = np.int64(c0)
                    i1 = np.int64(c1)
                    f0 = c0 - i0
                    f1 = c1 - i1
                    v00 = np.float64(sl[i1, i0])
                    v10 = np.float64(sl[i1, i0 + 1])
                    v01 = np.float64(sl[i1 + 1, i0])
                    v11 = np.float64(sl[i1 + 1, i0 + 1])
                    a0 = v00 + f0 * (v10 - v00)
                    a1 = v01 + f0 * (v11 - v01)
                    orow[i] = a0 + f1 * (a1 - a0)
                elif not (c0 >= -0.5 and c0 < nx - 0.5 and c1 >= -0.5 and c1 < ny - 0.5):
                    orow[i] = default_value
                elif kind == LINEAR:
                    orow[i] = _linear_at(sl, c0, c1, nx, ny)
                elif kind == NEAREST:
                    orow[i] = _nearest_at(sl, c0, c1, nx, ny)
                else:
                    orow[i] = _bspline_at(sl, c0, c1, nx, ny, w, dw)
