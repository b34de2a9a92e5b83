"""Deformation quality measures (issue 6): Jacobian determinant, folding, inverse consistency."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regframe import AffineTransform, BSplineTransform, CompositeTransform, Image, TranslationTransform
from regframe.errors import InvalidInputError, ShapeError
from regframe.quality import folding_fraction, inverse_consistency_error, jacobian_determinant


def _bspline(ndim: int, ref: Image, sigma: float, seed: int, mesh: int = 3) -> BSplineTransform:
    t = BSplineTransform.from_domain(ref, mesh_size=mesh)
    t.parameters = np.random.default_rng(seed).normal(0.0, sigma, t.n_parameters)
    return t


def _fd_determinant(transform, points: np.ndarray, h: float = 1e-5) -> np.ndarray:
    n, d = points.shape
    jac = np.empty((n, d, d))
    for a in range(d):
        e = np.zeros(d)
        e[a] = h
        jac[:, :, a] = (transform.transform_points(points + e) - transform.transform_points(points - e)) / (2 * h)
    return np.linalg.det(jac)


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_determinant_matches_finite_differences(ndim):
    ref = Image(np.zeros((9,) * ndim), spacing=[1.0, 1.3, 0.8][:ndim], origin=[2.0, -1.0, 0.5][:ndim])
    t = _bspline(ndim, ref, 1.0, seed=ndim)
    det = jacobian_determinant(t, ref)
    assert det.same_geometry(ref) and det.array.shape == ref.shape
    fd = _fd_determinant(t, ref.voxel_points())
    np.testing.assert_allclose(det.array.ravel(), fd, rtol=1e-7, atol=1e-8)
    assert np.ptp(det.array) > 0.05  # a non-trivial field


def test_jacobian_determinant_matches_simpleitk():
    """SimpleITK's DisplacementFieldJacobianDeterminant (finite differences) on the same field."""
    sitk = pytest.importorskip("SimpleITK")
    from regframe.registration import displacement_field

    ref = Image(np.zeros((40, 48)), spacing=(0.7, 0.9))
    t = _bspline(2, ref, 0.8, seed=5, mesh=4)
    field = sitk.GetImageFromArray(displacement_field(t, ref), isVector=True)
    field.SetSpacing(tuple(ref.spacing))
    sitk_det = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field, True))
    ours = jacobian_determinant(t, ref).array
    inner = (slice(2, -2), slice(2, -2))  # SimpleITK's one-sided borders differ by construction
    err = np.max(np.abs(ours[inner] - sitk_det[inner]))
    assert err < 5e-3, err  # central differences of a smooth spline at voxel spacing


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.5, 1.5),
    shear=st.floats(-0.3, 0.3),
)
def test_determinant_of_composite_is_product(seed, scale, shear):
    """det d(A o B)/dx = det(A) det(dB/dx) for a linear A applied after a B-spline B."""
    ref = Image(np.zeros((7, 8)), spacing=(1.1, 0.9))
    b = _bspline(2, ref, 0.5, seed)
    a = AffineTransform(2)
    a.parameters = [scale, shear, 0.1, 1.0, 3.0, -2.0]
    comp = CompositeTransform(2)
    comp.add_transform(a)
    comp.add_transform(b)
    expected = np.linalg.det(a.matrix) * jacobian_determinant(b, ref).array
    np.testing.assert_allclose(jacobian_determinant(comp, ref).array, expected, rtol=1e-12, atol=1e-14)


def test_folding_fraction():
    ref = Image(np.zeros((30, 30)))
    identity = BSplineTransform.from_domain(ref, mesh_size=3)
    assert folding_fraction(identity, ref) == 0.0
    folded = _bspline(2, ref, 8.0, seed=2)  # coefficients comparable to the 10-voxel spacing fold the map
    det = jacobian_determinant(folded, ref)
    frac = folding_fraction(det)
    assert frac == pytest.approx(np.mean(det.array <= 0))
    assert 0.0 < frac < 1.0
    assert folding_fraction(folded, ref) == frac
    mask = det.array <= 0
    assert folding_fraction(det, mask=mask) == 1.0
    assert folding_fraction(det, mask=~mask) == 0.0
    with pytest.raises(InvalidInputError, match="reference"):
        folding_fraction(folded)
    with pytest.raises(ShapeError):
        folding_fraction(det, mask=np.ones((3, 3)))


def test_inverse_consistency_of_exact_inverse_is_zero():
    ref = Image(np.zeros((20, 24)), spacing=(1.0, 1.2))
    t = _bspline(2, ref, 0.6, seed=4)
    ice = inverse_consistency_error(t, t.inverse(tolerance=1e-10), ref)
    assert ice.max < 1e-8
    assert ice.image.same_geometry(ref)


def test_inverse_consistency_error_of_mismatched_translations():
    """forward +t1, backward -t2: the error is |t1 - t2| at every voxel."""
    ref = Image(np.zeros((5, 6, 7)))
    f = TranslationTransform(3)
    f.parameters = [1.0, 2.0, -1.0]
    b = TranslationTransform(3)
    b.parameters = [-1.5, -2.0, 1.0]
    ice = inverse_consistency_error(f, b, ref)
    np.testing.assert_allclose(ice.image.array, 0.5)
    assert ice.mean == pytest.approx(0.5) and ice.max == pytest.approx(0.5) and ice.rms == pytest.approx(0.5)
    mask = np.zeros(ref.shape, dtype=bool)
    mask[0, 0, 0] = True
    assert inverse_consistency_error(f, b, ref, mask=mask).p95 == pytest.approx(0.5)


def test_quality_input_validation():
    ref = Image(np.zeros((4, 4)))
    with pytest.raises(ShapeError):
        jacobian_determinant(TranslationTransform(3), ref)
    with pytest.raises(InvalidInputError, match="Image"):
        jacobian_determinant(TranslationTransform(2), np.zeros((4, 4)))  # type: ignore[arg-type]


def test_plot_deformation_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from regframe.quality import plot_deformation

    ref = Image(np.random.default_rng(0).random((32, 32)))
    t = _bspline(2, ref, 6.0, seed=1)
    path = plot_deformation(t, ref, tmp_path / "grid.png", background=ref)
    assert path.exists() and path.stat().st_size > 1000
