"""The public checker, run on every built-in transform kind (as users run it on theirs)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from regframe.testing import check_transform
from regframe.testing import strategies as rs

_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))

KINDS = {
    "linear": rs.linear_transforms,
    "bspline": rs.bspline_transforms,
    "displacement_field": rs.displacement_field_transforms,
    "composite": rs.composite_transforms,
}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_check_transform_passes_on_builtin(kind, ndim):
    worst = []

    @_SETTINGS
    @given(KINDS[kind](ndim))
    def run(transform):
        # a displacement field's inverse lives on the same grid, so it is exact only at
        # grid nodes; tests/test_transforms_displacement.py checks it there
        report = check_transform(
            transform, check_inverse=type(transform).__name__ != "DisplacementFieldTransform"
        )
        worst.append(report.jacobian_error)

    run()
    assert worst and max(worst) <= 1e-6
