"""``regframe check-gradient`` passes with its defaults on every built-in and fails on a wrong Jacobian.

The 3-D rigid/similarity checks used to fail on correct gradients (relative
errors up to 1.44): the value of an image metric jumps whenever a sample point
enters or leaves the moving image, and a central difference whose window holds
such a jump is no derivative.  The checker now retakes those differences with a
smaller step (``branch`` in :func:`regframe.testing.check_gradient`).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from regframe import cli
from regframe.commands import check_gradient as check_gradient_command
from regframe.datasets import brain_pair
from regframe.registration.api import make_metric
from regframe.testing import check_gradient
from regframe.testing.metric_checks import check_metric, physical_shift_steps

KINDS = ("translation", "rigid", "similarity", "affine", "bspline")
METRICS = ("mse", "ncc", "mattes")


def run(*argv: str) -> tuple[int, dict]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--json", *argv], stdout=out, stderr=err)
    return code, json.loads(out.getvalue())


@pytest.mark.parametrize("ndim", (2, 3))
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_builtin_passes_with_default_settings(kind, metric, ndim):
    # small phantoms keep it fast; every other option is the command's default
    code, rep = run("check-gradient", "-t", kind, "-m", metric, "--ndim", str(ndim), "--size", "20")
    assert code == 0, rep["failures"]
    assert rep["passed"] and rep["max_relative_error"] < 1e-5 and rep["direction_error"] < 1e-5


@pytest.mark.parametrize("kind", ("rigid", "similarity"))
def test_the_reported_3d_failures_pass_at_default_size(kind):
    # exactly the commands of the report (48-voxel phantoms): errors were 1e-2 .. 1.44
    code, rep = run("check-gradient", "-t", kind, "--ndim", "3", "-m", "mse")
    assert code == 0, rep["failures"]
    assert rep["max_relative_error"] < 1e-5


def test_bspline_kind_is_the_bspline_class_over_the_image():
    code, by_kind = run("check-gradient", "-t", "bspline", "-m", "mse", "--size", "20")
    assert code == 0
    code, by_class = run("check-gradient", "-t", "BSplineTransform", "-m", "mse", "--size", "20")
    assert code == 0
    assert by_kind["transform"] == by_class["transform"] == "BSplineTransform"
    assert by_kind["analytic"] == by_class["analytic"]
    assert np.count_nonzero(by_kind["analytic"]) > 10  # the grid covers the image, not the unit square


def _problem(kind: str, ndim: int, metric: str, wrong: bool):
    """The CLI's check problem, optionally with one Jacobian column sign-flipped."""
    fixed, moving = brain_pair(ndim, 20, multimodal=metric == "mattes", seed=0)
    transform = check_gradient_command._make_any_transform(kind, fixed)
    if wrong:
        base = type(transform)

        class Flipped(base):  # type: ignore[misc, valid-type]
            """A user subclass whose Jacobian has the wrong sign in column 1."""

            def _jacobian(self, points):
                jac = super()._jacobian(points)
                jac[:, :, 1] *= -1.0
                return jac

            def _jacobian_vjp(self, points, vectors):
                g = super()._jacobian_vjp(points, vectors)
                g[1] *= -1.0
                return g

        flipped = transform.copy()
        flipped.__class__ = Flipped
        transform = flipped
    rng = np.random.default_rng(0)
    pts = fixed.voxel_points()[:: max(1, fixed.n_voxels // 500)]
    transform.update_parameters(rng.normal(size=transform.n_parameters)
                                * physical_shift_steps(transform, pts, 1.0) * 0.5)
    m = make_metric(metric)
    m.initialize(fixed, moving, transform, interpolator="bspline")
    return m


@pytest.mark.parametrize("ndim", (2, 3))
@pytest.mark.parametrize("kind", ("translation", "rigid", "similarity", "affine"))
def test_a_sign_flipped_jacobian_column_fails(kind, ndim):
    right = check_metric(_problem(kind, ndim, "mse", wrong=False), rtol=1e-5)
    wrong = check_metric(_problem(kind, ndim, "mse", wrong=True), rtol=1e-5)
    assert right.passed, str(right)
    assert not wrong.passed
    assert wrong.relative_errors[1] > 0.5  # the flipped component, not a neighbour
    assert np.all(np.delete(wrong.relative_errors, 1) < 1e-5)


def test_a_sign_flipped_bspline_jacobian_fails():
    metric = _problem("bspline", 2, "mse", wrong=True)
    report = check_metric(metric, indices=[1, 2, 40], rtol=1e-5)
    assert not report.passed
    assert report.analytic[0] != 0.0 and report.relative_errors[0] > 0.5  # parameter 1, flipped
    assert np.all(report.relative_errors[1:] < 1e-5)
    assert report.direction_error > 1e-5  # one of 50 parameters wrong still shows along a random direction


def _steps(x):
    """A piecewise-smooth function: a parabola with a small jump every 1e-5."""
    jumps = np.floor(x[0] * 1e5)
    return float(x[0] ** 2 + x[1] ** 2 + 1e-7 * jumps), np.array([2 * x[0], 2 * x[1]]), int(jumps)


def test_check_gradient_steps_around_jumps_only_with_a_branch_key():
    def vg(x):
        v, g, _ = _steps(x)
        return v, g

    x0 = np.array([0.30000004, -0.2])
    plain = check_gradient(vg, x0, steps=1e-4, rtol=1e-5)
    keyed = check_gradient(vg, x0, steps=1e-4, rtol=1e-5, branch=lambda x: _steps(x)[2])
    assert not plain.passed  # the jumps poison the plain difference
    assert keyed.passed, str(keyed)
    assert keyed.used_steps[0] < 1e-5 and keyed.used_steps[1] == 1e-4  # only component 0 was refined
