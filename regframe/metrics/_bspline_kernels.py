"""Private one-pass numba kernels of the metrics for a cubic ``BSplineTransform``.

Per sample: locate the fixed point in the control grid, map it, interpolate
the moving image (linear, exact gradient) and, for the gradient, scatter
``u_s * g_s * w_k`` into the ``4**d`` supporting coefficients of the chunk's
own row of parameter partials.  Nothing per sample is written to memory
except what the Mattes second pass needs (Parzen coordinate, bin and moving
gradient, as in the linear-transform kernels).  The caller reduces the rows
in chunk order; chunk sizes come from
:func:`regframe._parallel.scatter_chunk_size` (fixed by the parameter count,
never by the thread count).

Argument conventions (``points`` first):

* B-spline grid: ``params`` (the coefficients), ``n_grid`` (control points),
  then ``BSplineTransform._kernel_grid()``: ``origin, gp2i, grid_size,
  max_limit, band_lo, band_hi, nudged``;
* moving image: ``kmat, kvec, size3, data, p2i, morigin`` and the moving mask
  ``mask, mask_size, mask_p2i, mask_origin, has_mask`` (see
  :mod:`regframe.metrics._sample_kernels`).

The point map and interpolation are the helpers of
:mod:`regframe.metrics._bspline_map_kernels`, so mapped points are bit-identical to
``BSplineTransform.transform_points``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._bspline_map_kernels import _bspline_locate, _bspline_map, _bspline_moving
from ._linear_fused_kernels import _correlation_add
from ._parzen_kernels import _cache_sample, _mattes_weight, _parzen, _parzen_add
from ._sample_kernels import _U, _moving_frame


@njit(cache=True, inline="always")
def _scatter(part, c, base, wa, wb, wc, v0, v1, v2, d, n_grid, gx, gxy):
    """``part[c, k] += w_k * v`` over the support of one sample, factorised by axis.

    The vector is scaled by the outer weights first (``w2``, then ``w1``), so
    each node costs one multiply per component.  (Unsigned indices: see
    :data:`._sample_kernels._U`.)
    """
    nz = 4 if d == 3 else 1
    row = part[c]
    a0, a1, a2, a3 = wa[0], wa[1], wa[2], wa[3]
    for j2 in range(nz):
        c2 = wc[j2] if d == 3 else 1.0
        u0 = c2 * v0
        u1 = c2 * v1
        u2 = c2 * v2
        for j1 in range(4):
            b1 = wb[j1]
            t0 = b1 * u0
            t1 = b1 * u1
            f = _U(base + j2 * gxy + j1 * gx)
            g = f + _U(n_grid)
            row[f] += a0 * t0
            row[f + _U(1)] += a1 * t0
            row[f + _U(2)] += a2 * t0
            row[f + _U(3)] += a3 * t0
            row[g] += a0 * t1
            row[g + _U(1)] += a1 * t1
            row[g + _U(2)] += a2 * t1
            row[g + _U(3)] += a3 * t1
            if d == 3:
                t2 = b1 * u2
                h = g + _U(n_grid)
                row[h] += a0 * t2
                row[h + _U(1)] += a1 * t2
                row[h + _U(2)] += a2 * t2
                row[h + _U(3)] += a3 * t2


@njit(cache=True, inline="always")
def _control_grid(origin, grid_size, d):
    """``(gx, gxy, o0, o1, o2)``: control-grid strides and origin as scalars."""
    return (grid_size[0], grid_size[0] * grid_size[1], origin[0], origin[1],
            origin[2] if d == 3 else 0.0)


@njit(cache=True, inline="always")
def _buffers(d):
    """A chunk's buffers: mapped point ``y`` (d,) and the 1-D weights ``wa, wb, wc`` (``wc = 1``)."""
    return np.empty(d), np.empty(4), np.empty(4), np.ones(4)


