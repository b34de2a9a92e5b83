"""The public checkers detect what they claim to detect."""

from __future__ import annotations

import numpy as np
import pytest

from regframe.testing import check_gradient, check_transform
from regframe.transforms import AffineTransform, MatrixOffsetTransformBase


class _WrongCentreAffine(AffineTransform):
    """Affine whose Jacobian forgets the centre (the classic ITK bug)."""

    def _jacobian(self, points):
        saved = self._center
        self._center = np.zeros(self.ndim)
        try:
            return super()._jacobian(points)
        finally:
            self._center = saved

    def _jacobian_vjp(self, points, vectors):
        return np.einsum("sik,si->k", self._jacobian(points), vectors)


def _affine(cls=AffineTransform):
    t = cls(2)
    t.fixed_parameters = [15.0, -8.0]
    t.parameters = [1.1, 0.2, -0.1, 0.95, 3.0, -4.0]
    return t


def test_check_transform_passes_on_affine():
    report = check_transform(_affine())
    assert report.passed
    assert report.jacobian_error < 1e-6
    assert report.inverse_error < 1e-9


def test_check_transform_detects_wrong_jacobian():
    report = check_transform(_affine(_WrongCentreAffine), raise_on_failure=False)
    assert not report.passed
    assert report.jacobian_error > 1e-2
    with pytest.raises(AssertionError, match="parameter Jacobian"):
        check_transform(_affine(_WrongCentreAffine))


def test_check_transform_detects_inconsistent_vjp():
    class BadVjp(AffineTransform):
        def _jacobian_vjp(self, points, vectors):
            return 1.01 * super()._jacobian_vjp(points, vectors)

    report = check_transform(_affine(BadVjp), raise_on_failure=False)
    assert any("jacobian_vjp" in f for f in report.failures)


def test_check_transform_does_not_modify_input():
    t = _affine()
    before = t.parameters
    check_transform(t)
    np.testing.assert_array_equal(t.parameters, before)


def test_check_gradient_quadratic_and_failure():
    a = np.array([[3.0, 1.0], [1.0, 2.0]])

    def f(x):
        return 0.5 * x @ a @ x, a @ x

    ok = check_gradient(f, [0.3, -1.2], steps=1e-5)
    assert ok.passed and ok.max_relative_error < 1e-8
    bad = check_gradient(lambda x: (f(x)[0], 1.1 * f(x)[1]), [0.3, -1.2], steps=1e-5)
    assert not bad.passed
    assert bad.max_relative_error == pytest.approx(0.1 / 1.1, rel=1e-6)
    assert "rel. error" in bad.table()


def test_user_linear_subclass_example_passes():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "custom_transform.py"
    spec = importlib.util.spec_from_file_location("custom_transform", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t = mod.main()
    assert isinstance(t, MatrixOffsetTransformBase)
    # the subclass got a working inverse and position Jacobian for free
    x = np.array([[1.0, 2.0], [-3.0, 4.0]])
    np.testing.assert_allclose(t.inverse().transform_points(t.transform_points(x)), x, atol=1e-12)
    np.testing.assert_allclose(t.jacobian_position(x)[0], t.matrix)
