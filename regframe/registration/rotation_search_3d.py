"""3-D rotation search of :func:`~regframe.registration.global_init.global_candidates`.

Every candidate rotation is scored by the best normalized correlation over
*all* translations at once: the masked (weighted) normalized cross-correlation
of Padfield (2012), six FFT correlations per rotation on a coarse, nearly
isotropic working grid.  Unlike phase correlation (a whitened spectrum, sharp
only when the rotation is right), the normalized correlation falls off
smoothly with the rotation error, so a rotation grid 10-20 degrees apart still
ranks the right neighbourhood first and a hill-climb can finish it.

Rotations tried, about the start's centre and relative to its matrix:

- the start's own rotation and a hill-climb from it: when that already
  correlates by ``CONFIDENT_NCC`` (the images nearly identical once aligned),
  the search ends there (about 20 evaluations instead of 130);
- every rotation of a dense super-Fibonacci set within ``LOCAL_ANGLE`` of the
  start (about 35; the nearest is within about 15 degrees of any rotation up
  to 45 degrees);
- the 23 non-trivial rotations of the cube (axis permutations and flips: a
  volume stored in another orientation);
- a hill-climb of the best ``N_CLIMB`` distinct rotations: per step size
  (``CLIMB_STEPS``) the six rotations about the axes, then the per-axis
  parabola vertex.

Costs about 150 evaluations of 2-5 ms on a lung CT (57 x 78 x 64 voxels), or about 20 when the
start's climb is convincing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import fft as sfft
from scipy import ndimage

from .._validation import check_positive_int
from ..image import Image
from ..transforms.versor import versor_from_axis_angle, versor_matrix
from ._peaks import find_peaks, subpixel_offset

__all__ = ["rotation_search_3d", "rotation_grid_3d", "cube_rotations", "local_rotations", "distinct"]

#: Working voxel: the largest physical extent of the fixed image over this many voxels.
WORK_VOXELS = 24
#: Rotations within this angle (degrees) of the start are searched densely ...
LOCAL_ANGLE = 50.0
#: ... taken from a super-Fibonacci set of this many rotations over SO(3).
LOCAL_DENSITY = 1000
#: Hill-climbed seeds and their step sizes (degrees).
N_CLIMB, CLIMB_STEPS = 3, (10.0, 5.0, 2.5)
#: Margin of the moving grid around the fixed field of view (fraction per side): the largest shift searched.
SHIFT_FRACTION = 0.3
#: Shifts overlapping less than this fraction of the smaller weight sum are not scored; those below
#: ``FULL_OVERLAP`` are scaled down proportionally.
MIN_OVERLAP, FULL_OVERLAP = 0.1, 0.25
#: Width of the cosine taper at field-of-view and mask borders (working voxels).
TAPER_VOXELS = 2.0
#: The search ends after the start's hill-climb when it correlates by this much.  Measured on the lung CT
#: moved by SimpleITK: 0.99 after climbing from 11 degrees off; wrong rotations up to 0.956 (16 degrees off
#: about the body axis), the truth itself 0.95-0.99 (shifts of 25 % of the field of view cut parts away).
CONFIDENT_NCC = 0.98


def cube_rotations() -> NDArray[np.float64]:
    """The 24 rotations of the cube (signed axis permutations with determinant +1), identity first."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    out.sort(key=lambda m: -np.trace(m))
    return np.stack(out)


def rotation_grid_3d(n: int = 72) -> NDArray[np.float64]:
    """``n`` rotations spread near-uniformly over SO(3) (super-Fibonacci spiral, Alexa 2022).

    Deterministic.  With 72 rotations, every rotation lies within 56 degrees
    of one of them (99 % within 46, half within 30 degrees).

    Returns
    -------
    ndarray, shape (n, 3, 3)
    """
    n = check_positive_int(n, where="rotation_grid_3d()", name="n")
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041
    s = np.arange(n) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    alpha, beta = 2 * np.pi * s / phi, 2 * np.pi * s / psi
    q = np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], axis=1)
    q *= np.where(q[:, 3:] < 0, -1.0, 1.0)  # versor vector part with a non-negative scalar part
    return np.stack([versor_matrix(v[:3]) for v in q])


