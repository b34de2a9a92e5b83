"""Private fused numba kernels of the three metrics for a linear transform.

Every fused kernel walks its chunk with the same prologue: the sample position
(x0, x1, x2) (padded to 3-D), then either the fast path (continuous index from
kmat/kvec, _lin3, a moving mask by _mask_test, index-space gradient) or the
physical path (mode 2: _physical_sample, physical gradient).  ``physical`` must
be True for mode 2 (the gradient sums are then physical) and None otherwise
(index-space sums); see :mod:`._sample_kernels` for why None.

Each pass is a pair: ``*_chunks(c_lo, c_hi, ..., outputs)``, a serial kernel
that computes chunks ``c_lo..c_hi-1`` into their rows of the caller's output
arrays, and a parallel kernel of the same signature whose ``prange`` body calls
it for one chunk; :func:`regframe._parallel.run_chunks` picks one by problem
size (the parallel one is compiled only when a problem needs it).

Conventions (positions, fast/physical paths, gradient-sum blocks, chunking):
:mod:`._sample_kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel
from ._parzen_kernels import _cache_sample, _mattes_weight, _parzen, _parzen_add
from ._sample_kernels import (BLOCK, _lin3, _mask_frame, _mask_test, _moving_frame, _next_position, _physical_sample,
                              _start_position)


# --------------------------------------------------------------------------- MeanSquares


@njit(cache=True)
def mean_squares_linear_chunks(c_lo, c_hi, points, dense, grid_size, fixed, kmat, kvec, size3,
                               center3, a, o, data, size, p2i, origin, spacing, mask, mask_size,
                               mask_p2i, mask_origin, has_mask, physical, mode, chunk_size, part):
    """Fused MeanSquares pass for a linear transform (map, interpolate, accumulate), serially.

    Row ``c`` of ``part (n_chunks, 2 + 12)`` receives chunk ``c``'s ``sum (m -
    f)^2``, valid count, then (``mode > 0``) the gradient-sum block with
    weights ``2 (m - f)``, for the chunks ``c_lo..c_hi-1``.
    :func:`mean_squares_linear` runs the chunks in parallel (see
    :func:`regframe._parallel.run_chunks`).
    """
    n = fixed.shape[0]
    d = a.shape[0]
    with_gradient = mode > 0
    for c in range(c_lo, c_hi):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        g = np.zeros(d)
        k00, k01, k02 = kmat[0, 0], kmat[0, 1], kmat[0, 2]
        k10, k11, k12 = kmat[1, 0], kmat[1, 1], kmat[1, 2]
        k20, k21, k22 = kmat[2, 0], kmat[2, 1], kmat[2, 2]
        q0, q1, q2 = kvec[0], kvec[1], kvec[2]
        nx, ny, nz = size3[0], size3[1], size3[2]
        if has_mask is not None:  # pruned without a mask (no mask code compiled)
            mask_frame = _mask_frame(a, o, mask_p2i, mask_origin, mask_size)
        cx, cy, cz = center3[0], center3[1], center3[2]
        gs0, gs1 = float(grid_size[0]), float(grid_size[1])
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        x0, x1, x2 = _start_position(start, grid_size)
        sq = 0.0
        cnt = 0.0
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = 0.0
        v0 = v1 = v2 = 0.0
        for s in range(start, stop):
            x0, x1, x2 = _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1)
            if physical is not None:
                xs[0] = x0
                xs[1] = x1
                if d == 3:
                    xs[2] = x2
                ok, m = _physical_sample(xs, a, o, data, size, p2i, origin, spacing, mask,
                                         mask_size, mask_p2i, mask_origin, has_mask, mode,
                                         y, yp, ci, g)
                g0 = g[0]
                g1 = g[1]
                g2 = g[2] if d == 3 else 0.0
            else:
                c0 = k00 * x0 + k01 * x1 + k02 * x2 + q0
                c1 = k10 * x0 + k11 * x1 + k12 * x2 + q1
                c2 = k20 * x0 + k21 * x1 + k22 * x2 + q2
                ok, m, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, with_gradient)
                if has_mask is not None:
                    ok = ok and _mask_test(mask, mask_frame, x0, x1, x2)
            if not ok:
                continue
            r = m - fixed[s]
            sq += r * r
            cnt += 1.0
            if with_gradient:
                w = 2.0 * r
                r0 = x0 - cx
                r1 = x1 - cy
                r2 = x2 - cz
                w0 = w * g0
                w1 = w * g1
                w2 = w * g2
                s00 += w0 * r0
                s01 += w0 * r1
                s02 += w0 * r2
                s10 += w1 * r0
                s11 += w1 * r1
                s12 += w1 * r2
                s20 += w2 * r0
                s21 += w2 * r1
                s22 += w2 * r2
                v0 += w0
                v1 += w1
                v2 += w2
        part[c, 0] = sq
        part[c, 1] = cnt
        part[c, 2] = s00
        part[c, 3] = s01
        part[c, 4] = s02
        part[c, 5] = s10
        part[c, 6] = s11
        part[c, 7] = s12
        part[c, 8] = s20
        part[c, 9] = s21
        part[c, 10] = s22
        part[c, 11] = v0
        part[c, 12] = v1
        part[c, 13] = v2


@parallel_kernel
def mean_squares_linear(c_lo, c_hi, points, dense, grid_size, fixed, kmat, kvec, size3, center3,
                        a, o, data, size, p2i, origin, spacing, mask, mask_size, mask_p2i,
                        mask_origin, has_mask, physical, mode, chunk_size, part):
    """:func:`mean_squares_linear_chunks` with one chunk per ``prange`` iteration."""
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)  # (prange's index is unsigned: keep the serial kernel's one signature)
        mean_squares_linear_chunks(ci, ci + 1, points, dense, grid_size, fixed, kmat, kvec, size3,
                                   center3, a, o, data, size, p2i, origin, spacing, mask, mask_size,
                                   mask_p2i, mask_origin, has_mask, physical, mode, chunk_size, part)


# --------------------------------------------------------------------------- NormalizedCorrelation


@njit(cache=True, inline="always")
def _correlation_add(sums, fs, ms):
    """Add a valid sample to ``(count, sum f', sum m', sum f'^2, sum m'^2, sum f'm')``."""
    sums[0] += 1.0
    sums[1] += fs
    sums[2] += ms
    sums[3] += fs * fs
    sums[4] += ms * ms
    sums[5] += fs * ms
    return fs, ms


@njit(cache=True)
def correlation_linear_chunks(c_lo, c_hi, points, dense, grid_size, fixed, fixed_ref, moving_ref,
                              kmat, kvec, size3, center3, a, o, data, size, p2i, origin, spacing,
                              mask, mask_size, mask_p2i, mask_origin, has_mask, physical, mode,
                              chunk_size, part):
    """Fused NormalizedCorrelation pass for a linear transform, chunks ``c_lo..c_hi-1``, serially.

    With ``f' = f - fixed_ref`` and ``m' = m - moving_ref`` (shifts that keep
    the one-pass sums well conditioned) row ``c`` of ``part (n_chunks, 6 + 36)``
    receives: count, ``sum f'``, ``sum m'``, ``sum f'^2``, ``sum m'^2``,
    ``sum f'm'`` and, if ``mode > 0``, three gradient-sum blocks with weights
    ``1``, ``f'``, ``m'``.  :func:`correlation_linear` runs the chunks in
    parallel (see :func:`regframe._parallel.run_chunks`).
    """
    n = fixed.shape[0]
    d = a.shape[0]
    width = 6 + 3 * BLOCK
    with_gradient = mode > 0
    for c in range(c_lo, c_hi):
        xs = np.empty(d)
        y = np.empty(d)
        yp = np.empty(d)
        ci = np.empty(d)
        g = np.zeros(d)
        acc = np.zeros(width)
        k00, k01, k02 = kmat[0, 0], kmat[0, 1], kmat[0, 2]
        k10, k11, k12 = kmat[1, 0], kmat[1, 1], kmat[1, 2]
        k20, k21, k22 = kmat[2, 0], kmat[2, 1], kmat[2, 2]
        q0, q1, q2 = kvec[0], kvec[1], kvec[2]
        nx, ny, nz = size3[0], size3[1], size3[2]
        if has_mask is not None:  # pruned without a mask (no mask code compiled)
            mask_frame = _mask_frame(a, o, mask_p2i, mask_origin, mask_size)
        cx, cy, cz = center3[0], center3[1], center3[2]
        gs0, gs1 = float(grid_size[0]), float(grid_size[1])
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        x0, x1, x2 = _start_position(start, grid_size)
        for s in range(start, stop):
            x0, x1, x2 = _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1)
            if physical is not None:
                xs[0] = x0
                xs[1] = x1
                if d == 3:
                    xs[2] = x2
                ok, m = _physical_sample(xs, a, o, data, size, p2i, origin, spacing, mask,
                                         mask_size, mask_p2i, mask_origin, has_mask, mode,
                                         y, yp, ci, g)
                g0 = g[0]
                g1 = g[1]
                g2 = g[2] if d == 3 else 0.0
            else:
                c0 = k00 * x0 + k01 * x1 + k02 * x2 + q0
                c1 = k10 * x0 + k11 * x1 + k12 * x2 + q1
                c2 = k20 * x0 + k21 * x1 + k22 * x2 + q2
                ok, m, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, with_gradient)
                if has_mask is not None:
                    ok = ok and _mask_test(mask, mask_frame, x0, x1, x2)
            if not ok:
                continue
            fs, ms = _correlation_add(acc, fixed[s] - fixed_ref, m - moving_ref)
            if with_gradient:
                r0 = x0 - cx
                r1 = x1 - cy
                r2 = x2 - cz
                for b in range(3):
                    wb = 1.0 if b == 0 else (fs if b == 1 else ms)
                    off = 6 + b * BLOCK
                    w0 = wb * g0
                    w1 = wb * g1
                    w2 = wb * g2
                    acc[off] += w0 * r0
                    acc[off + 1] += w0 * r1
                    acc[off + 2] += w0 * r2
                    acc[off + 3] += w1 * r0
                    acc[off + 4] += w1 * r1
                    acc[off + 5] += w1 * r2
                    acc[off + 6] += w2 * r0
                    acc[off + 7] += w2 * r1
                    acc[off + 8] += w2 * r2
                    acc[off + 9] += w0
                    acc[off + 10] += w1
                    acc[off + 11] += w2
        for k in range(width):
            part[c, k] = acc[k]


@parallel_kernel
def correlation_linear(c_lo, c_hi, points, dense, grid_size, fixed, fixed_ref, moving_ref,
                       kmat, kvec, size3, center3, a, o, data, size, p2i, origin, spacing,
                       mask, mask_size, mask_p2i, mask_origin, has_mask, physical, mode, chunk_size,
                       part):
    """:func:`correlation_linear_chunks` with one chunk per ``prange`` iteration."""
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)  # (prange's index is unsigned: keep the serial kernel's one signature)
        correlation_linear_chunks(ci, ci + 1, points, dense, grid_size, fixed, fixed_ref, moving_ref,
                                  kmat, kvec, size3, center3, a, o, data, size, p2i, origin, spacing,
                                  mask, mask_size, mask_p2i, mask_origin, has_mask, physical, mode,
                                  chunk_size, part)


# --------------------------------------------------------------------------- Mattes


@njit(cache=True)
def mattes_linear_histogram_chunks(c_lo, c_hi, points, dense, grid_size, fixed_bins, kmat, kvec,
                                   size3, a, o, data, size, p2i, origin, spacing, mask, mask_size,
                                   mask_p2i, mask_origin, has_mask, physical, mode, m_min, m_max,
                                   bin_size, n_min, n_bins, cache_t, cache_k, cache_g, chunk_size,
                                   joint, count, used):
    """Fused Mattes pass 1 for a linear transform, chunks ``c_lo..c_hi-1``, serially.

    Map, interpolate and add to the Parzen histogram: chunk ``c`` fills row
    ``c`` of ``joint (n_chunks, B*B)`` (row = fixed bin), ``count (n_chunks,
    B)`` (fixed-bin counts) and ``used (n_chunks,)``, as
    :func:`mattes_histogram` returns them.  When the caches have one row per
    sample (``cache_k.shape[0] == n``; pass empty arrays otherwise) the moving
    gradient (gradient ``mode`` as in :func:`sample_moving`) is evaluated too and
    every sample's Parzen coordinate ``t``, bin ``k`` (``-1`` for an unused
    sample) and gradient are stored, so that pass 2
    (:func:`mattes_linear_gradient_chunks`) does not interpolate again.
    :func:`mattes_linear_histogram` runs the chunks in parallel (see
    :func:`regframe._parallel.run_chunks`).
    """
    n = fixed_bins.shape[0]
    d = a.shape[0]
    caching = cache_k.shape[0] == n
    xs = np.empty(d)
    y = np.empty(d)
    yp = np.empty(d)
    ci = np.empty(d)
    g = np.zeros(d)
    k00, k01, k02, k10, k11, k12, k20, k21, k22, q0, q1, q2, nx, ny, nz = _moving_frame(kmat, kvec, size3)
    if has_mask is not None:  # pruned without a mask (no mask code compiled)
        mask_frame = _mask_frame(a, o, mask_p2i, mask_origin, mask_size)
    gs0, gs1 = float(grid_size[0]), float(grid_size[1])
    for c in range(c_lo, c_hi):
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        x0, x1, x2 = _start_position(start, grid_size)
        k_used = 0.0
        for s in range(start, stop):
            x0, x1, x2 = _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1)
            if physical is not None:
                xs[0] = x0
                xs[1] = x1
                if d == 3:
                    xs[2] = x2
                ok, m = _physical_sample(xs, a, o, data, size, p2i, origin, spacing, mask,
                                         mask_size, mask_p2i, mask_origin, has_mask,
                                         mode if caching else 0, y, yp, ci, g)
                g0 = g[0]
                g1 = g[1]
                g2 = g[2] if d == 3 else 0.0
            else:
                c0 = k00 * x0 + k01 * x1 + k02 * x2 + q0
                c1 = k10 * x0 + k11 * x1 + k12 * x2 + q1
                c2 = k20 * x0 + k21 * x1 + k22 * x2 + q2
                ok, m, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, caching)
                if has_mask is not None:
                    ok = ok and _mask_test(mask, mask_frame, x0, x1, x2)
            if caching:
                cache_k[s] = -1
            if not ok or m < m_min or m > m_max:
                continue
            t, k = _parzen(m, bin_size, n_min, n_bins)
            if caching:
                _cache_sample(cache_t, cache_k, cache_g, s, t, k, g0, g1, g2)
            _parzen_add(joint, count, c, fixed_bins[s], t, k, n_bins)
            k_used += 1.0
        used[c] = k_used


@parallel_kernel
def mattes_linear_histogram(c_lo, c_hi, points, dense, grid_size, fixed_bins, kmat, kvec, size3,
                            a, o, data, size, p2i, origin, spacing, mask, mask_size, mask_p2i,
                            mask_origin, has_mask, physical, mode, m_min, m_max, bin_size, n_min,
                            n_bins, cache_t, cache_k, cache_g, chunk_size, joint, count, used):
    """:func:`mattes_linear_histogram_chunks` with one chunk per ``prange`` iteration.

    The loop body is one call of the serial kernel (not inlined), so numba's
    parallel passes see a one-line body and both share the chunk code.
    """
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)  # (prange's index is unsigned: keep the serial kernel's one signature)
        mattes_linear_histogram_chunks(
            ci, ci + 1, points, dense, grid_size, fixed_bins, kmat, kvec, size3, a, o, data, size,
            p2i, origin, spacing, mask, mask_size, mask_p2i, mask_origin, has_mask, physical, mode,
            m_min, m_max, bin_size, n_min, n_bins, cache_t, cache_k, cache_g, chunk_size, joint,
            count, used)


@njit(cache=True)
def mattes_linear_gradient_chunks(c_lo, c_hi, points, dense, grid_size, fixed_bins, center3,
                                  cache_t, cache_k, cache_g, n_bins, log_ratio, chunk_size, part):
    """Fused Mattes pass 2 for a linear transform from the caches of pass 1, chunks ``c_lo..c_hi-1``.

    Forms ``w_s`` (see :func:`mattes_weights`) for every used sample and
    accumulates one gradient-sum block with weights ``w_s`` into row ``c`` of
    ``part (n_chunks, 12)`` (outer products with ``x - c``, then the plain
    sums).  :func:`mattes_linear_gradient` runs the chunks in parallel.
    """
    n = fixed_bins.shape[0]
    d = points.shape[1]  # (dense sets pass an empty (0, d) array)
    cx, cy, cz = center3[0], center3[1], center3[2]
    gs0, gs1 = float(grid_size[0]), float(grid_size[1])
    for c in range(c_lo, c_hi):
        start = c * chunk_size
        stop = min(start + chunk_size, n)
        x0, x1, x2 = _start_position(start, grid_size)
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = 0.0
        v0 = v1 = v2 = 0.0
        for s in range(start, stop):
            x0, x1, x2 = _next_position(points, s, start, dense, x0, x1, x2, gs0, gs1)
            k = cache_k[s]
            if k < 0:
                continue
            w = _mattes_weight(cache_t[s], k, fixed_bins[s], n_bins, log_ratio)
            r0 = x0 - cx
            r1 = x1 - cy
            w0 = w * cache_g[s, 0]
            w1 = w * cache_g[s, 1]
            s00 += w0 * r0
            s01 += w0 * r1
            s10 += w1 * r0
            s11 += w1 * r1
            v0 += w0
            v1 += w1
            if d == 3:  # (in 2-D the third row and column are exact zeros)
                r2 = x2 - cz
                w2 = w * cache_g[s, 2]
                s02 += w0 * r2
                s12 += w1 * r2
                s20 += w2 * r0
                s21 += w2 * r1
                s22 += w2 * r2
                v2 += w2
        part[c, 0] = s00
        part[c, 1] = s01
        part[c, 2] = s02
        part[c, 3] = s10
        part[c, 4] = s11
        part[c, 5] = s12
        part[c, 6] = s20
        part[c, 7] = s21
        part[c, 8] = s22
        part[c, 9] = v0
        part[c, 10] = v1
        part[c, 11] = v2


@parallel_kernel
def mattes_linear_gradient(c_lo, c_hi, points, dense, grid_size, fixed_bins, center3,
                           cache_t, cache_k, cache_g, n_bins, log_ratio, chunk_size, part):
    """:func:`mattes_linear_gradient_chunks` with one chunk per ``prange`` iteration."""
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)
        mattes_linear_gradient_chunks(ci, ci + 1, points, dense, grid_size, fixed_bins, center3,
                                      cache_t, cache_k, cache_g, n_bins, log_ratio, chunk_size, part)
