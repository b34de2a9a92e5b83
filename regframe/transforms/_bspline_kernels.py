"""Private numba kernels for the cubic B-spline transform.

Conventions shared by every kernel
----------------------------------
* ``points`` is ``(n, d)`` float64 (physical, ITK order).
* ``params`` is the flat ITK parameter vector ``(d * n_grid,)``: coefficient
  image of component 0 in raster order (x fastest), then component 1, ...
* ``origin`` ``(d,)`` grid origin, ``p2i`` ``(d, d)`` physical-to-continuous-
  index matrix ``(direction @ diag(spacing))^-1``, ``grid_size`` ``(d,)`` int64.
* ``max_limit``, ``band_lo``, ``band_hi``, ``nudged`` ``(d,)``: ITK's validity
  rule (``1 <= ci < grid_size - 2``; indices within 4 ulp of the upper limit
  are moved 6 ulp inside), precomputed by the caller.

Support nodes are enumerated with axis 0 fastest (ITK's raster order), so the
``4**d`` weights of a point come out in the same order as ITK's
``BSplineInterpolationWeightFunction``.

Every kernel is n-D, parallel over fixed-size chunks of points, and
deterministic: point-wise outputs have no reductions; the Jacobian-transpose
product writes per-chunk partial parameter vectors and adds them to the output
serially in chunk order.  ``*_serial`` twins run the same per-chunk code on one
thread for small inputs (a single chunk), where starting the thread pool
costs more than the work; their results are bit-identical.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel

_SIXTH = 1.0 / 6.0


@njit(cache=True, inline="always")
def _b3_weights(f):
    """The four support weights ``B3(1+f), B3(f), B3(1-f), B3(2-f)`` for the fraction ``f`` in [0, 1).

    The closed-form pieces of ITK's ``BSplineKernelFunction<3>`` (same values
    to rounding; about 30 % cheaper per point than four piecewise evaluations).
    """
    v = 1.0 - f
    f2 = f * f
    v2 = v * v
    # products with 1/6, not divisions: a division costs as much as the rest of the weights
    return (v2 * v * _SIXTH, (4.0 - 6.0 * f2 + 3.0 * f2 * f) * _SIXTH, (4.0 - 6.0 * v2 + 3.0 * v2 * v) * _SIXTH,
            f2 * f * _SIXTH)


@njit(cache=True, inline="always")
def _b3_weight_derivatives(f):
    """Derivatives of :func:`_b3_weights` with respect to the continuous index."""
    v = 1.0 - f
    return -0.5 * v * v, f * (1.5 * f - 2.0), v * (2.0 - 1.5 * v), 0.5 * f * f


@njit(cache=True)
def _locate(x, origin, p2i, max_limit, band_lo, band_hi, nudged, start, w, dw, with_derivative):
    """Continuous index, validity, support start and 1-D weights of one point.

    Fills ``start`` (d,), ``w`` (d, 4) and, if ``with_derivative``, ``dw``
    (d, 4) with the 1-D weight derivatives w.r.t. the continuous index.
    Returns False (and leaves the outputs undefined) outside the valid region.
    """
    d = x.shape[0]
    for a in range(d):
        ci = 0.0
        for j in range(d):
            ci += p2i[a, j] * (x[j] - origin[j])
        if ci >= band_lo[a] and ci <= band_hi[a]:
            ci = nudged[a]
        elif ci >= max_limit[a]:
            return False
        elif ci < 1.0:
            return False
        st = np.floor(ci + 0.5 - 1.5)
        start[a] = np.int64(st)
        f = ci - st - 1.0
        w[a, 0], w[a, 1], w[a, 2], w[a, 3] = _b3_weights(f)
        if with_derivative:
            dw[a, 0], dw[a, 1], dw[a, 2], dw[a, 3] = _b3_weight_derivatives(f)
    return True


@njit(cache=True)
def _node(m, start, w, grid_size, d):
    """Flat control-point number and tensor weight of support node ``m`` (axis 0 fastest)."""
    rem = m
    wt = 1.0
    flat = 0
    stride = 1
    for a in range(d):
        j = rem % 4
        rem //= 4
        wt *= w[a, j]
        flat += (start[a] + j) * stride
        stride *= grid_size[a]
    return flat, wt


@njit(cache=True)
def _expand(start, w, grid_size, d, wt_all, flat_all):
    """All ``4**d`` support nodes of a point: weights and flat control-point numbers.

    Built axis by axis (tensor-product expansion, no integer division), in ITK's
    order (axis 0 fastest) and with ITK's product order ``((1*w0)*w1)*w2``.
    """
    wt_all[0] = 1.0
    flat_all[0] = 0
    cnt = 1
    stride = 1
    for a in range(d):
        for j in range(3, -1, -1):
            wa = w[a, j]
            off = (start[a] + j) * stride
            for e in range(cnt):
                wt_all[j * cnt + e] = wt_all[e] * wa
                flat_all[j * cnt + e] = flat_all[e] + off
        cnt *= 4
        stride *= grid_size[a]


@njit(cache=True, inline="always")
def _row_sum(params, f, a0, a1, a2, a3):
    """``a . params[f:f+4]``: one grid row of the factorised tensor-product sum.

    ``f >= 0``; the index is cast to unsigned so numba emits no negative-index fix-up.
    """
    u = np.uint64(f)
    return (a0 * params[u] + a1 * params[u + np.uint64(1)] + a2 * params[u + np.uint64(2)]
            + a3 * params[u + np.uint64(3)])


@njit(cache=True)
def _displacement(params, offset, start, w, grid_size, d):
    """``sum_k w_k c_k`` of one component (``c`` = ``params[offset:]``), factorised axis by axis.

    ``sum_j2 w2 (sum_j1 w1 (sum_j0 w0 c))``: 4**d + 4**(d-1) + ... products
    instead of 2 * 4**d.  The fused metric kernels use the same order, so both
    map points bit-identically.
    """
    a0, a1, a2, a3 = w[0, 0], w[0, 1], w[0, 2], w[0, 3]
    gx = grid_size[0]
    base = offset + start[0] + start[1] * gx
    if d == 2:
        e = 0.0
        for j1 in range(4):
            e += w[1, j1] * _row_sum(params, base + j1 * gx, a0, a1, a2, a3)
        return e
    gxy = gx * grid_size[1]
    base += start[2] * gxy
    e = 0.0
    for j2 in range(4):
        plane = 0.0
        for j1 in range(4):
            plane += w[1, j1] * _row_sum(params, base + j2 * gxy + j1 * gx, a0, a1, a2, a3)
        e += w[2, j2] * plane
    return e


@njit(cache=True)
def _map_range(points, lo, hi, out, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged):
    d = points.shape[1]
    nsup = 4**d
    start = np.empty(d, dtype=np.int64)
    w = np.empty((d, 4))
    dw = np.empty((d, 4))
    disp = np.empty(d)
    wt_all = np.empty(nsup)
    flat_all = np.empty(nsup, dtype=np.int64)
    for s in range(lo, hi):
        x = points[s]
        if not _locate(x, origin, p2i, max_limit, band_lo, band_hi, nudged, start, w, dw, False):
            for i in range(d):
                out[s, i] = x[i]
            continue
        if d == 2 or d == 3:
            for i in range(d):
                out[s, i] = _displacement(params, i * n_grid, start, w, grid_size, d) + x[i]
            continue
        _expand(start, w, grid_size, d, wt_all, flat_all)
        for i in range(d):
            disp[i] = 0.0
        for m in range(nsup):
            wt = wt_all[m]
            flat = flat_all[m]
            for i in range(d):
                disp[i] += wt * params[i * n_grid + flat]
        for i in range(d):
            out[s, i] = disp[i] + x[i]


@parallel_kernel
def transform_points(points, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged, chunk_size):
    """``T(x) = x + sum_k w_k(x) c_k`` (identity outside the valid region)."""
    n, d = points.shape
    out = np.empty((n, d))
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        hi = min(lo + chunk_size, n)
        _map_range(points, lo, hi, out, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged)
    return out


@njit(cache=True)
def transform_points_serial(points, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged):
    """Single-threaded :func:`transform_points` (identical results; no thread start-up cost)."""
    n, d = points.shape
    out = np.empty((n, d))
    _map_range(points, 0, n, out, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged)
    return out


@parallel_kernel
def support(points, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged, chunk_size):
    """Sparse Jacobian structure.

    Returns
    -------
    indices : (n, 4**d) int64
        Flat control-point number (``i + nx*(j + ny*k)``) of each support node;
        0 for points outside the valid region.
    weights : (n, 4**d) float64
        Tensor-product weights; 0 outside the valid region.
    inside : (n,) bool
    """
    n, d = points.shape
    nsup = 4**d
    indices = np.zeros((n, nsup), dtype=np.int64)
    weights = np.zeros((n, nsup))
    inside = np.zeros(n, dtype=np.bool_)
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        start = np.empty(d, dtype=np.int64)
        w = np.empty((d, 4))
        dw = np.empty((d, 4))
        wt_all = np.empty(nsup)
        flat_all = np.empty(nsup, dtype=np.int64)
        lo = c * chunk_size
        hi = min(lo + chunk_size, n)
        for s in range(lo, hi):
            if not _locate(points[s], origin, p2i, max_limit, band_lo, band_hi, nudged, start, w, dw, False):
                continue
            inside[s] = True
            _expand(start, w, grid_size, d, wt_all, flat_all)
            for m in range(nsup):
                indices[s, m] = flat_all[m]
                weights[s, m] = wt_all[m]
    return indices, weights, inside


@njit(cache=True)
def _scatter_range(points, vectors, lo, hi, row, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged):
    """``row += sum_{s in [lo, hi)} J(x_s)^T v_s`` (row zeroed by the caller)."""
    d = points.shape[1]
    nsup = 4**d
    start = np.empty(d, dtype=np.int64)
    w = np.empty((d, 4))
    dw = np.empty((d, 4))
    wt_all = np.empty(nsup)
    flat_all = np.empty(nsup, dtype=np.int64)
    v = np.empty(d)
    for s in range(lo, hi):
        if not _locate(points[s], origin, p2i, max_limit, band_lo, band_hi, nudged, start, w, dw, False):
            continue
        _expand(start, w, grid_size, d, wt_all, flat_all)
        for i in range(d):
            v[i] = vectors[s, i]
        for i in range(d):
            off = i * n_grid
            vi = v[i]
            for m in range(nsup):
                row[off + flat_all[m]] += wt_all[m] * vi


@parallel_kernel
def jacobian_vjp_accumulate(
    points, vectors, out, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged, chunk_size
):
    """Add ``sum_s J(x_s)^T v_s`` to ``out`` (length ``d * n_grid``), in place.

    Each chunk of ``chunk_size`` points scatters ``w_k * v_s`` into its own
    zero-initialised row of a partials array (``O(4**d)`` work per point);
    the rows are then added to ``out`` serially in chunk order, so the result
    does not depend on the number of threads.  The caller passes blocks of a
    fixed number of chunks, which bounds the partials memory; the running sum
    in ``out`` keeps the global chunk order.
    """
    n = points.shape[0]
    n_par = out.shape[0]
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, n_par))
    for c in prange(nc):
        lo = c * chunk_size
        hi = min(lo + chunk_size, n)
        _scatter_range(points, vectors, lo, hi, part[c], n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged)
    for c in range(nc):
        for k in range(n_par):
            out[k] += part[c, k]
    return out


@njit(cache=True)
def jacobian_vjp_accumulate_serial(
    points, vectors, out, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged
):
    """:func:`jacobian_vjp_accumulate` for a single chunk (bit-identical, single-threaded)."""
    row = np.zeros(out.shape[0])
    _scatter_range(points, vectors, 0, points.shape[0], row, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged)
    for k in range(out.shape[0]):
        out[k] += row[k]
    return out


@njit(cache=True)
def _position_range(points, lo, hi, out, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged):
    d = points.shape[1]
    nsup = 4**d
    start = np.empty(d, dtype=np.int64)
    w = np.empty((d, 4))
    dw = np.empty((d, 4))
    g = np.empty((d, d))
    grad_w = np.empty(d)
    for s in range(lo, hi):
        for i in range(d):
            out[s, i, i] = 1.0
        if not _locate(points[s], origin, p2i, max_limit, band_lo, band_hi, nudged, start, w, dw, True):
            continue
        for i in range(d):
            for a in range(d):
                g[i, a] = 0.0
        for m in range(nsup):
            flat, _ = _node(m, start, w, grid_size, d)
            for a in range(d):
                rem = m
                prod = 1.0
                for b in range(d):
                    j = rem % 4
                    rem //= 4
                    if b == a:
                        prod *= dw[b, j]
                    else:
                        prod *= w[b, j]
                grad_w[a] = prod
            for i in range(d):
                cval = params[i * n_grid + flat]
                for a in range(d):
                    g[i, a] += cval * grad_w[a]
        for i in range(d):
            for j in range(d):
                acc = 0.0
                for a in range(d):
                    acc += g[i, a] * p2i[a, j]
                out[s, i, j] += acc


@parallel_kernel
def jacobian_position(points, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged, chunk_size):
    """``dT/dx = I + (sum_k c_k (dw_k/dci)^T) @ p2i``; identity outside the valid region."""
    n, d = points.shape
    out = np.zeros((n, d, d))
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        hi = min(lo + chunk_size, n)
        _position_range(points, lo, hi, out, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged)
    return out


@njit(cache=True)
def jacobian_position_serial(points, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged):
    """Single-threaded :func:`jacobian_position`."""
    n, d = points.shape
    out = np.zeros((n, d, d))
    _position_range(points, 0, n, out, params, n_grid, origin, p2i, grid_size, max_limit, band_lo, band_hi, nudged)
    return out
