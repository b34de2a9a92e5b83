"""Private numba kernels for a cubic ``BSplineTransform`` and samples on the fixed grid.

When the control grid's index axes are the fixed image's (a grid made by
``BSplineTransform.from_domain(fixed, ...)``), the continuous control-grid
index of a voxel centre along axis ``a`` depends only on the voxel's index
along ``a``.  The support of an on-grid sample is then separable, and so are
the tensor-product sums:

* **Tables** (:func:`grid_support_tables`, once per sample set and grid): for
  each axis and voxel index, validity, first support node and the four 1-D
  weights, computed with the operations of the per-sample locate.  The
  builder checks every sample against its table entries bit for bit and
  reports ``exact=False`` when they differ (an oblique grid), so the caller
  falls back to the per-sample kernels of :mod:`._bspline_kernels`.
* **Map** (:func:`row_sums` once per evaluation, then :func:`_grid_map`): the
  axis-0 sums ``R[c, r, i] = sum_j0 w0[i, j0] c[st0[i] + j0 + gx * r]`` for
  every control row ``r`` and fixed column ``i``; a sample sums the
  ``4**(d-1)`` rows of its support.  The operations and their order are those
  of ``_bspline_map`` (and the transform's ``_displacement``): mapped points
  are bit-identical.
* **Transpose** (gradients): samples of one image row share the axis-1/2
  weights, so ``sum_s w_k(s) v_s`` is accumulated along the row into one
  control row ``X[c, p]`` (4 updates per component and sample instead of
  ``4**d``) and added to the ``4**(d-1)`` control rows of the row's support
  when the row ends (:func:`_flush`).  Sparse samples (few per row) use the
  per-sample scatter with table weights (``rowwise=False``).

Chunks are fixed-size ranges of samples (a row that straddles two chunks is
flushed in each); every chunk owns a row of parameter partials, reduced by the
caller in chunk order, so results do not depend on the thread count.

``index`` is the ``(n, 3)`` int32 voxel index of each sample (x, y, z order,
0 for a missing axis); samples are in raster order (``SampleSet``).
Tables: ``ok (d, m)`` bool, ``start (d, m)`` int64, ``w (d, m, 4)`` with
``m`` = the largest image size.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel
from ._bspline_kernels import MEAN_SQUARES, _pointwise_add, _scatter
from ._bspline_map_kernels import _bspline_axis, _bspline_index, _bspline_moving
from ._parzen_kernels import _cache_sample, _mattes_weight, _parzen, _parzen_add
from ._sample_kernels import _U, _moving_frame
from ..transforms._bspline_kernels import _row_sum


@njit(cache=True)
def grid_support_tables(points, index, image_size, origin, gp2i, max_limit, band_lo, band_hi, nudged):
    """Per-axis support tables of on-grid samples: ``(ok, start, w, exact)``.

    ``exact`` is False when two samples with the same voxel index along an
    axis have different supports there (the control grid is oblique to the
    fixed grid); the tables are then unusable.
    """
    n, d = points.shape
    m = 1
    for a in range(d):
        m = max(m, image_size[a])
    ok = np.zeros((d, m), dtype=np.bool_)
    start = np.zeros((d, m), dtype=np.int64)
    w = np.zeros((d, m, 4))
    seen = np.zeros((d, m), dtype=np.bool_)
    wt = np.empty(4)
    o0 = origin[0]
    o1 = origin[1]
    o2 = origin[2] if d == 3 else 0.0
    for s in range(n):
        x0 = points[s, 0]
        x1 = points[s, 1]
        x2 = points[s, 2] if d == 3 else 0.0
        for a in range(d):
            ci = _bspline_index(gp2i, a, d, x0, x1, x2, o0, o1, o2)
            valid, st = _bspline_axis(ci, max_limit[a], band_lo[a], band_hi[a], nudged[a], wt)
            i = index[s, a]
            if not seen[a, i]:
                seen[a, i] = True
                ok[a, i] = valid
                start[a, i] = np.int64(st)
                for j in range(4):
                    w[a, i, j] = wt[j]
            elif valid != ok[a, i]:
                return ok, start, w, False
            elif valid:
                if np.int64(st) != start[a, i]:
                    return ok, start, w, False
                for j in range(4):
                    if wt[j] != w[a, i, j]:
                        return ok, start, w, False
    return ok, start, w, True


@njit(cache=True)
def row_sums(params, n_grid, grid_size, ok, start, w, n_cols):
    """``R (d, n_grid / gx, n_cols)``: axis-0 sums of every control row at every fixed column."""
    d = grid_size.shape[0]
    gx = grid_size[0]
    n_rows = n_grid // gx
    out = np.zeros((d, n_rows, n_cols))
    for c in range(d):
        for r in range(n_rows):
            off = c * n_grid + r * gx
            for i in range(n_cols):
                if ok[0, i]:
                    out[c, r, i] = _row_sum(params, off + start[0, i], w[0, i, 0], w[0, i, 1],
                                            w[0, i, 2], w[0, i, 3])
    return out


@njit(cache=True, inline="always")
def _grid_inside(ok, i, j, k, d):
    inside = ok[_U(0), _U(i)] and ok[_U(1), _U(j)]
    if d == 3:
        inside = inside and ok[_U(2), _U(k)]
    return inside


@njit(cache=True, inline="always")
def _grid_map(x0, x1, x2, d, i, j, k, rows, ok, start, w, gy):
    """B-spline image of an on-grid sample: ``(inside, y0, y1, y2)`` (as ``_bspline_map``).

    (Unsigned indices: see :data:`._sample_kernels._U`.)
    """
    inside = _grid_inside(ok, i, j, k, d)
    y0 = x0
    y1 = x1
    y2 = x2
    if inside:
        iu = _U(i)
        ju = _U(j)
        r1 = start[_U(1), ju]
        e0 = 0.0
        e1 = 0.0
        e2 = 0.0
        if d == 2:
            for j1 in range(4):
                r = _U(r1 + j1)
                b1 = w[_U(1), ju, _U(j1)]
                e0 += b1 * rows[_U(0), r, iu]
                e1 += b1 * rows[_U(1), r, iu]
        else:
            ku = _U(k)
            r2 = start[_U(2), ku]
            for j2 in range(4):
                p0 = 0.0
                p1 = 0.0
                p2 = 0.0
                for j1 in range(4):
                    r = _U(r1 + j1 + gy * (r2 + j2))
                    b1 = w[_U(1), ju, _U(j1)]
                    p0 += b1 * rows[_U(0), r, iu]
                    p1 += b1 * rows[_U(1), r, iu]
                    p2 += b1 * rows[_U(2), r, iu]
                c2 = w[_U(2), ku, _U(j2)]
                e0 += c2 * p0
                e1 += c2 * p1
                e2 += c2 * p2
            y2 = e2 + x2
        y0 = e0 + x0
        y1 = e1 + x1
    return inside, y0, y1, y2


@njit(cache=True, inline="always")
def _row_add(acc, i, start, w, v0, v1, v2, d):
    """``X[c, st0[i] + j0] += w0[i, j0] v_c``: one sample into its image row's accumulator."""
    iu = _U(i)
    p = _U(start[_U(0), iu])
    for j0 in range(4):
        a = w[_U(0), iu, _U(j0)]
        q = p + _U(j0)
        acc[_U(0), q] += a * v0
        acc[_U(1), q] += a * v1
        if d == 3:
            acc[_U(2), q] += a * v2


