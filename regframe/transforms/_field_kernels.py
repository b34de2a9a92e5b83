"""Private numba kernels for the displacement-field transform.

Conventions shared by every kernel
----------------------------------
* ``points`` ``(n, d)`` float64 physical points (ITK order).
* ``field`` is the flat ITK parameter vector ``(n_voxels * d,)``: voxel-major
  with interleaved components, voxels in raster order (x fastest).
* ``origin`` ``(d,)``, ``p2i`` ``(d, d)`` physical-to-continuous-index matrix,
  ``size`` ``(d,)`` int64.

Interpolation is ITK's ``VectorLinearInterpolateImageFunction``: a point is
inside when its continuous index lies in ``[-0.5, size - 0.5)`` per axis;
``base = floor(ci)``; neighbours beyond the buffer are clamped to the edge
voxel (constant extrapolation in the half-voxel skirt); neighbours with zero
overlap are skipped.  Outside points have zero displacement.

All kernels are n-D, parallel over fixed-size chunks of points and
deterministic (per-chunk partials added serially in chunk order).  ``*_serial``
twins run the same per-chunk code on one thread for small inputs (bit-identical
results, no thread start-up cost).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel

@njit(cache=True)
def _locate(x, origin, p2i, size, base, frac):
    """Fill ``base`` and ``frac`` (d,); return False outside the buffer."""
    d = x.shape[0]
    for a in range(d):
        ci = 0.0
        for j in range(d):
            ci += p2i[a, j] * (x[j] - origin[j])
        if not (ci >= -0.5 and ci < size[a] - 0.5):
            return False
        b = np.floor(ci)
        base[a] = np.int64(b)
        frac[a] = ci - b
    return True


@njit(cache=True)
def _node(m, base, frac, size, d):
    """Flat voxel number and overlap of neighbour ``m`` (bit ``a`` = upper along axis ``a``)."""
    flat = 0
    stride = 1
    overlap = 1.0
    for a in range(d):
        if (m >> a) & 1:
            idx = base[a] + 1
            if idx > size[a] - 1:
                idx = size[a] - 1
            overlap *= frac[a]
        else:
            idx = base[a]
            if idx < 0:
                idx = 0
            overlap *= 1.0 - frac[a]
        flat += idx * stride
        stride *= size[a]
    return flat, overlap


@njit(cache=True)
def _map_range(points, lo, hi, out, field, origin, p2i, size):
    d = points.shape[1]
    nn = 1 << d
    base = np.empty(d, dtype=np.int64)
    frac = np.empty(d)
    disp = np.empty(d)
    for s in range(lo, hi):
        x = points[s]
        if not _locate(x, origin, p2i, size, base, frac):
            for i in range(d):
                out[s, i] = x[i]
            continue
        for i in range(d):
            disp[i] = 0.0
        for m in range(nn):
            flat, overlap = _node(m, base, frac, size, d)
            if overlap != 0.0:
                for i in range(d):
                    disp[i] += overlap * field[flat * d + i]
        for i in range(d):
            out[s, i] = x[i] + disp[i]


@parallel_kernel
def transform_points(points, field, origin, p2i, size, chunk_size):
    """``T(x) = x + u(x)`` with vector-linear interpolation, ``u = 0`` outside."""
    n, d = points.shape
    out = np.empty((n, d))
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        _map_range(points, lo, min(lo + chunk_size, n), out, field, origin, p2i, size)
    return out


@njit(cache=True)
def transform_points_serial(points, field, origin, p2i, size):
    """Single-threaded :func:`transform_points`."""
    n, d = points.shape
    out = np.empty((n, d))
    _map_range(points, 0, n, out, field, origin, p2i, size)
    return out


@parallel_kernel
def support(points, origin, p2i, size, chunk_size):
    """Flat voxel numbers ``(n, 2**d)``, overlaps ``(n, 2**d)`` and inside flags ``(n,)``.

    Clamped neighbours may repeat a voxel number (their overlaps then add up);
    outside points get index 0 and weight 0.
    """
    n, d = points.shape
    nn = 1 << d
    indices = np.zeros((n, nn), dtype=np.int64)
    weights = np.zeros((n, nn))
    inside = np.zeros(n, dtype=np.bool_)
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        base = np.empty(d, dtype=np.int64)
        frac = np.empty(d)
        lo = c * chunk_size
        hi = min(lo + chunk_size, n)
        for s in range(lo, hi):
            if not _locate(points[s], origin, p2i, size, base, frac):
                continue
            inside[s] = True
            for m in range(nn):
                flat, overlap = _node(m, base, frac, size, d)
                indices[s, m] = flat
                weights[s, m] = overlap
    return indices, weights, inside


@njit(cache=True)
def _scatter_range(points, vectors, lo, hi, row, origin, p2i, size):
    d = points.shape[1]
    nn = 1 << d
    base = np.empty(d, dtype=np.int64)
    frac = np.empty(d)
    for s in range(lo, hi):
        if not _locate(points[s], origin, p2i, size, base, frac):
            continue
        for m in range(nn):
            flat, overlap = _node(m, base, frac, size, d)
            if overlap != 0.0:
                for i in range(d):
                    row[flat * d + i] += overlap * vectors[s, i]


@parallel_kernel
def jacobian_vjp_accumulate(points, vectors, out, origin, p2i, size, chunk_size):
    """Add ``sum_s J(x_s)^T v_s`` to ``out`` (length ``n_voxels * d``), in place.

    Per-chunk zero-initialised partial rows, added to ``out`` serially in
    chunk order.
    """
    n = points.shape[0]
    n_par = out.shape[0]
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, n_par))
    for c in prange(nc):
        lo = c * chunk_size
        _scatter_range(points, vectors, lo, min(lo + chunk_size, n), part[c], origin, p2i, size)
    for c in range(nc):
        for k in range(n_par):
            out[k] += part[c, k]
    return out


@njit(cache=True)
def jacobian_vjp_accumulate_serial(points, vectors, out, origin, p2i, size):
    """:func:`jacobian_vjp_accumulate` for a single chunk (bit-identical)."""
    row = np.zeros(out.shape[0])
    _scatter_range(points, vectors, 0, points.shape[0], row, origin, p2i, size)
    for k in range(out.shape[0]):
        out[k] += row[k]
    return out


@njit(cache=True)
def _position_range(points, lo, hi, out, field, origin, p2i, size):
    d = points.shape[1]
    nn = 1 << d
    base = np.empty(d, dtype=np.int64)
    frac = np.empty(d)
    g = np.empty((d, d))
    for s in range(lo, hi):
        for i in range(d):
            out[s, i, i] = 1.0
        if not _locate(points[s], origin, p2i, size, base, frac):
            continue
        for i in range(d):
            for a in range(d):
                g[i, a] = 0.0
        for m in range(nn):
            flat, _ = _node(m, base, frac, size, d)
            for a in range(d):
                # derivative of the overlap w.r.t. ci_a
                prod = 1.0
                for b in range(d):
                    up = (m >> b) & 1
                    if b == a:
                        prod *= 1.0 if up else -1.0
                    else:
                        prod *= frac[b] if up else 1.0 - frac[b]
                if prod != 0.0:
                    for i in range(d):
                        g[i, a] += prod * field[flat * d + i]
        for i in range(d):
            for j in range(d):
                acc = 0.0
                for a in range(d):
                    acc += g[i, a] * p2i[a, j]
                out[s, i, j] += acc


@parallel_kernel
def jacobian_position(points, field, origin, p2i, size, chunk_size):
    """``I + du/dx`` of the linear interpolant (right derivative at voxel planes).

    ``du/dci`` is zero along an axis where both neighbours clamp to the same
    edge voxel (the half-voxel skirt); outside the buffer the result is ``I``.
    """
    n, d = points.shape
    out = np.zeros((n, d, d))
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        _position_range(points, lo, min(lo + chunk_size, n), out, field, origin, p2i, size)
    return out


@njit(cache=True)
def jacobian_position_serial(points, field, origin, p2i, size):
    """Single-threaded :func:`jacobian_position`."""
    n, d = points.shape
    out = np.zeros((n, d, d))
    _position_range(points, 0, n, out, field, origin, p2i, size)
    return out