@njit(cache=True, inline="always")
def _sample(points, s, d, params, n_grid, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo, band_hi,
            nudged, wa, wb, wc, y, data, p2i, morigin, frame, mask, mask_size, mask_p2i, mask_origin,
            has_mask, with_gradient):
    """Map sample ``s`` and interpolate the moving image there: ``(ok, inside, base, m, g0, g1, g2)``.

    ``inside``/``base``: the sample's support (weights left in ``wa, wb, wc``);
    ``ok``: the mapped point is inside the moving image (and mask).
    """
    x0 = points[s, 0]
    x1 = points[s, 1]
    x2 = points[s, 2] if d == 3 else 0.0
    inside, base, y0, y1, y2 = _bspline_map(x0, x1, x2, d, params, n_grid, o0, o1, o2, gp2i, gx,
                                            gxy, max_limit, band_lo, band_hi, nudged, wa, wb, wc)
    ok, m, g0, g1, g2 = _bspline_moving(y0, y1, y2, d, y, data, p2i, morigin, frame, mask,
                                        mask_size, mask_p2i, mask_origin, has_mask, with_gradient)
    return ok, inside, base, m, g0, g1, g2


#: ``kind`` of :func:`sums_bspline` and the grid twin: which sums a one-pass kernel accumulates.
MEAN_SQUARES = 0
CORRELATION = 1


@njit(cache=True, inline="always")
def _pointwise_add(kind, sums, f, m, fixed_ref, moving_ref):
    """Add a valid sample to the sums of ``kind``; its gradient weights ``(u0, u1, u2)``.

    MeanSquares: ``sums = (sum r^2, count)`` with ``r = m - f``, one gradient
    row of weight ``2 r``.  Correlation: :func:`._linear_fused_kernels._correlation_add` of
    ``f' = f - fixed_ref`` and ``m' = m - moving_ref``, three rows of
    weights ``1, f', m'``.
    """
    if kind == MEAN_SQUARES:
        r = m - f
        sums[0] += r * r
        sums[1] += 1.0
        return 2.0 * r, 0.0, 0.0
    fs, ms = _correlation_add(sums, f - fixed_ref, m - moving_ref)
    return 1.0, fs, ms


@njit(parallel=True, cache=True)
def sums_bspline(kind, points, fixed_values, fixed_ref, moving_ref, params, n_grid, origin, gp2i,
                 grid_size, max_limit, band_lo, band_hi, nudged, kmat, kvec, size3, data, p2i,
                 morigin, mask, mask_size, mask_p2i, mask_origin, has_mask, with_gradient,
                 chunk_size):
    """One pass of MeanSquares or NormalizedCorrelation (``kind``): sums and gradient rows.

    ``acc (n_chunks, 6)`` holds each chunk's sums (see :func:`_pointwise_add`;
    MeanSquares uses the first two); the gradient rows ``(n_rows * n_chunks,
    d * n_grid)`` (``n_rows`` = 1 or 3; no columns without gradient): row
    ``n_rows c + b`` holds chunk ``c``'s ``sum_s u_b J_s^T g_s``.
    """
    n, d = points.shape
    n_rows = 1 if kind == MEAN_SQUARES else 3
    nc = (n + chunk_size - 1) // chunk_size
    acc = np.zeros((nc, 6))
    part = np.zeros((n_rows * nc, d * n_grid if with_gradient else 0))
    gx, gxy, o0, o1, o2 = _control_grid(origin, grid_size, d)
    for c in prange(nc):
        y, wa, wb, wc = _buffers(d)
        sums = np.zeros(6)
        frame = _moving_frame(kmat, kvec, size3)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            ok, inside, base, m, g0, g1, g2 = _sample(
                points, s, d, params, n_grid, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo,
                band_hi, nudged, wa, wb, wc, y, data, p2i, morigin, frame, mask, mask_size,
                mask_p2i, mask_origin, has_mask, with_gradient,
            )
            if not ok:
                continue
            u = _pointwise_add(kind, sums, fixed_values[s], m, fixed_ref, moving_ref)
            if with_gradient and inside:
                for b in range(n_rows):
                    _scatter(part, n_rows * c + b, base, wa, wb, wc, u[b] * g0, u[b] * g1,
                             u[b] * g2, d, n_grid, gx, gxy)
        for q in range(6):
            acc[c, q] = sums[q]
    return acc, part