@njit(cache=True)
def _flush(part, c0, acc, lo, hi, j, k, start, w, d, n_grid, gx, gy):
    """Add an image row's accumulators to their support rows, then clear them.

    ``acc (n_acc, d, gx)`` (control columns ``lo..hi`` used) goes to the
    partial rows ``part[c0 + b]``.
    """
    r1 = start[1, j]
    nz = 4 if d == 3 else 1
    r2 = start[2, k] if d == 3 else 0
    for b in range(acc.shape[0]):
        row = part[c0 + b]
        for j2 in range(nz):
            c2 = w[2, k, j2] if d == 3 else 1.0
            for j1 in range(4):
                t = w[1, j, j1] * c2
                off = (r1 + j1 + gy * (r2 + j2)) * gx
                for comp in range(d):
                    base = _U(comp * n_grid + off)
                    cu = _U(comp)
                    bu = _U(b)
                    for p in range(lo, hi + 1):
                        row[base + _U(p)] += t * acc[bu, cu, _U(p)]
        for comp in range(d):
            for p in range(lo, hi + 1):
                acc[b, comp, p] = 0.0


@njit(cache=True, inline="always")
def _next_row(part, c0, acc, lo, hi, row_j, row_k, j, k, start, w, d, n_grid, gx, gy):
    """Sample in image row ``(j, k)``: flush the previous row's accumulators if the row changes.

    Returns the updated ``(lo, hi, row_j, row_k)``.
    """
    if j != row_j or k != row_k:
        if hi >= 0:
            _flush(part, c0, acc, lo, hi, row_j, row_k, start, w, d, n_grid, gx, gy)
            lo = gx
            hi = -1
        row_j = j
        row_k = k
    return lo, hi, row_j, row_k


