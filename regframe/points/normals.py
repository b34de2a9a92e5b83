"""Surface normals of a point cloud from the principal axes of each point's neighbours."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from .._validation import as_points, check_positive_int
from . import _kernels as _k

__all__ = ["estimate_normals", "NormalCache"]


def _pca_normals(points: NDArray[np.float64], neighbours: NDArray[np.int64]) -> NDArray[np.float64]:
    """Unit eigenvector of the smallest eigenvalue of each neighbourhood's covariance."""
    return _k.pca_normals(np.ascontiguousarray(points), np.ascontiguousarray(neighbours, dtype=np.int64))


def estimate_normals(
    points: ArrayLike, n_neighbors: int = 10, *, tree: cKDTree | None = None, workers: int = 1
) -> NDArray[np.float64]:
    """Unit normals (sign arbitrary) from the ``n_neighbors`` nearest points of each point.

    The normal of a point is the direction of least variance of its
    neighbourhood (the point itself included): the principal-component
    estimate Open3D and PCL use.

    Parameters
    ----------
    points : (n, ndim) array_like
    n_neighbors : int, default 10
        Neighbourhood size (at least ``ndim``).
    tree : scipy.spatial.cKDTree, optional
        A tree built on ``points`` (built here when omitted).
    workers : int, default 1
        Threads of the k-d tree query (results do not depend on it).

    Returns
    -------
    (n, ndim) ndarray of float64
    """
    pts = np.asarray(points, dtype=np.float64)
    pts = as_points(pts, pts.shape[-1] if pts.ndim == 2 else 3, where="estimate_normals()")
    k = check_positive_int(n_neighbors, where="estimate_normals()", name="n_neighbors", minimum=pts.shape[1])
    k = min(k, pts.shape[0])
    tree = cKDTree(pts) if tree is None else tree
    _, idx = tree.query(pts, k=k, workers=workers)
    return _pca_normals(pts, np.asarray(idx, dtype=np.int64).reshape(pts.shape[0], k))


class NormalCache:
    """Normals of a fixed cloud computed on demand, once per point (point-to-plane ICP).

    ICP only needs the normals of the moving points that are matched; most
    iterations run on subsamples, so computing them lazily saves most of the
    neighbour queries.
    """

    def __init__(self, points: NDArray[np.float64], tree: cKDTree, n_neighbors: int, workers: int) -> None:
        self._points = points
        self._tree = tree
        self._k = min(int(n_neighbors), points.shape[0])
        self._workers = workers
        self._normals = np.zeros_like(points)
        self._known = np.zeros(points.shape[0], dtype=bool)

    def get(self, indices: NDArray[np.int64]) -> NDArray[np.float64]:
        """Normals of ``points[indices]``."""
        missing = np.unique(indices[~self._known[indices]])
        if missing.size:
            _, nb = self._tree.query(self._points[missing], k=self._k, workers=self._workers)
            nb = np.asarray(nb, dtype=np.int64).reshape(missing.size, self._k)
            self._normals[missing] = _pca_normals(self._points, nb)
            self._known[missing] = True
        return self._normals[indices]
