"""Closed-form ICP updates: weighted point-to-point fits and point-to-plane steps.

A map is an ``(A, o)`` pair, ``y = A x + o``.  Every reduction is an
``np.einsum`` (a fixed, single-threaded summation order), so results do not
depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..registration.initializers import affine_from_points, rigid_from_points, similarity_from_points

KINDS = ("translation", "rigid", "similarity", "affine")

Map = tuple[NDArray[np.float64], NDArray[np.float64]]


def apply(m: Map, points: NDArray[np.float64]) -> NDArray[np.float64]:
    """``A x + o`` for every row of ``points``."""
    a, o = m
    return points @ a.T + o


def fit_point_to_point(kind: str, fixed: NDArray, moving: NDArray, weights: NDArray) -> Map:
    """Weighted least-squares map of ``kind`` with ``A fixed_i + o ~ moving_i``."""
    if kind == "translation":
        d = fixed.shape[1]
        shift = np.einsum("n,ni->i", weights, moving - fixed) / weights.sum()
        return np.eye(d), shift
    fit = {"rigid": rigid_from_points, "similarity": similarity_from_points, "affine": affine_from_points}[kind]
    return fit(fixed, moving, weights=weights)


def rotation_from_vector(omega: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation matrix of a rotation vector (3-D, Rodrigues) or of an angle (2-D, shape (1,))."""
    if omega.shape[0] == 1:
        c, s = np.cos(omega[0]), np.sin(omega[0])
        return np.array([[c, -s], [s, c]])
    theta = float(np.linalg.norm(omega))
    if theta == 0.0:
        return np.eye(3)
    k = omega / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(theta) * kx + (1.0 - np.cos(theta)) * (kx @ kx)


def _rotation_columns(centred: NDArray, normals: NDArray) -> NDArray:
    """``d r / d omega`` of ``r = n . (y + omega x (y - c))``: ``(y - c) x n`` (a scalar in 2-D)."""
    if centred.shape[1] == 2:
        return (centred[:, 0] * normals[:, 1] - centred[:, 1] * normals[:, 0])[:, None]
    return np.cross(centred, normals)


def step_point_to_plane(
    kind: str, current: Map, fixed: NDArray, moving: NDArray, normals: NDArray, weights: NDArray
) -> Map:
    """One Gauss-Newton step on ``sum_i w_i (n_i . (T(p_i) - q_i))^2``.

    Affine maps are linear in their parameters, so the step solves the
    weighted least-squares problem exactly.  Rigid and similarity maps are
    linearised about the current map (small rotation ``omega`` about the
    weighted centroid ``c`` of the mapped points, scale ``exp(s)``) and the
    step is applied as an exact rotation, so the matrix stays a rotation.
    """
    d = fixed.shape[1]
    wsum = weights.sum()
    if kind == "affine":
        cols = np.concatenate([(normals[:, :, None] * fixed[:, None, :]).reshape(-1, d * d), normals], axis=1)
        rhs = np.einsum("ni,ni->n", normals, moving)
        lhs = np.einsum("n,ni,nj->ij", weights, cols, cols)
        sol = np.linalg.lstsq(lhs, np.einsum("n,ni,n->i", weights, cols, rhs), rcond=None)[0]
        return sol[: d * d].reshape(d, d), sol[d * d :]
    a, o = current
    mapped = fixed @ a.T + o
    c = np.einsum("n,ni->i", weights, mapped) / wsum
    centred = mapped - c
    residual = np.einsum("ni,ni->n", normals, mapped - moving)
    blocks = [] if kind == "translation" else [_rotation_columns(centred, normals)]
    blocks.append(normals)
    if kind == "similarity":
        blocks.append(np.einsum("ni,ni->n", normals, centred)[:, None])
    cols = np.concatenate(blocks, axis=1)
    lhs = np.einsum("n,ni,nj->ij", weights, cols, cols)
    # a tiny ridge keeps directions the surface cannot fix (a plane sliding in itself) at zero
    lhs += np.eye(lhs.shape[0]) * (1e-12 * max(np.trace(lhs), 1e-300))
    delta = -np.linalg.solve(lhs, np.einsum("n,ni,n->i", weights, cols, residual))
    n_rot = 0 if kind == "translation" else (1 if d == 2 else 3)
    rot = rotation_from_vector(delta[:n_rot]) if n_rot else np.eye(d)
    shift = delta[n_rot : n_rot + d]
    scale = float(np.exp(delta[-1])) if kind == "similarity" else 1.0
    step = scale * rot
    return step @ a, step @ (o - c) + c + shift
