"""numba kernels of the point-set code (private)."""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._parallel import parallel_kernel


@parallel_kernel
def pca_normals(points, neighbours):  # pragma: no cover - numba
    """Unit eigenvector of the smallest eigenvalue of each neighbourhood's covariance.

    Closed form per point (2-D: the quadratic; 3-D: the trigonometric
    eigenvalues of a symmetric 3x3 matrix, then the largest cross product of
    two rows of ``C - lambda_min I``).  Independent per point, so the result
    does not depend on the thread count.
    """
    n, k = neighbours.shape
    d = points.shape[1]
    out = np.zeros((n, d))
    for i in prange(n):
        mean = np.zeros(d)
        for j in range(k):
            for a in range(d):
                mean[a] += points[neighbours[i, j], a]
        for a in range(d):
            mean[a] /= k
        c = np.zeros((3, 3))
        for j in range(k):
            for a in range(d):
                da = points[neighbours[i, j], a] - mean[a]
                for b in range(d):
                    c[a, b] += da * (points[neighbours[i, j], b] - mean[b])
        if d == 2:
            half = 0.5 * (c[0, 0] - c[1, 1])
            lam = 0.5 * (c[0, 0] + c[1, 1]) - math.sqrt(half * half + c[0, 1] * c[0, 1])
            v0, v1 = c[0, 1], lam - c[0, 0]
            w0, w1 = lam - c[1, 1], c[0, 1]
            if w0 * w0 + w1 * w1 > v0 * v0 + v1 * v1:
                v0, v1 = w0, w1
            norm = math.sqrt(v0 * v0 + v1 * v1)
            if norm > 0.0:
                out[i, 0], out[i, 1] = v0 / norm, v1 / norm
            else:
                out[i, 1] = 1.0
            continue
        p1 = c[0, 1] * c[0, 1] + c[0, 2] * c[0, 2] + c[1, 2] * c[1, 2]
        q = (c[0, 0] + c[1, 1] + c[2, 2]) / 3.0
        p2 = (c[0, 0] - q) ** 2 + (c[1, 1] - q) ** 2 + (c[2, 2] - q) ** 2 + 2.0 * p1
        p = math.sqrt(p2 / 6.0)
        if p == 0.0:
            out[i, 2] = 1.0
            continue
        b00, b11, b22 = (c[0, 0] - q) / p, (c[1, 1] - q) / p, (c[2, 2] - q) / p
        b01, b02, b12 = c[0, 1] / p, c[0, 2] / p, c[1, 2] / p
        r = 0.5 * (b00 * (b11 * b22 - b12 * b12) - b01 * (b01 * b22 - b12 * b02) + b02 * (b01 * b12 - b11 * b02))
        r = min(1.0, max(-1.0, r))
        lam = q + 2.0 * p * math.cos(math.acos(r) / 3.0 + 2.0 * math.pi / 3.0)
        for a in range(3):
            c[a, a] -= lam
        best = -1.0
        for u in range(3):
            for v in range(u + 1, 3):
                x = c[u, 1] * c[v, 2] - c[u, 2] * c[v, 1]
                y = c[u, 2] * c[v, 0] - c[u, 0] * c[v, 2]
                z = c[u, 0] * c[v, 1] - c[u, 1] * c[v, 0]
                m = x * x + y * y + z * z
                if m > best:
                    best = m
                    out[i, 0], out[i, 1], out[i, 2] = x, y, z
        norm = math.sqrt(best)
        if norm > 0.0:
            for a in range(3):
                out[i, a] /= norm
        else:
            out[i, 0], out[i, 1], out[i, 2] = 0.0, 0.0, 1.0
    return out