@njit(cache=True, inline="always")
def _sample_scatter(part, c, i, j, k, start, w, ones, v0, v1, v2, d, n_grid, gx, gxy):
    """Per-sample scatter of ``w_k v`` with the table weights (sparse rows)."""
    base = start[0, i] + start[1, j] * gx
    wc = ones
    if d == 3:
        base += start[2, k] * gxy
        wc = w[2, k]
    _scatter(part, c, base, w[0, i], w[1, j], wc, v0, v1, v2, d, n_grid, gx, gxy)


@njit(cache=True, inline="always")
def _grid_sample(points, s, d, i, j, k, rows, ok, start, w, gy, y, data, p2i, morigin, frame, mask,
                 mask_size, mask_p2i, mask_origin, has_mask, with_gradient):
    """Map on-grid sample ``s``, interpolate the moving image there: ``(valid, inside, m, g0, g1, g2)``."""
    inside, y0, y1, y2 = _grid_map(points[s, 0], points[s, 1], points[s, 2] if d == 3 else 0.0, d, i,
                                   j, k, rows, ok, start, w, gy)
    valid, m, g0, g1, g2 = _bspline_moving(y0, y1, y2, d, y, data, p2i, morigin, frame, mask,
                                           mask_size, mask_p2i, mask_origin, has_mask, with_gradient)
    return valid, inside, m, g0, g1, g2


@parallel_kernel
def sums_bspline_grid(kind, points, index, fixed_values, fixed_ref, moving_ref, rows, ok, start, w,
                      n_grid, grid_size, kmat, kvec, size3, data, p2i, morigin, mask, mask_size,
                      mask_p2i, mask_origin, has_mask, with_gradient, rowwise, chunk_size):
    """One pass of MeanSquares or NormalizedCorrelation (``kind``): sums and gradient rows.

    As :func:`._bspline_kernels.sums_bspline` (same outputs), with the table
    map and the row-wise transpose.
    """
    n, d = points.shape
    n_rows = 1 if kind == MEAN_SQUARES else 3
    nc = (n + chunk_size - 1) // chunk_size
    acc = np.zeros((nc, 6))
    part = np.zeros((n_rows * nc, d * n_grid if with_gradient else 0))
    gx = grid_size[0]
    gy = grid_size[1]
    gxy = gx * gy
    for c in prange(nc):
        y = np.empty(d)
        ones = np.ones(4)
        xacc = np.zeros((n_rows, d, gx))
        sums = np.zeros(6)
        frame = _moving_frame(kmat, kvec, size3)
        row_j = -1
        row_k = -1
        lo = gx
        hi = -1
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            i = index[s, 0]
            j = index[s, 1]
            k = index[s, 2]
            if rowwise and with_gradient:
                lo, hi, row_j, row_k = _next_row(part, n_rows * c, xacc, lo, hi, row_j, row_k, j,
                                                 k, start, w, d, n_grid, gx, gy)
            valid, inside, m, g0, g1, g2 = _grid_sample(
                points, s, d, i, j, k, rows, ok, start, w, gy, y, data, p2i, morigin,
                frame, mask, mask_size, mask_p2i, mask_origin, has_mask, with_gradient,
            )
            if not valid:
                continue
            u = _pointwise_add(kind, sums, fixed_values[s], m, fixed_ref, moving_ref)
            if with_gradient and inside:
                for b in range(n_rows):
                    if rowwise:
                        _row_add(xacc[b], i, start, w, u[b] * g0, u[b] * g1, u[b] * g2, d)
                    else:
                        _sample_scatter(part, n_rows * c + b, i, j, k, start, w, ones, u[b] * g0,
                                        u[b] * g1, u[b] * g2, d, n_grid, gx, gxy)
                if rowwise:
                    lo = min(lo, start[0, i])
                    hi = max(hi, start[0, i] + 3)
        if hi >= 0:
            _flush(part, n_rows * c, xacc, lo, hi, row_j, row_k, start, w, d, n_grid, gx, gy)
        for q in range(6):
            acc[c, q] = sums[q]
    return acc, part


