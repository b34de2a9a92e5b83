"""Private numba helpers: the cubic B-spline transform point map for the fused kernels.

Point-map and moving-sample helpers for a cubic ``BSplineTransform`` (exactly
that class) and the linear interpolator, used by the one-pass metric kernels
of :mod:`regframe.metrics._bspline_kernels`.  Per sample: locate the point in
the control grid, map it, sample the moving image (fast path: ``kmat``/``kvec``
= moving physical-to-index map; with a moving mask: ``p2i @ (y - origin)``, as
the engine's physical path).

The point map is a scalar, 3-D padded transcription of ``_locate`` +
``_displacement`` of :mod:`regframe.transforms._bspline_kernels` with the *same*
floating-point operations in the same order (the same ``_b3_weights``, ITK's validity
band and the factorised sum ``sum_j2 w2 (sum_j1 w1 (w0 . c))`` of
``_displacement``), so mapped points are bit-identical to
``BSplineTransform.transform_points`` (tested through
:func:`bspline_transform_points`).  Calling those helpers directly costs
~2x more per sample (array arguments, ``(d, 4)`` weight arrays and the
``4**d`` expansion buffers); a 2-D problem uses the third axis as a single
node of weight 1 (``x * 1.0 == x`` exactly).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..transforms._bspline_kernels import _b3_weights, _row_sum
from ._sample_kernels import _in_mask, _lin3


@njit(cache=True, inline="always")
def _bspline_axis(ci, max_limit, band_lo, band_hi, nudged, wa):
    """``_locate`` along one axis: (valid, support start); 1-D weights into ``wa[0:4]``."""
    ok = True
    if ci >= band_lo and ci <= band_hi:
        ci = nudged
    elif ci >= max_limit:
        ok = False
    elif ci < 1.0:
        ok = False
    st = np.floor(ci + 0.5 - 1.5)
    wa[0], wa[1], wa[2], wa[3] = _b3_weights(ci - st - 1.0)
    return ok, st


@njit(cache=True, inline="always")
def _bspline_index(gp2i, a, d, x0, x1, x2, o0, o1, o2):
    """Continuous control-grid index of ``(x0, x1, x2)`` along axis ``a`` (``_locate``'s sum order)."""
    ci = 0.0
    ci += gp2i[a, 0] * (x0 - o0)
    ci += gp2i[a, 1] * (x1 - o1)
    if d == 3:
        ci += gp2i[a, 2] * (x2 - o2)
    return ci


@njit(cache=True, inline="always")
def _bspline_locate(x0, x1, x2, d, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo, band_hi, nudged,
                    wa, wb, wc):
    """Support of ``(x0, x1, x2)``: ``(inside, base)``; 1-D weights into ``wa``, ``wb``, ``wc``.

    ``base`` is the flat control-point number of the first support node
    (meaningful when ``inside``); ``wc`` is left untouched in 2-D.
    """
    ci0 = _bspline_index(gp2i, 0, d, x0, x1, x2, o0, o1, o2)
    ci1 = _bspline_index(gp2i, 1, d, x0, x1, x2, o0, o1, o2)
    ok0, st0 = _bspline_axis(ci0, max_limit[0], band_lo[0], band_hi[0], nudged[0], wa)
    ok1, st1 = _bspline_axis(ci1, max_limit[1], band_lo[1], band_hi[1], nudged[1], wb)
    inside = ok0 and ok1
    st2 = 0.0
    if d == 3:
        ci2 = _bspline_index(gp2i, 2, d, x0, x1, x2, o0, o1, o2)
        ok2, st2 = _bspline_axis(ci2, max_limit[2], band_lo[2], band_hi[2], nudged[2], wc)
        inside = inside and ok2
    base = np.int64(0)
    if inside:
        base = np.int64(st0) + np.int64(st1) * gx + np.int64(st2) * gxy
    return inside, base


@njit(cache=True, inline="always")
def _bspline_map(x0, x1, x2, d, params, n_grid, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo,
                 band_hi, nudged, wa, wb, wc):
    """B-spline image of ``(x0, x1, x2)``: ``(inside, base, y0, y1, y2)``.

    ``base`` is the flat control-point number of the first support node; the
    1-D weights are left in ``wa``, ``wb``, ``wc`` (``wc = [1]`` in 2-D).
    """
    inside, base = _bspline_locate(x0, x1, x2, d, o0, o1, o2, gp2i, gx, gxy, max_limit, band_lo,
                                   band_hi, nudged, wa, wb, wc)
    y0 = x0
    y1 = x1
    y2 = x2
    if inside:
        # factorised tensor-product sum, in the order of the transform's _displacement
        a0, a1, a2, a3 = wa[0], wa[1], wa[2], wa[3]
        n2 = 2 * n_grid
        e0 = 0.0
        e1 = 0.0
        e2 = 0.0
        if d == 2:
            for j1 in range(4):
                f = base + j1 * gx
                b1 = wb[j1]
                e0 += b1 * _row_sum(params, f, a0, a1, a2, a3)
                e1 += b1 * _row_sum(params, n_grid + f, a0, a1, a2, a3)
        else:
            for j2 in range(4):
                p0 = 0.0
                p1 = 0.0
                p2 = 0.0
                for j1 in range(4):
                    f = base + j2 * gxy + j1 * gx
                    b1 = wb[j1]
                    p0 += b1 * _row_sum(params, f, a0, a1, a2, a3)
                    p1 += b1 * _row_sum(params, n_grid + f, a0, a1, a2, a3)
                    p2 += b1 * _row_sum(params, n2 + f, a0, a1, a2, a3)
                c2 = wc[j2]
                e0 += c2 * p0
                e1 += c2 * p1
                e2 += c2 * p2
            y2 = e2 + x2
        y0 = e0 + x0
        y1 = e1 + x1
    return inside, base, y0, y1, y2


@njit(parallel=True, cache=True)
def bspline_transform_points(points, params, n_grid, origin, gp2i, grid_size, max_limit, band_lo,
                             band_hi, nudged, chunk_size):
    """The fused kernels' B-spline point map (for tests: equals ``transform_points`` bit for bit)."""
    n, d = points.shape
    out = np.empty((n, d))
    nc = (n + chunk_size - 1) // chunk_size
    gx = grid_size[0]
    gxy = grid_size[0] * grid_size[1]
    o0 = origin[0]
    o1 = origin[1]
    o2 = origin[2] if d == 3 else 0.0
    for c in prange(nc):
        wa = np.empty(4)
        wb = np.empty(4)
        wc = np.ones(4)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            x0 = points[s, 0]
            x1 = points[s, 1]
            x2 = points[s, 2] if d == 3 else 0.0
            inside, base, y0, y1, y2 = _bspline_map(x0, x1, x2, d, params, n_grid, o0, o1, o2,
                                                    gp2i, gx, gxy, max_limit, band_lo, band_hi,
                                                    nudged, wa, wb, wc)
            out[s, 0] = y0
            out[s, 1] = y1
            if d == 3:
                out[s, 2] = y2
    return out


@njit(cache=True, inline="always")
def _bspline_moving(y0, y1, y2, d, y, data, p2i, morigin, frame, mask, mask_size, mask_p2i,
                    mask_origin, has_mask, with_gradient):
    """Moving value and *physical* gradient at the mapped point; ``(ok, m, g0, g1, g2)``.

    ``frame`` is :func:`_moving_frame` of the moving image (fast path).
    """
    k00, k01, k02, k10, k11, k12, k20, k21, k22, q0, q1, q2, nx, ny, nz = frame
    ok = True
    if has_mask:
        y[0] = y0
        y[1] = y1
        if d == 3:
            y[2] = y2
        ok = _in_mask(y, mask, mask_size, mask_p2i, mask_origin)
        c0 = p2i[0, 0] * (y0 - morigin[0]) + p2i[0, 1] * (y1 - morigin[1])
        c1 = p2i[1, 0] * (y0 - morigin[0]) + p2i[1, 1] * (y1 - morigin[1])
        c2 = 0.0
        if d == 3:
            c0 += p2i[0, 2] * (y2 - morigin[2])
            c1 += p2i[1, 2] * (y2 - morigin[2])
            c2 = (p2i[2, 0] * (y0 - morigin[0]) + p2i[2, 1] * (y1 - morigin[1])
                  + p2i[2, 2] * (y2 - morigin[2]))
    else:
        c0 = k00 * y0 + k01 * y1 + k02 * y2 + q0
        c1 = k10 * y0 + k11 * y1 + k12 * y2 + q1
        c2 = k20 * y0 + k21 * y1 + k22 * y2 + q2
    m = 0.0
    p0 = 0.0
    p1 = 0.0
    p2 = 0.0
    if ok:
        ok, m, g0, g1, g2 = _lin3(data, c0, c1, c2, nx, ny, nz, with_gradient)
        if ok and with_gradient:
            p0 = p2i[0, 0] * g0 + p2i[1, 0] * g1
            p1 = p2i[0, 1] * g0 + p2i[1, 1] * g1
            if d == 3:
                p0 += p2i[2, 0] * g2
                p1 += p2i[2, 1] * g2
                p2 = p2i[0, 2] * g0 + p2i[1, 2] * g1 + p2i[2, 2] * g2
    return ok, m, p0, p1, p2
