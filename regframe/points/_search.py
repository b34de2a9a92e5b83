"""Global initialization of ICP: multi-start over rotations, refined briefly, ranked on one trimmed cost.

Candidates (all about the centroids, which the caller has moved to the
origin):

* the principal-axes rotations ``E_m diag(s) E_f^T`` for every sign pattern
  ``s`` with ``det = +1`` - the symmetric solutions principal axes cannot tell
  apart (4 in 3-D, 2 in 2-D);
* a coarse rotation grid: rotation vectors on a cubic lattice of 30 degrees
  within a ball of 90 degrees (123 rotations in 3-D; 12 angles over the full
  circle in 2-D), so rotations up to 90 degrees about any axis start within
  about 26 degrees of a candidate;
* extra starts from the caller (the input pose, an initial transform).

All candidates are refined together for a few trimmed rigid ICP iterations on
a small seeded subsample (one k-d tree query for all of them per iteration),
ranked on the trimmed mean squared closest-point distance, and the best few
are refined further on a larger subsample and ranked again on the same cost.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from ._fit import Map, rotation_from_vector

#: Points of the first (all-candidates) round and of the final round.
N_SEARCH, N_SCORE = 64, 1024
#: Iterations of the two rounds, and candidates kept for the second.
ITER_SEARCH, ITER_SCORE, N_KEEP = 3, 6, 4
#: Fraction of correspondences kept by the trimmed refinements and costs.
KEEP_REFINE, KEEP_COST = 0.6, 0.5
GRID_STEP_DEG = 30.0
#: Closest points are searched within this fraction of the fixed RMS radius.
BOUND = 0.1


def rotation_grid(ndim: int) -> NDArray[np.float64]:
    """Candidate rotations ``(K, ndim, ndim)``, the identity first."""
    step = np.deg2rad(GRID_STEP_DEG)
    if ndim == 2:
        angles = step * np.arange(12)
        return np.stack([rotation_from_vector(np.array([a])) for a in angles])
    r = np.arange(-3, 4)
    lattice = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    lattice = lattice[np.einsum("ki,ki->k", lattice, lattice) <= 9]
    order = np.lexsort((lattice[:, 2], lattice[:, 1], lattice[:, 0], np.einsum("ki,ki->k", lattice, lattice)))
    return np.stack([rotation_from_vector(step * v.astype(np.float64)) for v in lattice[order]])


def principal_rotations(fixed: NDArray, moving: NDArray) -> NDArray[np.float64]:
    """Rotations taking the fixed principal axes onto the moving ones, every sign choice."""
    d = fixed.shape[1]
    ef = np.linalg.eigh(np.einsum("ni,nj->ij", fixed, fixed))[1]
    em = np.linalg.eigh(np.einsum("ni,nj->ij", moving, moving))[1]
    out = []
    for bits in range(2 ** (d - 1)):
        s = np.array([-1.0 if (bits >> i) & 1 else 1.0 for i in range(d - 1)] + [1.0])
        s[-1] = np.linalg.det(em @ np.diag(s) @ ef.T) * s[-1]  # make it a proper rotation
        out.append(em @ np.diag(s) @ ef.T)
    return np.stack(out)


def _trimmed_weights(dist: NDArray, keep: float) -> NDArray:
    """1 for the ``keep`` fraction of smallest (finite) distances of each row, else 0."""
    k = max(1, int(keep * dist.shape[1]))
    thr = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
    return ((dist <= thr) & np.isfinite(dist)).astype(np.float64)


def trimmed_cost(dist: NDArray, keep: float = KEEP_COST, bound: float = np.inf) -> NDArray:
    """Mean of the ``keep`` fraction of smallest squared distances of each row (capped at ``bound``)."""
    k = max(1, int(keep * dist.shape[1]))
    part = np.minimum(np.partition(dist, k - 1, axis=1)[:, :k], bound)
    return np.einsum("ki,ki->k", part, part) / k


def _refine_batch(
    a: NDArray, o: NDArray, scales: NDArray, sample: NDArray, moving: NDArray, tree: cKDTree,
    n_iter: int, bound: float, workers: int,
) -> tuple[NDArray, NDArray, NDArray]:
    """Trimmed rigid ICP (scale held at ``scales``) of all candidates at once; returns (A, o, cost).

    Closest points farther than ``bound`` are not searched for (far queries are
    the slow ones); they count as ``bound`` in the cost.
    """
    k, n, d = a.shape[0], sample.shape[0], sample.shape[1]
    for it in range(n_iter + 1):
        mapped = np.einsum("kij,nj->kni", a, sample) + o[:, None, :]
        dist, idx = tree.query(mapped.reshape(-1, d), workers=workers, distance_upper_bound=bound)
        dist = dist.reshape(k, n)
        if it == n_iter:
            return a, o, trimmed_cost(dist, bound=bound)
        matched = moving[np.minimum(idx, moving.shape[0] - 1)].reshape(k, n, d)
        w = _trimmed_weights(dist, KEEP_REFINE)
        stuck = w.sum(axis=1) < d + 1  # (almost) nothing within reach: keep the map, rank it last
        w[stuck] = 1.0
        wsum = w.sum(axis=1)
        cs = np.einsum("kn,nj->kj", w, sample) / wsum[:, None]
        cm = np.einsum("kn,knj->kj", w, matched) / wsum[:, None]
        h = np.einsum("kn,kni,knj->kij", w, matched - cm[:, None, :], sample[None] - cs[:, None, :])
        u, _, vt = np.linalg.svd(h)
        sign = np.ones((k, d))
        sign[:, -1] = np.where(np.linalg.det(u @ vt) < 0, -1.0, 1.0)
        new_a = scales[:, None, None] * ((u * sign[:, None, :]) @ vt)
        new_o = cm - np.einsum("kij,kj->ki", new_a, cs)
        a = np.where(stuck[:, None, None], a, new_a)
        o = np.where(stuck[:, None], o, new_o)
    raise AssertionError("unreachable")  # pragma: no cover


def global_start(
    fixed: NDArray, moving: NDArray, tree: cKDTree, *, scale: float, extra: list[Map],
    rng: np.random.Generator, workers: int,
) -> tuple[Map, float]:
    """Best start over all candidates; ``fixed``/``moving`` are centred (n, d) clouds.

    ``scale`` multiplies every candidate rotation (1 for rigid; the
    RMS-radius ratio for similarity).  Returns the start map and its trimmed
    cost on the scoring subsample.
    """
    d = fixed.shape[1]
    rots = np.concatenate([principal_rotations(fixed, moving), rotation_grid(d)])
    a = np.concatenate([scale * rots] + [m[0][None] for m in extra])
    o = np.concatenate([np.zeros((rots.shape[0], d))] + [m[1][None] for m in extra])
    scales = np.concatenate([np.full(rots.shape[0], scale)] + [
        np.array([abs(np.linalg.det(m[0])) ** (1.0 / d)]) for m in extra
    ])
    order = rng.permutation(fixed.shape[0])
    small = fixed[order[:N_SEARCH]]
    radius = float(np.sqrt(np.einsum("ni,ni->", fixed, fixed) / fixed.shape[0]))
    bound = BOUND * radius
    a, o, cost = _refine_batch(a, o, scales, small, moving, tree, ITER_SEARCH, bound, workers)
    best = np.argsort(cost, kind="stable")[:N_KEEP]
    large = fixed[order[:N_SCORE]]
    a, o, cost = _refine_batch(a[best], o[best], scales[best], large, moving, tree, ITER_SCORE, bound, workers)
    i = int(np.argmin(cost))
    return (a[i], o[i]), float(cost[i])
