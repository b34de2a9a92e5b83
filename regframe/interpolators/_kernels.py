"""Private numba kernels of the interpolators.

Every kernel is n-D (loops over ``ndim = points.shape[1]``), works on the image
as a flat float64 array in ITK raster order (x fastest; strides
``(1, nx, nx*ny, ...)`` computed from ``size``, which is in ITK order), and is
parallel over fixed-size chunks of points (``chunk_size``).  No kernel reduces
across points, so results are independent of the thread count by
construction.  No fastmath.

Common arguments
----------------
points : (n, d) float64, C-contiguous
    Physical points (x, y[, z]).
data : (n_voxels,) float64
    Image values (or B-spline coefficients) in ITK raster order.
size : (d,) int64
    Image size in ITK order.
p2i : (d, d) float64
    Physical-to-index matrix ``inv(direction @ diag(spacing))``.
origin : (d,) float64
default_value : float
    Value returned for points outside the buffer.
chunk_size : int
    Points per ``prange`` iteration.

"Inside" is ITK's ``IsInsideBuffer``: continuous index in
``[-0.5, size - 0.5)`` on every axis.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel


@njit(cache=True, inline="always")
def _continuous_index(points, s, p2i, origin, out):
    """``out = p2i @ (points[s] - origin)``; the ITK evaluation order."""
    d = points.shape[1]
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += p2i[i, j] * (points[s, j] - origin[j])
        out[i] = acc


@njit(cache=True, inline="always")
def _inside(ci, size):
    for i in range(ci.shape[0]):
        if not (ci[i] >= -0.5 and ci[i] < size[i] - 0.5):
            return False
    return True


@njit(cache=True, inline="always")
def _linear_setup(ci, size, frac, step, flat_zero):
    """Base offset, fractions, upper-neighbour strides and zero-derivative flags.

    ITK's ``LinearInterpolateImageFunction`` cell choice: ``base =
    max(floor(ci), 0)``, ``frac = ci - base`` (negative fractions in the low
    skirt act as 0), upper neighbour ``min(base + 1, size - 1)``.
    ``flat_zero[i]`` is True where the interpolant is constant along axis
    ``i`` (low skirt ``ci < 0``; the high skirt and ``size == 1`` give a zero
    upper stride, which zeroes the derivative by itself).
    """
    d = ci.shape[0]
    base = 0
    stride = 1
    for i in range(d):
        c = ci[i]
        b = math.floor(c)
        if b < 0.0:
            b = 0.0
        f = c - b
        if f < 0.0:
            f = 0.0
            flat_zero[i] = True
        else:
            flat_zero[i] = False
        ib = np.int64(b)
        base += ib * stride
        step[i] = stride if ib + 1 < size[i] else 0
        frac[i] = f
        stride *= size[i]
    return base


@njit(cache=True, inline="always")
def _corner_offsets(base, step, offsets):
    """Flat offsets of the ``2**d`` cell corners.

    Bit ``i`` of the corner number selects the upper neighbour on axis ``i``.
    """
    d = step.shape[0]
    offsets[0] = base
    n = 1
    for i in range(d):
        st = step[i]
        for c in range(n):
            offsets[n + c] = offsets[c] + st
        n *= 2


@njit(cache=True, inline="always")
def _lerp_reduce(corners, frac, diff_axis, tmp):
    """Reduce the ``2**d`` corner values axis by axis.

    Axis ``i`` combines pairs ``(a, b)`` as ``a + f_i (b - a)`` (ITK's
    form), or as ``b - a`` when ``i == diff_axis`` (the derivative along
    that axis in index units).  ``diff_axis = -1`` gives the value.
    """
    d = frac.shape[0]
    m = corners.shape[0]
    for c in range(m):
        tmp[c] = corners[c]
    for i in range(d):
        m //= 2
        f = frac[i]
        if i == diff_axis:
            for p in range(m):
                tmp[p] = tmp[2 * p + 1] - tmp[2 * p]
        else:
            for p in range(m):
                a = tmp[2 * p]
                tmp[p] = a + f * (tmp[2 * p + 1] - a)
    return tmp[0]


@njit(cache=True, inline="always")
def _linear_value(data, base, frac, step, offsets, corners, tmp):
    _corner_offsets(base, step, offsets)
    for c in range(corners.shape[0]):
        corners[c] = data[offsets[c]]
    return _lerp_reduce(corners, frac, -1, tmp)


@parallel_kernel
def linear_values(points, data, size, p2i, origin, default_value, chunk_size):
    """Multilinear values (ITK semantics).  Returns ``(values (n,), inside (n,))``."""
    n, d = points.shape
    values = np.empty(n)
    inside = np.zeros(n, dtype=np.bool_)
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        ci = np.empty(d)
        frac = np.empty(d)
        step = np.empty(d, dtype=np.int64)
        flat_zero = np.empty(d, dtype=np.bool_)
        offsets = np.empty(1 << d, dtype=np.int64)
        corners = np.empty(1 << d)
        tmp = np.empty(1 << d)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            _continuous_index(points, s, p2i, origin, ci)
            if not _inside(ci, size):
                values[s] = default_value
                continue
            inside[s] = True
            base = _linear_setup(ci, size, frac, step, flat_zero)
            values[s] = _linear_value(data, base, frac, step, offsets, corners, tmp)
    return values, inside


@parallel_kernel
def linear_values_gradients(points, data, size, p2i, origin, default_value, chunk_size):
    """Multilinear values and exact physical gradients of the interpolant.

    Within a cell the gradient is the derivative of the multilinear
    function; on a grid line the cell of the value is used (right-sided
    derivative); it is zero along axes where the interpolant is constant
    (half-voxel skirt, single-voxel axes).  Index gradients are mapped to
    physical covariant vectors with ``p2i.T``.

    Returns ``(values (n,), gradients (n, d), inside (n,))``.
    """
    n, d = points.shape
    values = np.empty(n)
    grads = np.zeros((n, d))
    inside = np.zeros(n, dtype=np.bool_)
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        ci = np.empty(d)
        frac = np.empty(d)
        step = np.empty(d, dtype=np.int64)
        flat_zero = np.empty(d, dtype=np.bool_)
        gidx = np.empty(d)
        offsets = np.empty(1 << d, dtype=np.int64)
        corners = np.empty(1 << d)
        tmp = np.empty(1 << d)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            _continuous_index(points, s, p2i, origin, ci)
            if not _inside(ci, size):
                values[s] = default_value
                continue
            inside[s] = True
            base = _linear_setup(ci, size, frac, step, flat_zero)
            values[s] = _linear_value(data, base, frac, step, offsets, corners, tmp)
            for k in range(d):
                if flat_zero[k] or step[k] == 0:
                    gidx[k] = 0.0
                else:
                    gidx[k] = _lerp_reduce(corners, frac, k, tmp)
            for j in range(d):
                g = 0.0
                for i in range(d):
                    g += p2i[i, j] * gidx[i]
                grads[s, j] = g
    return values, grads, inside


# --------------------------------------------------------------------------
# 2-D and 3-D specialisations of the linear kernels.  Benchmark (2 M random
# 3-D points, 40x30x20 image, this machine): n-D kernel 50-60 ms, this
# 3-D kernel 16-22 ms, so the hot path is specialised.  They use the same
# reduction order as ``_lerp_reduce`` (axis 0 first, ITK's ``a + f (b - a)``
# form), so their results are bitwise equal to the n-D kernels (tested).
# --------------------------------------------------------------------------


@njit(cache=True)
def linear3_values_gradients_chunks(c_lo, c_hi, points, data, size, p2i, origin, default_value,
                                    with_gradient, chunk_size, values, grads, inside):
    """3-D multilinear values (and physical gradients if ``with_gradient``), serially.

    Fills ``values (n,)``, ``grads (n, 3)`` (or ``(n, 0)`` without gradient) and
    ``inside (n,)`` (zeros on entry) for the points of chunks ``c_lo..c_hi-1``;
    :func:`linear3_values_gradients` runs the chunks in parallel (see
    :func:`regframe._parallel.run_chunks`).
    """
    n = points.shape[0]
    nx = size[0]
    ny = size[1]
    nz = size[2]
    for s in range(c_lo * chunk_size, min(c_hi * chunk_size, n)):
        x = points[s, 0] - origin[0]
        y = points[s, 1] - origin[1]
        z = points[s, 2] - origin[2]
        c0 = p2i[0, 0] * x + p2i[0, 1] * y + p2i[0, 2] * z
        c1 = p2i[1, 0] * x + p2i[1, 1] * y + p2i[1, 2] * z
        c2 = p2i[2, 0] * x + p2i[2, 1] * y + p2i[2, 2] * z
        if not (
            c0 >= -0.5 and c0 < nx - 0.5 and c1 >= -0.5 and c1 < ny - 0.5
            and c2 >= -0.5 and c2 < nz - 0.5
        ):
            values[s] = default_value
            if with_gradient:
                for j in range(3):
                    grads[s, j] = 0.0
            continue
        inside[s] = True
        b0 = max(math.floor(c0), 0.0)
        b1 = max(math.floor(c1), 0.0)
        b2 = max(math.floor(c2), 0.0)
        f0 = c0 - b0
        f1 = c1 - b1
        f2 = c2 - b2
        flat0 = f0 < 0.0
        flat1 = f1 < 0.0
        flat2 = f2 < 0.0
        if flat0:
            f0 = 0.0
        if flat1:
            f1 = 0.0
        if flat2:
            f2 = 0.0
        i0 = np.int64(b0)
        i1 = np.int64(b1)
        i2 = np.int64(b2)
        s0 = 1 if i0 + 1 < nx else 0
        s1 = nx if i1 + 1 < ny else 0
        s2 = nx * ny if i2 + 1 < nz else 0
        o = i0 + nx * (i1 + ny * i2)
        v000 = data[o]
        v100 = data[o + s0]
        v010 = data[o + s1]
        v110 = data[o + s0 + s1]
        v001 = data[o + s2]
        v101 = data[o + s0 + s2]
        v011 = data[o + s1 + s2]
        v111 = data[o + s0 + s1 + s2]
        a00 = v000 + f0 * (v100 - v000)
        a10 = v010 + f0 * (v110 - v010)
        a01 = v001 + f0 * (v101 - v001)
        a11 = v011 + f0 * (v111 - v011)
        e0 = a00 + f1 * (a10 - a00)
        e1 = a01 + f1 * (a11 - a01)
        values[s] = e0 + f2 * (e1 - e0)
        if with_gradient:
            g0 = 0.0
            g1 = 0.0
            g2 = 0.0
            if not flat0 and s0 != 0:
                d00 = v100 - v000
                d10 = v110 - v010
                d01 = v101 - v001
                d11 = v111 - v011
                h0 = d00 + f1 * (d10 - d00)
                h1 = d01 + f1 * (d11 - d01)
                g0 = h0 + f2 * (h1 - h0)
            if not flat1 and s1 != 0:
                k0 = a10 - a00
                k1 = a11 - a01
                g1 = k0 + f2 * (k1 - k0)
            if not flat2 and s2 != 0:
                g2 = e1 - e0
            for j in range(3):
                grads[s, j] = p2i[0, j] * g0 + p2i[1, j] * g1 + p2i[2, j] * g2
@parallel_kernel
def linear3_values_gradients(c_lo, c_hi, points, data, size, p2i, origin, default_value,
                             with_gradient, chunk_size, values, grads, inside):
    """:func:`linear3_values_gradients_chunks` with one chunk per ``prange`` iteration."""
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)  # (prange's index is unsigned: keep the serial kernel's one signature)
        linear3_values_gradients_chunks(ci, ci + 1, points, data, size, p2i, origin, default_value,
                                        with_gradient, chunk_size, values, grads, inside)


@njit(cache=True)
def linear2_values_gradients_chunks(c_lo, c_hi, points, data, size, p2i, origin, default_value,
                                    with_gradient, chunk_size, values, grads, inside):
    """2-D multilinear values (and physical gradients if ``with_gradient``), serially.

    Fills ``values (n,)``, ``grads (n, 2)`` (or ``(n, 0)`` without gradient) and
    ``inside (n,)`` (zeros on entry) for the points of chunks ``c_lo..c_hi-1``;
    :func:`linear2_values_gradients` runs the chunks in parallel (see
    :func:`regframe._parallel.run_chunks`).
    """
    n = points.shape[0]
    nx = size[0]
    ny = size[1]
    for s in range(c_lo * chunk_size, min(c_hi * chunk_size, n)):
        x = points[s, 0] - origin[0]
        y = points[s, 1] - origin[1]
        c0 = p2i[0, 0] * x + p2i[0, 1] * y
        c1 = p2i[1, 0] * x + p2i[1, 1] * y
        if not (c0 >= -0.5 and c0 < nx - 0.5 and c1 >= -0.5 and c1 < ny - 0.5):
            values[s] = default_value
            if with_gradient:
                for j in range(2):
                    grads[s, j] = 0.0
            continue
        inside[s] = True
        b0 = max(math.floor(c0), 0.0)
        b1 = max(math.floor(c1), 0.0)
        f0 = c0 - b0
        f1 = c1 - b1
        flat0 = f0 < 0.0
        flat1 = f1 < 0.0
        if flat0:
            f0 = 0.0
        if flat1:
            f1 = 0.0
        i0 = np.int64(b0)
        i1 = np.int64(b1)
        s0 = 1 if i0 + 1 < nx else 0
        s1 = nx if i1 + 1 < ny else 0
        o = i0 + nx * i1
        v00 = data[o]
        v10 = data[o + s0]
        v01 = data[o + s1]
        v11 = data[o + s0 + s1]
        a0 = v00 + f0 * (v10 - v00)
        a1 = v01 + f0 * (v11 - v01)
        values[s] = a0 + f1 * (a1 - a0)
        if with_gradient:
            g0 = 0.0
            g1 = 0.0
            if not flat0 and s0 != 0:
                d0 = v10 - v00
                d1 = v11 - v01
                g0 = d0 + f1 * (d1 - d0)
            if not flat1 and s1 != 0:
                g1 = a1 - a0
            for j in range(2):
                grads[s, j] = p2i[0, j] * g0 + p2i[1, j] * g1
@parallel_kernel
def linear2_values_gradients(c_lo, c_hi, points, data, size, p2i, origin, default_value,
                             with_gradient, chunk_size, values, grads, inside):
    """:func:`linear2_values_gradients_chunks` with one chunk per ``prange`` iteration."""
    for c in prange(c_lo, c_hi):
        ci = np.int64(c)  # (prange's index is unsigned: keep the serial kernel's one signature)
        linear2_values_gradients_chunks(ci, ci + 1, points, data, size, p2i, origin, default_value,
                                        with_gradient, chunk_size, values, grads, inside)


@parallel_kernel
def linear_central_difference(points, data, size, p2i, origin, spacing, chunk_size):
    """ITK ``CentralDifferenceImageFunction::Evaluate(point)`` on the linear interpolant.

    For each world axis ``a``: probes ``y -/+ 0.5 * spacing[a] * e_a``; the
    component is 0 if either probe is outside the buffer, otherwise
    ``(M(y+) - M(y-)) / (y+[a] - y-[a])`` (the floating-point probe distance,
    ``~spacing[a]``; 0 if it is below ``10 * eps``, as ITK).  The result is a
    physical gradient.
    Returns ``(n, d)`` gradients.
    """
    n, d = points.shape
    grads = np.zeros((n, d))
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        probe = np.empty((1, d))
        ci = np.empty(d)
        frac = np.empty(d)
        step = np.empty(d, dtype=np.int64)
        flat_zero = np.empty(d, dtype=np.bool_)
        offsets = np.empty(1 << d, dtype=np.int64)
        corners = np.empty(1 << d)
        tmp = np.empty(1 << d)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            for a in range(d):
                delta = 0.5 * spacing[a]
                for j in range(d):
                    probe[0, j] = points[s, j]
                probe[0, a] = points[s, a] - delta
                _continuous_index(probe, 0, p2i, origin, ci)
                if not _inside(ci, size):
                    continue
                base = _linear_setup(ci, size, frac, step, flat_zero)
                lower = _linear_value(data, base, frac, step, offsets, corners, tmp)
                probe[0, a] = points[s, a] + delta
                _continuous_index(probe, 0, p2i, origin, ci)
                if not _inside(ci, size):
                    continue
                base = _linear_setup(ci, size, frac, step, flat_zero)
                upper = _linear_value(data, base, frac, step, offsets, corners, tmp)
                # ITK divides by the difference of the probe coordinates as
                # computed in floating point, not by spacing[a] itself.
                width = probe[0, a] - (points[s, a] - delta)
                if width > 10.0 * 2.220446049250313e-16:
                    grads[s, a] = (upper - lower) / width
    return grads


@parallel_kernel
def nearest_values(points, data, size, p2i, origin, default_value, chunk_size):
    """Nearest-neighbour values (round half up, as ITK).  Returns ``(values, inside)``."""
    n, d = points.shape
    values = np.empty(n)
    inside = np.zeros(n, dtype=np.bool_)
    nc = (n + chunk_size - 1) // chunk_size
    for c in prange(nc):
        ci = np.empty(d)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            _continuous_index(points, s, p2i, origin, ci)
            if not _inside(ci, size):
                values[s] = default_value
                continue
            inside[s] = True
            off = 0
            stride = 1
            for i in range(d):
                k = np.int64(math.floor(ci[i] + 0.5))
                if k < 0:
                    k = 0
                elif k > size[i] - 1:
                    k = size[i] - 1
                off += k * stride
                stride *= size[i]
            values[s] = data[off]
    return values, inside


@njit(cache=True, inline="always")
def _mirror(k, m):
    """Whole-sample mirror of index ``k`` into ``[0, m)`` (ITK / scipy 'mirror')."""
    if m == 1:
        return 0
    period = 2 * m - 2
    if k < 0:
        k = -k
    k = k % period
    if k >= m:
        k = period - k
    return k


@njit(cache=True, inline="always")
def _cubic_weights(t, w, dw, axis):
    """Cubic B-spline weights and derivatives for support ``floor(ci)-1 .. +2``."""
    u = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    w[axis, 0] = u * u * u / 6.0
    w[axis, 1] = (4.0 - 6.0 * t2 + 3.0 * t3) / 6.0
    w[axis, 2] = (1.0 + 3.0 * t + 3.0 * t2 - 3.0 * t3) / 6.0
    w[axis, 3] = t3 / 6.0
    dw[axis, 0] = -0.5 * u * u
    dw[axis, 1] = -2.0 * t + 1.5 * t2
    dw[axis, 2] = 0.5 + t - 1.5 * t2
    dw[axis, 3] = 0.5 * t2


@parallel_kernel
def bspline3_values_gradients(points, coeffs, size, p2i, origin, default_value, with_gradient, chunk_size):
    """Cubic B-spline values (and physical gradients) from prefiltered coefficients.

    Mirror boundary on the coefficients (ITK ``BSplineInterpolateImageFunction``
    / scipy ``mode='mirror'``).  Gradients are the exact derivative of the
    spline mapped with ``p2i.T``; zero (and ``gradients`` left zero) when
    ``with_gradient`` is False.  Returns ``(values, gradients (n, d), inside)``.
    """
    n, d = points.shape
    values = np.empty(n)
    grads = np.zeros((n, d) if with_gradient else (n, 0))
    inside = np.zeros(n, dtype=np.bool_)
    nc = (n + chunk_size - 1) // chunk_size
    ncorner = 4**d
    for c in prange(nc):
        ci = np.empty(d)
        w = np.empty((d, 4))
        dw = np.empty((d, 4))
        offs = np.empty((d, 4), dtype=np.int64)
        gidx = np.empty(d)
        stop = min((c + 1) * chunk_size, n)
        for s in range(c * chunk_size, stop):
            _continuous_index(points, s, p2i, origin, ci)
            if not _inside(ci, size):
                values[s] = default_value
                continue
            inside[s] = True
            stride = 1
            for i in range(d):
                fl = math.floor(ci[i])
                _cubic_weights(ci[i] - fl, w, dw, i)
                start = np.int64(fl) - 1
                for m in range(4):
                    offs[i, m] = _mirror(start + m, size[i]) * stride
                stride *= size[i]
            for k in range(d):
                gidx[k] = 0.0
            val = 0.0
            for corner in range(ncorner):
                rem = corner
                off = 0
                wt = 1.0
                for i in range(d):
                    m = rem % 4
                    rem //= 4
                    off += offs[i, m]
                    wt *= w[i, m]
                v = coeffs[off]
                val += wt * v
                if with_gradient:
                    for k in range(d):
                        rem = corner
                        wk = v
                        for i in range(d):
                            m = rem % 4
                            rem //= 4
                            if i == k:
                                wk *= dw[i, m]
                            else:
                                wk *= w[i, m]
                        gidx[k] += wk
            values[s] = val
            if with_gradient:
                for j in range(d):
                    g = 0.0
                    for i in range(d):
                        g += p2i[i, j] * gidx[i]
                    grads[s, j] = g
    return values, grads, inside
