"""The documentation: the mkdocs site builds without warnings, and the derivative chapter is right.

``docs/derivatives.md`` derives the mean-squares gradient for a 2-D rigid
transform.  Here its formulas are re-implemented in plain numpy - bilinear
interpolation and its exact gradient following the rules in
``docs/conventions.md``, the rigid Jacobian ``R'(theta)(x - c)``, the chain
rule - and compared with regframe's own ``MeanSquares`` gradient.  The lever
arm, the physical-shift scales and the 3-D versor Jacobian stated on the page
are checked too, and the page's code snippet is executed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import regframe as rf
from regframe.datasets import brain_pair
from regframe.metrics import FullSampler, MeanSquares
from regframe.optimizers import PhysicalShiftScales

ROOT = Path(__file__).resolve().parents[1]
DERIVATIVES = ROOT / "docs" / "derivatives.md"


# ----------------------------------------------------------------------- the site
@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("pymdownx") is None,
    reason="mkdocs and pymdown-extensions are not installed (pip install '.[docs]')",
)
def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    html = (tmp_path / "site" / "derivatives" / "index.html").read_text()
    assert "arithmatex" in html                      # the maths is marked up for MathJax


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    missing = sorted(p for p in pages if p not in nav)
    assert not missing, f"pages not listed in mkdocs.yml nav: {missing}"


# ------------------------------------------------------------- plain numpy maths
def bilinear_with_gradient(image: rf.Image, points: np.ndarray):
    """Value, physical gradient and inside flag of the linear interpolant (conventions.md rules)."""
    arr = np.asarray(image.array, dtype=np.float64)          # (ny, nx)
    size = np.array(image.size)                             # (nx, ny)
    ci = (image.physical_to_index_matrix @ (points - image.origin).T).T
    inside = np.all((ci >= -0.5) & (ci < size - 0.5), axis=1)
    base = np.maximum(np.floor(ci), 0).astype(int)
    base = np.minimum(base, size - 1)
    frac = np.maximum(ci - base, 0.0)
    upper = np.minimum(base + 1, size - 1)
    x0, y0, x1, y1 = base[:, 0], base[:, 1], upper[:, 0], upper[:, 1]
    fx, fy = frac[:, 0], frac[:, 1]
    v00, v10, v01, v11 = arr[y0, x0], arr[y0, x1], arr[y1, x0], arr[y1, x1]
    a = v00 + fx * (v10 - v00)
    b = v01 + fx * (v11 - v01)
    value = a + fy * (b - a)
    # derivative of that function; zero along an axis where it is constant (skirt)
    dx = (v10 - v00) * (1 - fy) + (v11 - v01) * fy
    dy = b - a
    live = (ci >= 0) & (ci < size - 1)
    g_index = np.stack([np.where(live[:, 0], dx, 0.0), np.where(live[:, 1], dy, 0.0)], axis=1)
    g_phys = g_index @ image.physical_to_index_matrix       # P2I^T g per row
    return value, g_phys, inside


def rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def mean_squares_by_the_page(fixed, moving, theta, t, c):
    """C and dC/d(theta, tx, ty) exactly as derived in docs/derivatives.md."""
    x = fixed.voxel_points()
    f = np.asarray(fixed.array, dtype=np.float64).ravel()
    d = x - c
    y = d @ rotation(theta).T + c + t                       # T(x) = R (x - c) + c + t
    m, grad_m, valid = bilinear_with_gradient(moving, y)
    n = int(valid.sum())
    r = (m - f)[valid]
    value = np.sum(r * r) / n
    dr = np.array([[-np.sin(theta), -np.cos(theta)], [np.cos(theta), -np.sin(theta)]])  # R'(theta)
    dT_dtheta = d[valid] @ dr.T                             # R'(theta)(x - c)
    u = 2.0 * r / n                                         # dC/dM per sample
    g = grad_m[valid]
    grad = np.array([
        np.sum(u * np.sum(g * dT_dtheta, axis=1)),          # theta
        np.sum(u * g[:, 0]),                                 # tx
        np.sum(u * g[:, 1]),                                 # ty
    ])
    return value, grad, dT_dtheta, d[valid]


@pytest.fixture(scope="module")
def images():
    fixed, base = brain_pair(2, 64, seed=4)
    # an oblique, anisotropic moving grid makes the physical-gradient rule matter
    moving = rf.Image(base.array, spacing=(1.0, 1.3), origin=base.origin + [0.4, -0.7],
                      direction=rotation(0.1))
    return fixed, moving


@settings(max_examples=15, deadline=None)
@given(theta=st.floats(-0.4, 0.4), tx=st.floats(-6, 6), ty=st.floats(-6, 6))
def test_page_formulas_match_regframe_mean_squares(images, theta, tx, ty):
    fixed, moving = images
    c = fixed.physical_center() + np.array([3.0, -2.0])
    value, grad, _, _ = mean_squares_by_the_page(fixed, moving, theta, np.array([tx, ty]), c)

    t = rf.Euler2DTransform()
    t.fixed_parameters = c
    t.parameters = [theta, tx, ty]
    metric = MeanSquares()
    metric.initialize(fixed, moving, t, interpolator="linear", sampler=FullSampler())
    v_rf, g_rf = metric.value_and_gradient()
    assert v_rf == pytest.approx(value, rel=1e-11)
    np.testing.assert_allclose(g_rf, grad, rtol=1e-9, atol=1e-9 * np.abs(grad).max())


def test_lever_arm_and_physical_shift_scales(images):
    fixed, moving = images
    c = fixed.physical_center()
    _, _, dT_dtheta, d = mean_squares_by_the_page(fixed, moving, 0.05, np.array([2.0, -1.0]), c)
    # |R'(theta)(x - c)| = |x - c| exactly: the lever arm
    np.testing.assert_allclose(np.linalg.norm(dT_dtheta, axis=1), np.linalg.norm(d, axis=1), rtol=1e-12)
    # scales: s_theta ~ max |x - c|^2 over the corners, s_t = 1
    t = rf.Euler2DTransform()
    t.fixed_parameters = c
    lo, hi = fixed.bounding_box()
    corners = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]])
    scales = PhysicalShiftScales(points=corners).estimate(t)
    lever = np.max(np.linalg.norm(corners - c, axis=1))
    assert scales[0] == pytest.approx(lever**2, rel=1e-3)
    np.testing.assert_allclose(scales[1:], 1.0, rtol=1e-9)


@settings(max_examples=10, deadline=None)
@given(v=st.tuples(*[st.floats(-0.5, 0.5)] * 3))
def test_versor_jacobian_is_R_times_e_cross_d(v):
    t = rf.VersorRigid3DTransform()
    t.fixed_parameters = [4.0, -3.0, 2.0]
    t.update_parameters(np.array([*v, 1.0, 2.0, 3.0]))
    rng = np.random.default_rng(7)
    x = rng.normal(scale=30.0, size=(6, 3))
    d = x - t.center
    jac = t.jacobian(x)
    for k in range(3):
        e = np.zeros(3)
        e[k] = 1.0
        want = np.cross(e, d) @ t.matrix.T                  # R (e_k x (x - c))
        np.testing.assert_allclose(jac[:, :, k], want, atol=1e-10)


def test_page_snippet_runs(capsys):
    text = DERIVATIVES.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the derivative chapter should end with a runnable snippet"
    exec(compile(blocks[-1], str(DERIVATIVES), "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    assert "PASSED" in out
