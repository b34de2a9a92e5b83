"""Private numba kernels for dense displacement fields on a voxel grid (SyN).

Conventions
-----------
* Grids are described by ``size`` (int64, ITK order ``(nx, ny[, nz])``);
  flat arrays walk voxels in raster order (x fastest).
* A field with ``d`` components is flat ``(n_voxels * d,)`` voxel-major with
  interleaved components (the layout of ``DisplacementFieldTransform``
  parameters), in *index units* of its grid.
* Interpolation is multi-linear with edge clamping (constant extrapolation
  beyond the outermost voxel centres, zero derivative there).
* Kernels are parallel over fixed-size chunks of output voxels; every output
  element is computed by one iteration, so results do not depend on the
  number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._parallel import parallel_kernel


@njit(cache=True)
def _interp(src, nch, size, q, base, frac, vals, grad, n_grad):
    """Interpolate ``nch`` interleaved channels of ``src`` at continuous index ``q``.

    Fills ``vals`` (nch,) and ``grad[c]`` (``grad`` is ``(>= n_grad, d)``)
    with the derivative of channel ``c < n_grad`` with respect to ``q``.
    """
    d = size.shape[0]
    for a in range(d):
        qa = q[a]
        hi = size[a] - 1
        if qa <= 0.0:
            base[a] = 0
            frac[a] = -1.0  # marks a clamped axis (zero derivative)
        elif qa >= hi:
            base[a] = hi
            frac[a] = -1.0
        else:
            b = np.floor(qa)
            base[a] = np.int64(b)
            frac[a] = qa - b
    for ch in range(nch):
        vals[ch] = 0.0
    for c in range(n_grad):
        for a in range(d):
            grad[c, a] = 0.0
    for mm in range(1 << d):
        flat = 0
        stride = 1
        w = 1.0
        skip = False
        for a in range(d):
            up = (mm >> a) & 1
            fa = frac[a]
            if fa < 0.0:  # clamped: only the lower corner, weight 1
                if up:
                    skip = True
                    break
                idx = base[a]
            elif up:
                idx = base[a] + 1
                w *= fa
            else:
                idx = base[a]
                w *= 1.0 - fa
            flat += idx * stride
            stride *= size[a]
        if skip:
            continue
        if w != 0.0:
            for ch in range(nch):
                vals[ch] += w * src[flat * nch + ch]
        if n_grad > 0:
            for a in range(d):
                fa = frac[a]
                if fa < 0.0:
                    continue
                prod = 1.0 if (mm >> a) & 1 else -1.0
                for b2 in range(d):
                    if b2 == a:
                        continue
                    fb = frac[b2]
                    if fb < 0.0:
                        continue
                    prod *= fb if (mm >> b2) & 1 else 1.0 - fb
                for c in range(n_grad):
                    grad[c, a] += prod * src[flat * nch + c]


@njit(cache=True)
def _unravel(v, size, idx):
    """``idx`` (ITK order) of the flat raster index ``v`` on a grid of ``size``."""
    rest = v
    for a in range(size.shape[0]):
        idx[a] = rest % size[a]
        rest //= size[a]


@njit(cache=True)
def _advance(idx, size):
    """``idx`` of the next voxel in raster order (x fastest)."""
    for a in range(size.shape[0]):
        idx[a] += 1
        if idx[a] < size[a]:
            break
        idx[a] = 0


@parallel_kernel
def map_interp(src, nch, src_size, field, grid_size, mat, off, out, grad, want_grad, chunk_size):
    """Sample ``src`` at ``q = mat @ (x + u(x)) + off`` for every voxel ``x`` of a grid.

    Parameters
    ----------
    src : (n_src * nch,) float64
        Interleaved channels on the grid ``src_size``.
    field : (n_grid * d,) float64
        Displacement ``u`` in grid index units (empty: ``u = 0``).
    mat, off : (d, d), (d,)
        Grid index -> source continuous index (affine).
    out : (n_grid * nch,) float64
        Interpolated channels (written).
    grad : (n_grid * d,) float64
        When ``want_grad``: derivative of channel 0 with respect to ``u(x)``,
        ``mat^T dsrc/dq``.
    """
    d = grid_size.shape[0]
    nv = 1
    for a in range(d):
        nv *= grid_size[a]
    has_field = field.shape[0] > 0
    nc = (nv + chunk_size - 1) // chunk_size
    for c in prange(nc):
        idx = np.zeros(d, dtype=np.int64)
        x = np.empty(d)
        q = np.empty(d)
        base = np.empty(d, dtype=np.int64)
        frac = np.empty(d)
        vals = np.empty(nch)
        g = np.empty((1, d))
        lo = c * chunk_size
        hi = min(lo + chunk_size, nv)
        _unravel(lo, grid_size, idx)
        for v in range(lo, hi):
            for a in range(d):
                x[a] = idx[a] + (field[v * d + a] if has_field else 0.0)
            for a in range(d):
                acc = off[a]
                for b in range(d):
                    acc += mat[a, b] * x[b]
                q[a] = acc
            _interp(src, nch, src_size, q, base, frac, vals, g, 1 if want_grad else 0)
            for ch in range(nch):
                out[v * nch + ch] = vals[ch]
            if want_grad:
                for b in range(d):
                    acc = 0.0
                    for a in range(d):
                        acc += mat[a, b] * g[0, a]
                    grad[v * d + b] = acc
            _advance(idx, grid_size)


# ---------------------------------------------------------------------------
# 2-D and 3-D fast paths of map_interp (no gradient): unrolled corners, about
# 4x faster than the n-D loop, which stays the reference (tested equal).
# ---------------------------------------------------------------------------
@njit(cache=True)
def _axis(q, n):
    """Lower index, upper index and upper weight along one axis (edge-clamped)."""
    if q <= 0.0:
        return 0, 0, 0.0
    if q >= n - 1:
        return n - 1, n - 1, 0.0
    b = np.int64(np.floor(q))
    return b, b + 1, q - b


@parallel_kernel
def map_interp_2d(src, nch, src_size, field, grid_size, mat, off, out, chunk_size):
    """:func:`map_interp` for 2-D grids, values only (same values, tested)."""
    nx = grid_size[0]
    nv = nx * grid_size[1]
    sx = src_size[0]
    sy = src_size[1]
    has_field = field.shape[0] > 0
    nc = (nv + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        for v in range(lo, min(lo + chunk_size, nv)):
            x0 = np.float64(v % nx)
            x1 = np.float64(v // nx)
            if has_field:
                x0 += field[2 * v]
                x1 += field[2 * v + 1]
            q0 = off[0] + mat[0, 0] * x0 + mat[0, 1] * x1
            q1 = off[1] + mat[1, 0] * x0 + mat[1, 1] * x1
            i0, i1, fx = _axis(q0, sx)
            j0, j1, fy = _axis(q1, sy)
            w00 = (1.0 - fx) * (1.0 - fy)
            w10 = fx * (1.0 - fy)
            w01 = (1.0 - fx) * fy
            w11 = fx * fy
            a00 = (i0 + sx * j0) * nch
            a10 = (i1 + sx * j0) * nch
            a01 = (i0 + sx * j1) * nch
            a11 = (i1 + sx * j1) * nch
            for ch in range(nch):
                out[v * nch + ch] = (w00 * src[a00 + ch] + w10 * src[a10 + ch]
                                     + w01 * src[a01 + ch] + w11 * src[a11 + ch])


@parallel_kernel
def map_interp_3d(src, nch, src_size, field, grid_size, mat, off, out, chunk_size):
    """:func:`map_interp` for 3-D grids, values only (same values, tested)."""
    nx = grid_size[0]
    ny = grid_size[1]
    nv = nx * ny * grid_size[2]
    sx = src_size[0]
    sxy = sx * src_size[1]
    has_field = field.shape[0] > 0
    nc = (nv + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        for v in range(lo, min(lo + chunk_size, nv)):
            x0 = np.float64(v % nx)
            x1 = np.float64((v // nx) % ny)
            x2 = np.float64(v // (nx * ny))
            if has_field:
                x0 += field[3 * v]
                x1 += field[3 * v + 1]
                x2 += field[3 * v + 2]
            q0 = off[0] + mat[0, 0] * x0 + mat[0, 1] * x1 + mat[0, 2] * x2
            q1 = off[1] + mat[1, 0] * x0 + mat[1, 1] * x1 + mat[1, 2] * x2
            q2 = off[2] + mat[2, 0] * x0 + mat[2, 1] * x1 + mat[2, 2] * x2
            i0, i1, fx = _axis(q0, sx)
            j0, j1, fy = _axis(q1, src_size[1])
            k0, k1, fz = _axis(q2, src_size[2])
            gx = 1.0 - fx
            gy = 1.0 - fy
            gz = 1.0 - fz
            w000 = gx * gy * gz
            w100 = fx * gy * gz
            w010 = gx * fy * gz
            w110 = fx * fy * gz
            w001 = gx * gy * fz
            w101 = fx * gy * fz
            w011 = gx * fy * fz
            w111 = fx * fy * fz
            b00 = sx * j0 + sxy * k0
            b10 = sx * j1 + sxy * k0
            b01 = sx * j0 + sxy * k1
            b11 = sx * j1 + sxy * k1
            for ch in range(nch):
                out[v * nch + ch] = (
                    w000 * src[(i0 + b00) * nch + ch] + w100 * src[(i1 + b00) * nch + ch]
                    + w010 * src[(i0 + b10) * nch + ch] + w110 * src[(i1 + b10) * nch + ch]
                    + w001 * src[(i0 + b01) * nch + ch] + w101 * src[(i1 + b01) * nch + ch]
                    + w011 * src[(i0 + b11) * nch + ch] + w111 * src[(i1 + b11) * nch + ch]
                )


@parallel_kernel
def descent_direction(d_energy, values, grid_size, out, chunk_size):
    """``out = -d_energy * grad(values)`` interleaved, ``grad`` as ``numpy.gradient`` (index units).

    Central differences ``(f[i+1] - f[i-1]) / 2`` inside, one-sided ``f[1] - f[0]``
    and ``f[n-1] - f[n-2]`` on the border, 0 along axes of one voxel.
    """
    d = grid_size.shape[0]
    nv = 1
    for a in range(d):
        nv *= grid_size[a]
    nc = (nv + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        for v in range(lo, min(lo + chunk_size, nv)):
            rest = v
            stride = 1
            scale = -d_energy[v]
            for a in range(d):
                n = grid_size[a]
                i = rest % n
                rest //= n
                if n < 2:
                    g = 0.0
                elif i == 0:
                    g = values[v + stride] - values[v]
                elif i == n - 1:
                    g = values[v] - values[v - stride]
                else:
                    g = (values[v + stride] - values[v - stride]) / 2.0
                out[v * d + a] = scale * g
                stride *= n


@parallel_kernel
def jacobian_det(field, grid_size, out, chunk_size):
    """Smallest ``det(I + du/dx)`` at every voxel over the one-sided difference stencils.

    Each voxel is a corner of ``2**d`` cells of the multi-linear field; the
    Jacobian at that corner of each cell takes forward or backward differences
    per axis.  The smallest of their determinants is written: when it is
    positive at every voxel, the interpolated map does not fold at the voxels
    (central differences alone miss an odd/even zig-zag).

    Parameters
    ----------
    field : (n_voxels * d,) float64
        Interleaved displacement in index units of the 2-D or 3-D grid ``grid_size``.
    out : (n_voxels,) float64
        Determinants (written).
    """
    d = grid_size.shape[0]
    nx = grid_size[0]
    ny = grid_size[1]
    nz = grid_size[2] if d == 3 else 1
    nv = nx * ny * nz
    nc = (nv + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        # columns of I + du/dx along each axis, from the forward (f) and backward (b) differences
        f = np.empty((3, 3))  # f[axis, comp]
        b = np.empty((3, 3))
        pos = np.empty(3, dtype=np.int64)
        ext = np.empty(3, dtype=np.int64)
        strides = np.empty(3, dtype=np.int64)
        ext[0] = nx
        ext[1] = ny
        ext[2] = nz
        strides[0] = 1
        strides[1] = nx
        strides[2] = nx * ny
        for v in range(lo, min(lo + chunk_size, nv)):
            pos[0] = v % nx
            pos[1] = (v // nx) % ny
            pos[2] = v // (nx * ny)
            for a in range(d):
                st = strides[a]
                for comp in range(d):
                    here = field[v * d + comp]
                    if ext[a] < 2:
                        fa = 0.0
                        ba = 0.0
                    elif pos[a] == 0:
                        fa = field[(v + st) * d + comp] - here
                        ba = fa
                    elif pos[a] == ext[a] - 1:
                        ba = here - field[(v - st) * d + comp]
                        fa = ba
                    else:
                        fa = field[(v + st) * d + comp] - here
                        ba = here - field[(v - st) * d + comp]
                    one = 1.0 if comp == a else 0.0
                    f[a, comp] = fa + one
                    b[a, comp] = ba + one
            if d == 2:
                best = f[0, 0] * f[1, 1] - f[0, 1] * f[1, 0]
                best = min(best, f[0, 0] * b[1, 1] - f[0, 1] * b[1, 0])
                best = min(best, b[0, 0] * f[1, 1] - b[0, 1] * f[1, 0])
                best = min(best, b[0, 0] * b[1, 1] - b[0, 1] * b[1, 0])
            else:
                best = np.inf
                for m1 in range(2):
                    p = f[1] if m1 else b[1]
                    for m2 in range(2):
                        q = f[2] if m2 else b[2]
                        cx = p[1] * q[2] - p[2] * q[1]
                        cy = p[2] * q[0] - p[0] * q[2]
                        cz = p[0] * q[1] - p[1] * q[0]
                        best = min(best, f[0, 0] * cx + f[0, 1] * cy + f[0, 2] * cz)
                        best = min(best, b[0, 0] * cx + b[0, 1] * cy + b[0, 2] * cz)
            out[v] = best


@parallel_kernel
def invert_field(u, size, guess, tolerance, max_iterations, out, residual, chunk_size):
    """Solve ``x + u(x) = y`` at every voxel ``y`` of the grid by damped Newton iteration.

    Per voxel: start at ``y + guess(y)``; each step solves ``(I + du/dx) dx =
    y - x - u(x)`` (the fixed-point step where the Jacobian is singular) and
    halves it (up to 30 times) until the residual decreases; stops at a
    residual ``<= tolerance`` or after ``max_iterations`` steps, as
    :func:`~regframe.transforms.displacement.newton_invert` does.

    Parameters
    ----------
    u, guess : (n_voxels * d,) float64
        Interleaved fields in index units of the 2-D or 3-D grid ``size``.
    out : (n_voxels * d,) float64
        ``x - y`` (written): the inverse field.
    residual : (n_voxels,) float64
        ``|x + u(x) - y|`` at the returned ``x`` (written).
    """
    d = size.shape[0]
    nv = 1
    for a in range(d):
        nv *= size[a]
    nc = (nv + chunk_size - 1) // chunk_size
    for c in prange(nc):
        idx = np.zeros(d, dtype=np.int64)
        y = np.empty(d)
        x = np.empty(d)
        trial = np.empty(d)
        r = np.empty(d)
        rt = np.empty(d)
        step = np.empty(d)
        jac = np.empty((d, d))
        jac_t = np.empty((d, d))
        base = np.empty(d, dtype=np.int64)
        frac = np.empty(d)
        vals = np.empty(d)
        lo = c * chunk_size
        hi = min(lo + chunk_size, nv)
        _unravel(lo, size, idx)
        for v in range(lo, hi):
            for a in range(d):
                y[a] = np.float64(idx[a])
                x[a] = y[a] + guess[v * d + a]
            _interp(u, d, size, x, base, frac, vals, jac, 0)
            norm = 0.0
            for a in range(d):
                r[a] = x[a] + vals[a] - y[a]
                norm += r[a] * r[a]
            norm = np.sqrt(norm)
            if norm > tolerance and max_iterations > 0:  # the Jacobian only where a step is needed
                _interp(u, d, size, x, base, frac, vals, jac, d)
            for _ in range(max_iterations):
                if norm <= tolerance:
                    break
                for a in range(d):
                    jac[a, a] += 1.0  # jac[c, a] = d(x + u)_c / dx_a
                _solve_small(jac, r, step, d)
                t = 1.0
                for _halving in range(30):
                    for a in range(d):
                        trial[a] = x[a] + t * step[a]
                    # the Jacobian comes along (the next step needs it where the trial is accepted)
                    _interp(u, d, size, trial, base, frac, vals, jac_t, d)
                    nt = 0.0
                    for a in range(d):
                        rt[a] = trial[a] + vals[a] - y[a]
                        nt += rt[a] * rt[a]
                    nt = np.sqrt(nt)
                    if nt < norm:
                        for a in range(d):
                            x[a] = trial[a]
                            r[a] = rt[a]
                            for b in range(d):
                                jac[a, b] = jac_t[a, b]
                        norm = nt
                        break
                    t *= 0.5
                else:
                    break  # no decrease along the step: stuck
            for a in range(d):
                out[v * d + a] = x[a] - y[a]
            residual[v] = norm
            _advance(idx, size)


@njit(cache=True)
def _solve_small(jac, r, step, d):
    """``step = -jac^-1 r`` for a 2x2 or 3x3 ``jac`` (Cramer's rule); ``-r`` where ``|det| <= 1e-12``."""
    if d == 2:
        det = jac[0, 0] * jac[1, 1] - jac[0, 1] * jac[1, 0]
        if abs(det) <= 1e-12:
            step[0] = -r[0]
            step[1] = -r[1]
            return
        step[0] = -(jac[1, 1] * r[0] - jac[0, 1] * r[1]) / det
        step[1] = -(jac[0, 0] * r[1] - jac[1, 0] * r[0]) / det
        return
    c00 = jac[1, 1] * jac[2, 2] - jac[1, 2] * jac[2, 1]
    c01 = jac[1, 2] * jac[2, 0] - jac[1, 0] * jac[2, 2]
    c02 = jac[1, 0] * jac[2, 1] - jac[1, 1] * jac[2, 0]
    det = jac[0, 0] * c00 + jac[0, 1] * c01 + jac[0, 2] * c02
    if abs(det) <= 1e-12:
        for a in range(3):
            step[a] = -r[a]
        return
    c10 = jac[0, 2] * jac[2, 1] - jac[0, 1] * jac[2, 2]
    c11 = jac[0, 0] * jac[2, 2] - jac[0, 2] * jac[2, 0]
    c12 = jac[0, 1] * jac[2, 0] - jac[0, 0] * jac[2, 1]
    c20 = jac[0, 1] * jac[1, 2] - jac[0, 2] * jac[1, 1]
    c21 = jac[0, 2] * jac[1, 0] - jac[0, 0] * jac[1, 2]
    c22 = jac[0, 0] * jac[1, 1] - jac[0, 1] * jac[1, 0]
    # inverse = adjugate / det, adjugate[i, j] = cofactor[j, i]
    step[0] = -(c00 * r[0] + c10 * r[1] + c20 * r[2]) / det
    step[1] = -(c01 * r[0] + c11 * r[1] + c21 * r[2]) / det
    step[2] = -(c02 * r[0] + c12 * r[1] + c22 * r[2]) / det


@parallel_kernel
def jacobian_det_2d(field, grid_size, out, chunk_size):
    """:func:`jacobian_det` for 2-D grids (the same values, without the small work arrays)."""
    nx = grid_size[0]
    ny = grid_size[1]
    nv = nx * ny
    nc = (nv + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        for v in range(lo, min(lo + chunk_size, nv)):
            px = v % nx
            py = v // nx
            f00, b00 = _differences(field, 2, v, 1, px, nx, 0)
            f01, b01 = _differences(field, 2, v, 1, px, nx, 1)
            f10, b10 = _differences(field, 2, v, nx, py, ny, 0)
            f11, b11 = _differences(field, 2, v, nx, py, ny, 1)
            f00 += 1.0
            b00 += 1.0
            f01 += 0.0
            b01 += 0.0
            f10 += 0.0
            b10 += 0.0
            f11 += 1.0
            b11 += 1.0
            best = f00 * f11 - f01 * f10
            best = min(best, f00 * b11 - f01 * b10)
            best = min(best, b00 * f11 - b01 * f10)
            best = min(best, b00 * b11 - b01 * b10)
            out[v] = best


@parallel_kernel
def jacobian_det_3d(field, grid_size, out, chunk_size):
    """:func:`jacobian_det` for 3-D grids (the same values, in the same order, with scalars)."""
    nx = grid_size[0]
    ny = grid_size[1]
    nz = grid_size[2]
    nv = nx * ny * nz
    nc = (nv + chunk_size - 1) // chunk_size
    for c in prange(nc):
        lo = c * chunk_size
        f = np.empty((3, 3))
        b = np.empty((3, 3))
        for v in range(lo, min(lo + chunk_size, nv)):
            pos0 = v % nx
            pos1 = (v // nx) % ny
            pos2 = v // (nx * ny)
            for comp in range(3):
                one = 1.0 if comp == 0 else 0.0
                fa, ba = _differences(field, 3, v, 1, pos0, nx, comp)
                f[0, comp] = fa + one
                b[0, comp] = ba + one
                one = 1.0 if comp == 1 else 0.0
                fa, ba = _differences(field, 3, v, nx, pos1, ny, comp)
                f[1, comp] = fa + one
                b[1, comp] = ba + one
                one = 1.0 if comp == 2 else 0.0
                fa, ba = _differences(field, 3, v, nx * ny, pos2, nz, comp)
                f[2, comp] = fa + one
                b[2, comp] = ba + one
            best = np.inf
            for m1 in range(2):
                p0 = f[1, 0] if m1 else b[1, 0]
                p1 = f[1, 1] if m1 else b[1, 1]
                p2 = f[1, 2] if m1 else b[1, 2]
                for m2 in range(2):
                    q0 = f[2, 0] if m2 else b[2, 0]
                    q1 = f[2, 1] if m2 else b[2, 1]
                    q2 = f[2, 2] if m2 else b[2, 2]
                    cx = p1 * q2 - p2 * q1
                    cy = p2 * q0 - p0 * q2
                    cz = p0 * q1 - p1 * q0
                    best = min(best, f[0, 0] * cx + f[0, 1] * cy + f[0, 2] * cz)
                    best = min(best, b[0, 0] * cx + b[0, 1] * cy + b[0, 2] * cz)
            out[v] = best


@njit(cache=True)
def _differences(field, d, v, st, pos, ext, comp):
    """Forward and backward differences of component ``comp`` (of ``d``) along an axis (stride ``st``),
    one-sided on the border, as :func:`jacobian_det` takes them."""
    here = field[v * d + comp]
    if ext < 2:
        return 0.0, 0.0
    if pos == 0:
        fa = field[(v + st) * d + comp] - here
        return fa, fa
    if pos == ext - 1:
        ba = here - field[(v - st) * d + comp]
        return ba, ba
    return field[(v + st) * d + comp] - here, here - field[(v - st) * d + comp]
