"""Hypothesis strategies for random transforms, points and images.

Every transform is built the ITK way - default-constructed, then configured by
assigning ``fixed_parameters`` and ``parameters`` - so the strategies also
exercise the parameter layouts.  Centres are never zero.

Requires the ``hypothesis`` package (a test dependency).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .. import transforms as _tr

__all__ = [
    "angles",
    "centers",
    "points",
    "linear_transforms",
    "bspline_transforms",
    "displacement_field_transforms",
    "composite_transforms",
    "transforms",
    "images",
    "smooth_arrays",
]

_finite = {"allow_nan": False, "allow_infinity": False}


def angles(max_angle: float = 0.6) -> st.SearchStrategy[float]:
    """Rotation angles in radians within ``[-max_angle, max_angle]``."""
    return st.floats(-max_angle, max_angle, **_finite)


def _vec(ndim: int, lo: float, hi: float) -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.floats(lo, hi, **_finite), min_size=ndim, max_size=ndim).map(np.array)


def centers(ndim: int, extent: float = 80.0) -> st.SearchStrategy[np.ndarray]:
    """Non-zero centres of rotation (every component at least 1 mm from 0)."""
    comp = st.one_of(st.floats(1.0, extent, **_finite), st.floats(-extent, -1.0, **_finite))
    return st.lists(comp, min_size=ndim, max_size=ndim).map(np.array)


def points(ndim: int, n: int = 12, extent: float = 60.0) -> st.SearchStrategy[np.ndarray]:
    """``(n, ndim)`` arrays of physical points."""
    return st.integers(0, 2**31 - 1).map(
        lambda s: np.random.default_rng(s).uniform(-extent, extent, size=(n, ndim))
    )


def _versor(max_angle: float) -> st.SearchStrategy[np.ndarray]:
    return st.tuples(_vec(3, -1.0, 1.0).filter(lambda a: np.linalg.norm(a) > 1e-3), angles(max_angle)).map(
        lambda t: np.sin(t[1] / 2.0) * t[0] / np.linalg.norm(t[0])
    )


def _build(cls_name: str, ndim: int | None, fixed: np.ndarray, params: np.ndarray):
    cls = getattr(_tr, cls_name)
    t = cls(ndim) if ndim is not None else cls()
    t.fixed_parameters = fixed
    t.parameters = params
    return t


def linear_transforms(ndim: int, max_angle: float = 0.6) -> st.SearchStrategy:
    """Any built-in linear transform of dimension ``ndim`` at random parameters."""
    c = centers(ndim)
    t = _vec(ndim, -20.0, 20.0)
    scale = st.floats(0.7, 1.4, **_finite)
    affine = st.tuples(c, _vec(ndim * ndim, -0.3, 0.3), t).map(
        lambda a: _build("AffineTransform", ndim, a[0], np.concatenate([(np.eye(ndim) + a[1].reshape(ndim, ndim)).ravel(), a[2]]))
    )
    translation = t.map(lambda p: _build("TranslationTransform", ndim, np.zeros(0), p))
    options = [affine, translation]
    if ndim == 2:
        if hasattr(_tr, "Euler2DTransform"):
            options.append(st.tuples(c, angles(max_angle), t).map(
                lambda a: _build("Euler2DTransform", None, a[0], np.r_[a[1], a[2]])))
        if hasattr(_tr, "Similarity2DTransform"):
            options.append(st.tuples(c, scale, angles(max_angle), t).map(
                lambda a: _build("Similarity2DTransform", None, a[0], np.r_[a[1], a[2], a[3]])))
    else:
        if hasattr(_tr, "Euler3DTransform"):
            options.append(st.tuples(c, _vec(3, -max_angle, max_angle), t, st.booleans()).map(
                lambda a: _build("Euler3DTransform", None, np.r_[a[0], float(a[3])], np.r_[a[1], a[2]])))
        if hasattr(_tr, "VersorRigid3DTransform"):
            options.append(st.tuples(c, _versor(max_angle), t).map(
                lambda a: _build("VersorRigid3DTransform", None, a[0], np.r_[a[1], a[2]])))
        if hasattr(_tr, "Similarity3DTransform"):
            options.append(st.tuples(c, _versor(max_angle), t, scale).map(
                lambda a: _build("Similarity3DTransform", None, a[0], np.r_[a[1], a[2], a[3]])))
    return st.one_of(*options)


def _oblique_direction(ndim: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if ndim == 2:
        return np.array([[c, -s], [s, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def bspline_transforms(ndim: int, max_mesh: int = 4, amplitude: float = 0.15) -> st.SearchStrategy:
    """Cubic B-spline transforms on small oblique grids with random coefficients.

    Coefficients are at most ``amplitude`` times the smallest grid spacing, small
    enough for the deformation to be invertible.
    """

    def make(args):
        mesh, origin, spacing, angle, seed = args
        size = np.array(mesh) + 3
        fixed = np.concatenate([size, origin, spacing, _oblique_direction(ndim, angle).ravel()])
        n = int(np.prod(size)) * ndim
        bound = amplitude * float(np.min(spacing))
        params = np.random.default_rng(seed).uniform(-bound, bound, n)
        return _build("BSplineTransform", ndim, fixed, params)

    return st.tuples(
        st.lists(st.integers(1, max_mesh), min_size=ndim, max_size=ndim),
        _vec(ndim, -30.0, 30.0),
        _vec(ndim, 8.0, 25.0),
        st.floats(-0.4, 0.4, **_finite),
        st.integers(0, 2**31 - 1),
    ).map(make)


def displacement_field_transforms(ndim: int, max_size: int = 8, amplitude: float = 0.2) -> st.SearchStrategy:
    """Displacement-field transforms on small oblique grids with random invertible fields.

    Displacements are at most ``amplitude`` times the smallest spacing and vanish on
    the border of the grid, so the field is continuous across the buffer edge and
    invertible on the same grid.
    """

    def make(args):
        size, origin, spacing, angle, seed = args
        size = np.array(size)
        fixed = np.concatenate([size, origin, spacing, _oblique_direction(ndim, angle).ravel()])
        shape = tuple(int(v) for v in size[::-1])  # numpy order, x fastest in the ravel
        window = np.ones(shape)
        for axis, n in enumerate(shape):
            w = np.ones(n)
            w[0] = w[-1] = 0.0
            window = window * w.reshape([-1 if a == axis else 1 for a in range(len(shape))])
        rng = np.random.default_rng(seed)
        field = rng.uniform(-1.0, 1.0, shape + (ndim,)) * window[..., None] * amplitude * float(np.min(spacing))
        return _build("DisplacementFieldTransform", ndim, fixed, field.reshape(-1))

    return st.tuples(
        st.lists(st.integers(3, max_size), min_size=ndim, max_size=ndim),
        _vec(ndim, -20.0, 20.0),
        _vec(ndim, 4.0, 10.0),
        st.floats(-0.4, 0.4, **_finite),
        st.integers(0, 2**31 - 1),
    ).map(make)


def composite_transforms(ndim: int) -> st.SearchStrategy:
    """Composites of two or three linear transforms (all members optimised)."""

    def make(members):
        comp = _tr.CompositeTransform(ndim)
        for m in members:
            comp.add_transform(m)
        return comp

    return st.lists(linear_transforms(ndim, max_angle=0.4), min_size=2, max_size=3).map(make)


def transforms(ndim: int) -> st.SearchStrategy:
    """Any built-in transform of dimension ``ndim`` (linear, B-spline, field, composite)."""
    options = [linear_transforms(ndim)]
    if hasattr(_tr, "BSplineTransform"):
        options.append(bspline_transforms(ndim))
    if hasattr(_tr, "DisplacementFieldTransform"):
        options.append(displacement_field_transforms(ndim))
    if hasattr(_tr, "CompositeTransform"):
        options.append(composite_transforms(ndim))
    return st.one_of(*options)


def smooth_arrays(shape: tuple[int, ...], seed: int, n_blobs: int = 4) -> np.ndarray:
    """A smooth, asymmetric test array: a sum of anisotropic Gaussian blobs plus a ramp."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    out = np.zeros(shape)
    for _ in range(n_blobs):
        centre = [rng.uniform(0.2 * s, 0.8 * s) for s in shape]
        width = [rng.uniform(0.12 * s, 0.3 * s) for s in shape]
        amp = rng.uniform(50.0, 150.0)
        out += amp * np.exp(-sum(((g - c) / w) ** 2 for g, c, w in zip(grids, centre, width)))
    out += sum(rng.uniform(-1, 1) * g for g in grids)
    return out


def images(ndim: int, min_size: int = 12, max_size: int = 24, oblique: bool = True) -> st.SearchStrategy:
    """Small smooth asymmetric :class:`~regframe.image.Image` objects with random geometry."""
    from ..image import Image

    def make(args):
        size, spacing, origin, angle, seed = args
        shape = tuple(reversed(size))
        arr = smooth_arrays(shape, seed)
        direction = _oblique_direction(ndim, angle if oblique else 0.0)
        return Image(arr, spacing=spacing, origin=origin, direction=direction)

    return st.tuples(
        st.lists(st.integers(min_size, max_size), min_size=ndim, max_size=ndim),
        _vec(ndim, 0.5, 2.0),
        _vec(ndim, -20.0, 20.0),
        st.floats(-0.5, 0.5, **_finite),
        st.integers(0, 2**31 - 1),
    ).map(make)