@njit(cache=True)
def mattes_bspline_grid_histogram_chunks(c_lo, c_hi, points, index, fixed_bins, rows, ok, start, w,
                                         grid_size, kmat, kvec, size3, data, p2i, morigin, mask,
                                         mask_size, mask_p2i, mask_origin, has_mask, m_min, m_max,
                                         bin_size, n_min, n_bins, cache_t, cache_k, cache_g,
                                         chunk_size, joint, count, used):
    """Mattes pass 1 with the table map, chunks ``c_lo..c_hi-1``, serially (rows of ``joint``, ``count``, ``used``).

    As ``mattes_bspline_histogram`` without the support cache.  A sample
    outside the grid region keeps ``cache_k = -2`` (it adds to the histogram
    but not to the gradient); unused samples ``-1``.
    :func:`mattes_bspline_grid_histogram` runs the chunks in parallel (see
    :func:`regframe._parallel.run_chunks`).
    """
    n, d = points.shape
    caching = cache_k.shape[0] == n
    gy = grid_size[1]
    y = np.empty(d)
    frame = _moving_frame(kmat, kvec, size3)
    for c in range(c_lo, c_hi):
        k_used = 0.0
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            valid, inside, m, g0, g1, g2 = _grid_sample(
                points, s, d, index[s, 0], index[s, 1], index[s, 2], rows, ok, start, w, gy, y, data, p2i, morigin,
                frame, mask, mask_size, mask_p2i, mask_origin, has_mask, caching,
            )
            if caching:
                cache_k[s] = -1
            if not valid or m < m_min or m > m_max:
                continue
            t, kb = _parzen(m, bin_size, n_min, n_bins)
            if caching:
                _cache_sample(cache_t, cache_k, cache_g, s, t, kb if inside else -2, g0, g1, g2)
            _parzen_add(joint, count, c, fixed_bins[s], t, kb, n_bins)
            k_used += 1.0
        used[c] = k_used


@parallel_kernel
def mattes_bspline_grid_histogram(c_lo, c_hi, points, index, fixed_bins, rows, ok, start, w,
                                  grid_size, kmat, kvec, size3, data, p2i, morigin, mask, mask_size,
                                  mask_p2i, mask_origin, has_mask, m_min, m_max, bin_size, n_min,
                                  n_bins, cache_t, cache_k, cache_g, chunk_size, joint, count, used):
    """:func:`mattes_bspline_grid_histogram_chunks` with one chunk per ``prange`` iteration."""
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)  # (prange's index is unsigned: keep the serial kernel's one signature)
        mattes_bspline_grid_histogram_chunks(
            ci, ci + 1, points, index, fixed_bins, rows, ok, start, w, grid_size, kmat, kvec, size3,
            data, p2i, morigin, mask, mask_size, mask_p2i, mask_origin, has_mask, m_min, m_max,
            bin_size, n_min, n_bins, cache_t, cache_k, cache_g, chunk_size, joint, count, used)


@njit(cache=True)
def mattes_bspline_grid_gradient_chunks(c_lo, c_hi, index, fixed_bins, start, w, n_grid, grid_size,
                                        cache_t, cache_k, cache_g, n_bins, log_ratio, rowwise,
                                        chunk_size, part):
    """Mattes pass 2, chunks ``c_lo..c_hi-1``, serially: rows ``sum_s w_s J_s^T g_s`` of ``part (n_chunks, d * n_grid)``.

    From the pass-1 caches; :func:`mattes_bspline_grid_gradient` runs the
    chunks in parallel.
    """
    n = index.shape[0]
    d = grid_size.shape[0]
    gx = grid_size[0]
    gy = grid_size[1]
    gxy = gx * gy
    for c in range(c_lo, c_hi):
        ones = np.ones(4)
        xacc = np.zeros((1, d, gx))
        row_j = -1
        row_k = -1
        lo = gx
        hi = -1
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            kb = cache_k[s]
            if kb < 0:
                continue
            i = index[s, 0]
            j = index[s, 1]
            k = index[s, 2]
            v = _mattes_weight(cache_t[s], kb, fixed_bins[s], n_bins, log_ratio)
            v0 = v * cache_g[s, 0]
            v1 = v * cache_g[s, 1]
            v2 = v * cache_g[s, 2]
            if rowwise:
                lo, hi, row_j, row_k = _next_row(part, c, xacc, lo, hi, row_j, row_k, j, k, start,
                                                 w, d, n_grid, gx, gy)
                _row_add(xacc[0], i, start, w, v0, v1, v2, d)
                lo = min(lo, start[0, i])
                hi = max(hi, start[0, i] + 3)
            else:
                _sample_scatter(part, c, i, j, k, start, w, ones, v0, v1, v2, d, n_grid, gx, gxy)
        if hi >= 0:
            _flush(part, c, xacc, lo, hi, row_j, row_k, start, w, d, n_grid, gx, gy)


@parallel_kernel
def mattes_bspline_grid_gradient(c_lo, c_hi, index, fixed_bins, start, w, n_grid, grid_size,
                                 cache_t, cache_k, cache_g, n_bins, log_ratio, rowwise, chunk_size,
                                 part):
    """:func:`mattes_bspline_grid_gradient_chunks` with one chunk per ``prange`` iteration."""
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)  # (prange's index is unsigned: keep the serial kernel's one signature)
        mattes_bspline_grid_gradient_chunks(ci, ci + 1, index, fixed_bins, start, w, n_grid,
                                            grid_size, cache_t, cache_k, cache_g, n_bins, log_ratio,
                                            rowwise, chunk_size, part)