@njit(parallel=True, cache=True)
def mattes_bspline_histogram(points, fixed_bins, params, n_grid, origin, gp2i, grid_size,
                             max_limit, band_lo, band_hi, nudged, kmat, kvec, size3, data, p2i,
                             morigin, mask, mask_size, mask_p2i, mask_origin, has_mask,
                             m_min, m_max, bin_size, n_min, n_bins, cache_t, cache_k, cache_g,
                             cache_base, cache_w, chunk_size):
    """Mattes pass 1: map, interpolate, Parzen joint histogram partials (as ``mattes_histogram``).

    With caches of one row per sample (``cache_k.shape[0] == n``) the moving
    gradient is evaluated and each sample's Parzen coordinate, first tap
    (``-1`` when unused) and physical gradient are stored for pass 2; with
    ``cache_base.shape[0] == n`` too, also its support (first node, ``-1``
    outside the grid region, and the 1-D weights ``(n, 12)``), so pass 2 need
    not locate it again.
    """
    n, d = points.shape
    caching = cache_k.shape[0] == n
    support = caching and cache_base.shape[0] == n
    nc = (n + chunk_size - 1) // chunk_size
    joint = np.zeros((nc, n_bins * n_bins))
    count = np.zeros((nc, n_bins))
    used = np.zeros(nc)
    gx, gxy, o0, o1, o2 = _control_grid(origin, grid_size, d)
    for c in prange(nc):
        y, wa, wb, wc = _buffers(d)
        frame = _moving_frame(kmat, kvec, size3)
        k_used = 0.0
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            ok, inside, base, m, g0, g1, g2 = _sample(
                points, s, d, params, n_grid, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo,
                band_hi, nudged, wa, wb, wc, y, data, p2i, morigin, frame, mask, mask_size,
                mask_p2i, mask_origin, has_mask, caching,
            )
            if caching:
                cache_k[s] = -1
            if not ok or m < m_min or m > m_max:
                continue
            t, k = _parzen(m, bin_size, n_min, n_bins)
            if caching:
                _cache_sample(cache_t, cache_k, cache_g, s, t, k, g0, g1, g2)
            if support:
                cache_base[s] = base if inside else -1
                for j in range(4):
                    cache_w[s, j] = wa[j]
                    cache_w[s, 4 + j] = wb[j]
                    cache_w[s, 8 + j] = wc[j]
            _parzen_add(joint, count, c, fixed_bins[s], t, k, n_bins)
            k_used += 1.0
        used[c] = k_used
    return joint, count, used


@njit(parallel=True, cache=True)
def mattes_bspline_gradient(points, fixed_bins, n_grid, origin, gp2i, grid_size, max_limit,
                            band_lo, band_hi, nudged, cache_t, cache_k, cache_g, cache_base, cache_w,
                            n_bins, log_ratio, chunk_size):
    """Mattes pass 2 from the pass-1 caches: rows ``sum_s w_s J_s^T g_s`` ``(n_chunks, d * n_grid)``.

    ``w_s = sum_j B3'(k_j - t_s) R[i_f(s), k_j]`` (see ``mattes_weights``); the
    support comes from the caches when pass 1 stored it, else it is located
    again from the fixed point.
    """
    n, d = points.shape
    cached = cache_base.shape[0] == n
    nc = (n + chunk_size - 1) // chunk_size
    part = np.zeros((nc, d * n_grid))
    gx, gxy, o0, o1, o2 = _control_grid(origin, grid_size, d)
    for c in prange(nc):
        _, wa, wb, wc = _buffers(d)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            k = cache_k[s]
            if k < 0:
                continue
            if cached:
                base = cache_base[s]
                if base < 0:
                    continue
                for j in range(4):
                    wa[j] = cache_w[s, j]
                    wb[j] = cache_w[s, 4 + j]
                    wc[j] = cache_w[s, 8 + j]
            else:
                x0 = points[s, 0]
                x1 = points[s, 1]
                x2 = points[s, 2] if d == 3 else 0.0
                inside, base = _bspline_locate(x0, x1, x2, d, o0, o1, o2, gp2i, gx, gxy, max_limit,
                                               band_lo, band_hi, nudged, wa, wb, wc)
                if not inside:
                    continue
            w = _mattes_weight(cache_t[s], k, fixed_bins[s], n_bins, log_ratio)
            _scatter(part, c, base, wa, wb, wc, w * cache_g[s, 0], w * cache_g[s, 1],
                     w * cache_g[s, 2], d, n_grid, gx, gxy)
    return part