def local_rotations(max_angle: float = LOCAL_ANGLE, density: int = LOCAL_DENSITY) -> NDArray[np.float64]:
    """Rotations of a ``density``-point super-Fibonacci set within ``max_angle`` degrees of the identity."""
    grid = rotation_grid_3d(density)
    angles = np.arccos(np.clip((np.trace(grid, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0))
    return grid[angles <= np.deg2rad(max_angle)]


def distinct(found: list, n: int, angle: float = 0.35) -> list:
    """The ``n`` best candidates whose matrices differ by more than ``angle`` (entry-wise)."""
    out: list = []
    for cand in sorted(found, key=lambda c: -c[2]):
        if all(np.max(np.abs(cand[0] - c[0])) > angle for c in out):
            out.append(cand)
            if len(out) == n:
                break
    return out


def _axis_rotation(axis: int, angle: float) -> NDArray[np.float64]:
    return versor_matrix(versor_from_axis_angle(np.eye(3)[axis], angle, where="rotation_search_3d()"))


def _taper(weights_mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """``sin^2`` ramp over ``TAPER_VOXELS`` from the border of the mask (and of the grid) inwards."""
    dist = ndimage.distance_transform_edt(np.pad(weights_mask, 1))[(slice(1, -1),) * weights_mask.ndim]
    return np.sin(0.5 * np.pi * np.clip(dist / (TAPER_VOXELS + 1.0), 0.0, 1.0)) ** 2


class _NccSearch:
    """The fixed image on a coarse grid, the moving image sampled through candidate rotations.

    A candidate is a matrix ``A`` and translation ``t`` about ``center``:
    ``T(x) = A (x - c) + c + t``.
    """

    def __init__(self, fixed_w: Image, fixed_mask: NDArray[np.bool_], moving_w: Image,
                 moving_mask: NDArray[np.bool_], center: NDArray[np.float64]) -> None:
        shape = np.asarray(fixed_w.shape)
        self.pad = np.ceil(SHIFT_FRACTION * shape).astype(int)
        self.grid_shape = tuple(int(v) for v in shape + 2 * self.pad)
        self.fft_shape = tuple(sfft.next_fast_len(n, real=True) for n in self.grid_shape)
        self.keep = tuple(slice(0, 2 * int(p) + 1) for p in self.pad)
        wf = _taper(fixed_mask)
        f = np.asarray(fixed_w.array, dtype=np.float64)
        f = f - float((f * wf).sum()) / max(float(wf.sum()), 1e-300)
        self.scale = float(np.sqrt((f * f * wf).sum() / max(float(wf.sum()), 1e-300))) or 1.0
        f = f / self.scale
        self.f_total = float(wf.sum())
        self.ff = [np.conj(sfft.rfftn(x, s=self.fft_shape)) for x in (wf, wf * f, wf * f * f)]
        # numpy index of the moving grid -> physical point: x = M g + b (x in ITK order)
        p = fixed_w.index_to_physical_matrix[:, ::-1]
        self.grid_to_physical = (p, fixed_w.origin - p @ self.pad)
        mp = moving_w.index_to_physical_matrix[:, ::-1]
        self.physical_to_moving = (np.linalg.inv(mp), moving_w.origin)
        wm = _taper(moving_mask)
        m = np.asarray(moving_w.array, dtype=np.float64)
        m = m - float((m * wm).sum()) / max(float(wm.sum()), 1e-300)
        self.moving_wm = wm
        self.moving_mwm = m * wm / (float(np.sqrt((m * m * wm).sum() / max(float(wm.sum()), 1e-300))) or 1.0)
        self.center = np.asarray(center, dtype=np.float64)
        self.voxel = float(np.min(fixed_w.spacing))
        self.n_evaluations = 0

    def _sample(self, matrix: NDArray[np.float64], translation: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        m_g, b_g = self.grid_to_physical
        inv, origin = self.physical_to_moving
        c = self.center
        lin = inv @ matrix @ m_g
        off = inv @ (matrix @ (b_g - c) + c + translation - origin)
        kw = dict(output_shape=self.grid_shape, order=1, mode="constant", cval=0.0, prefilter=False)
        mw = ndimage.affine_transform(self.moving_mwm, lin, offset=off, **kw)
        w = ndimage.affine_transform(self.moving_wm, lin, offset=off, **kw)
        return mw, w

    def evaluate(self, matrix: NDArray[np.float64], translation: NDArray[np.float64],
                 n_peaks: int = 1) -> list[tuple[NDArray[np.float64], NDArray[np.float64], float]]:
        """``(matrix, translation, score)``: the best shifts (normalized correlation) for ``matrix``."""
        self.n_evaluations += 1
        mw, w = self._sample(matrix, translation)
        w_total = float(w.sum())
        if w_total <= 1e-6 * w.size:
            return []
        # moving values m = mw / w; sums over the overlap weighted by wf(n) w(n + k)
        m = np.where(w > 1e-6, mw / np.maximum(w, 1e-12), 0.0)
        fm = [sfft.rfftn(x, s=self.fft_shape) for x in (w, mw, mw * m)]
        ff = self.ff

        def corr(a: int, b: int) -> NDArray[np.float64]:
            return sfft.irfftn(ff[a] * fm[b], s=self.fft_shape)[self.keep]

        s_w, s_f, s_ff, s_m, s_mm, s_fm = corr(0, 0), corr(1, 0), corr(2, 0), corr(0, 1), corr(0, 2), corr(1, 1)
        total = min(self.f_total, w_total)
        ok = s_w > MIN_OVERLAP * total
        n = np.where(ok, s_w, 1.0)
        var = (s_ff - s_f * s_f / n) * (s_mm - s_m * s_m / n)
        ok &= var > 1e-12 * n * n
        ncc = (s_fm - s_f * s_m / n) / np.sqrt(np.where(ok, var, 1.0))
        ncc = np.where(ok, ncc * np.minimum(1.0, s_w / (FULL_OVERLAP * total)), -np.inf)
        if not np.any(ok):
            return []
        m_g = self.grid_to_physical[0]
        out = []
        for peak in find_peaks(ncc, n_peaks, 2.0):
            shift = np.asarray(peak, dtype=np.float64) - self.pad
            inner = all(0 < k < n_k - 1 for k, n_k in zip(peak, ncc.shape))
            if inner and all(np.isfinite(ncc[tuple(np.add(peak, d))]) for d in itertools.product((-1, 0, 1), repeat=3)):
                shift = shift + subpixel_offset(ncc, peak)
            out.append((matrix, translation + matrix @ (m_g @ shift), float(ncc[peak])))
        return out

    def climb(self, seed: tuple, steps: Sequence[float]) -> list:
        """Hill-climb ``seed`` by rotations about the axes; every evaluated candidate."""
        best, out = seed, []
        for step in np.deg2rad(steps):
            trials: dict[tuple[int, float], tuple] = {}
            for axis, sign in itertools.product(range(3), (1.0, -1.0)):
                got = self.evaluate(best[0] @ _axis_rotation(axis, sign * step), best[1])
                if got:
                    trials[axis, sign] = got[0]
            out += trials.values()
            # per-axis parabola vertex through (-step, 0, +step)
            offsets = np.zeros(3)
            for axis in range(3):
                if (axis, 1.0) in trials and (axis, -1.0) in trials:
                    lo, hi = trials[axis, -1.0][2], trials[axis, 1.0][2]
                    denom = lo - 2.0 * best[2] + hi
                    if denom < 0:
                        offsets[axis] = np.clip(0.5 * (lo - hi) / denom, -1.0, 1.0) * step
            if np.any(offsets):
                angle = float(np.linalg.norm(offsets))
                rot = versor_matrix(versor_from_axis_angle(offsets / angle, angle, where="rotation_search_3d()"))
                out += self.evaluate(best[0] @ rot, best[1])
            cand = max(out, key=lambda c: c[2], default=None)
            if cand is not None and cand[2] > best[2]:
                best = cand
        return out


def rotation_search_3d(fixed_w: Image, fixed_mask: NDArray[np.bool_], moving_w: Image, moving_mask: NDArray[np.bool_],
                       matrix: NDArray[np.float64], translation: NDArray[np.float64], center: NDArray[np.float64],
                       scales: Sequence[float] = (),
                       ) -> tuple[list[tuple[NDArray[np.float64], NDArray[np.float64], float]], float]:
    """Scored candidates ``(matrix, translation, score)`` of a 3-D rotation search, and the working voxel size.

    ``fixed_w`` / ``moving_w`` are the (smoothed, shrunk) working images with
    their binary masks; the candidates are about ``center`` and relative to the
    start ``(matrix, translation)``.  The start's rotation gives its three best
    translations and is hill-climbed; when that correlates by ``CONFIDENT_NCC``
    the other rotations are not tried and only the candidates that correlate by
    as much are returned.  ``scales`` are tried on the best two distinct rotations
    (similarity and affine kinds).
    """
    search = _NccSearch(fixed_w, fixed_mask, moving_w, moving_mask, center)
    found = search.evaluate(matrix, translation, n_peaks=3)
    if found:
        found += search.climb(found[0], CLIMB_STEPS)
    if max((c[2] for c in found), default=-np.inf) >= CONFIDENT_NCC:
        found = [c for c in found if c[2] >= CONFIDENT_NCC]  # the convincing ones: nothing else to refine
    else:
        for r in (*local_rotations(), *cube_rotations()[1:]):
            if np.allclose(r, np.eye(3)):
                continue
            found += search.evaluate(matrix @ r, translation)
        for seed in distinct(found, N_CLIMB):
            found += search.climb(seed, CLIMB_STEPS)
    for a, t, _ in distinct(found, 2) if len(scales) else ():
        for sc in scales:
            found += search.evaluate(sc * a, t)
    return found, search.voxel
