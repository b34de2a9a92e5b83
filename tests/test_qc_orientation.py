"""QC pictures: physical aspect, radiological orientation, labels, tile edges, deformation panels.

Reported: 3-D coronal/sagittal slices ignored spacing (the lung CT's 5 mm axis
squashed ~1.8x) and had z increasing downward (diaphragm at the top); rows had
no plane name or position; quality.py used origin="lower" and qc.py did not;
same-contrast checkerboards after alignment showed no tiles.
"""

from __future__ import annotations

import numpy as np
import pytest

import regframe as rf
from regframe._views import plane_views
from regframe.errors import ShapeError
from regframe.image import Image
from regframe.registration import RegistrationState

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from regframe import qc  # noqa: E402

SPACING = (2.0, 3.0, 5.0)  # x, y, z (mm), anisotropic like the lung CT


def _marker_image(direction=None) -> tuple[Image, np.ndarray]:
    """Empty volume with one bright voxel at the patient's right, anterior, superior (LPS: -x, -y, +z)."""
    size = (20, 16, 12)  # x, y, z
    arr = np.zeros(size[::-1], dtype=np.float32)
    img = Image(arr, spacing=SPACING, origin=(-20.0, -24.0, -30.0),
                direction=np.eye(3) if direction is None else direction)
    centre = img.physical_center()
    lo, hi = img.bounding_box()
    # right (small x), anterior (small y), superior (large z): a quarter of the way in from each face
    target = np.array([lo[0] + 0.25 * (hi[0] - lo[0]), lo[1] + 0.25 * (hi[1] - lo[1]),
                       hi[2] - 0.25 * (hi[2] - lo[2])])
    idx = np.rint(img.physical_to_index(target[None, :])[0]).astype(int)
    arr[idx[2], idx[1], idx[0]] = 1.0
    img = img.with_array(arr)
    return img, idx


def _place(view, picture) -> tuple[float, float]:
    """Where the brightest pixel is, as fractions of width (0 = left) and height (0 = top)."""
    r, c = np.unravel_index(np.argmax(picture), picture.shape)
    return (c + 0.5) / picture.shape[1], (r + 0.5) / picture.shape[0]


@pytest.mark.parametrize("flip", [False, True])
def test_planes_are_radiological_and_through_the_marker(flip):
    direction = np.diag([-1.0, -1.0, 1.0]) if flip else None  # flipped storage, same anatomy on screen
    img, idx = _marker_image(direction)
    views = plane_views(img, center=tuple(idx))
    assert [v.name for v in views] == ["axial", "coronal", "sagittal"]
    places = {v.name: _place(v, v.take(img.array)) for v in views}
    if flip:  # the marker sits at other indices but the same patient position
        img2, idx2 = _marker_image(None)
        ref = {v.name: _place(v, v.take(img2.array)) for v in plane_views(img2, center=tuple(idx2))}
        for name in places:
            assert places[name] == pytest.approx(ref[name], abs=0.1)
    ax_x, ax_y = places["axial"]
    assert ax_x < 0.5 and ax_y < 0.5      # patient's right on screen left, anterior up
    co_x, co_y = places["coronal"]
    assert co_x < 0.5 and co_y < 0.5      # right on the left, superior up
    sa_x, sa_y = places["sagittal"]
    assert sa_x < 0.5 and sa_y < 0.5      # anterior on the left, superior up
    assert views[0].letters == ("R", "L", "A", "P")
    assert views[1].letters == ("R", "L", "S", "I")
    assert views[2].letters == ("A", "P", "S", "I")


def test_extents_are_physical_so_anisotropic_planes_keep_their_aspect():
    img, idx = _marker_image()
    sx, sy, sz = (n * s for n, s in zip(img.size, SPACING))
    axial, coronal, sagittal = plane_views(img)
    for view, (w, h) in ((axial, (sx, sy)), (coronal, (sx, sz)), (sagittal, (sy, sz))):
        left, right, bottom, top = view.extent
        assert right - left == pytest.approx(w)
        assert abs(top - bottom) == pytest.approx(h)
    assert axial.extent[3] < axial.extent[2]        # y grows downward on screen (anterior up)
    assert coronal.extent[3] > coronal.extent[2]    # z grows upward (superior up)
    assert sagittal.extent[3] > sagittal.extent[2]
    # titles name the plane and its position in mm
    z_mm = img.index_to_physical(np.array([[0, 0, img.size[2] // 2]], dtype=float))[0, 2]
    assert axial.title.startswith(f"axial z = {z_mm:.1f} mm (index {img.size[2] // 2} of {img.size[2]})")
    assert coronal.title.startswith("coronal y = ") and sagittal.title.startswith("sagittal x = ")


def test_lung_ct_planes_have_the_5mm_axis_at_full_height(shared_data):
    lung = rf.read_image(shared_data("lung3d", "3DCT_lung_baseline_small.mha"))
    _, coronal, sagittal = plane_views(lung)
    left, right, bottom, top = coronal.extent
    assert (top - bottom) / (right - left) == pytest.approx(64 * 5.0 / (57 * 2.732), rel=1e-3)  # 2.06, not 1.12
    assert top > bottom  # superior (diaphragm below the lungs) up
    # the diaphragm/liver (soft tissue below the lung) is in the bottom half of the coronal picture
    pic = coronal.take(lung.array)
    rows = pic.shape[0]
    lung_air = (pic < -500).mean(axis=1)
    assert lung_air[: rows // 2].mean() > lung_air[-rows // 6:].mean()


def _panel_rgb(f, m, tiles=4):
    img = Image(np.zeros(f.shape))
    view = plane_views(img)[0]
    fig, ax = plt.subplots()
    qc._checker_panel(ax, view, f, m, tiles)
    rgb = np.asarray(ax.images[0].get_array())
    n_lines = len(ax.lines)
    plt.close(fig)
    return rgb, n_lines


def test_same_contrast_checkerboard_keeps_its_tiles():
    f = np.random.default_rng(0).random((40, 40))
    rgb, n_lines = _panel_rgb(f, f.copy())
    grey = np.isclose(rgb[..., 0], rgb[..., 1])
    assert 0.3 < grey.mean() < 0.7           # half the tiles grey (fixed), half green-tinted (moving)
    assert np.all(rgb[~grey][..., 1] >= rgb[~grey][..., 0])
    assert n_lines == 6                      # 3 inner tile borders each way


def test_overlay_and_checkerboard_name_their_colours(tmp_path, monkeypatch):
    img, _ = _marker_image()
    titles = []
    orig = plt.Axes.set_title

    def spy(self, text, *a, **k):
        titles.append(text)
        return orig(self, text, *a, **k)

    monkeypatch.setattr(plt.Axes, "set_title", spy)
    path = qc.registration_report(img, img, img, tmp_path / "qc.png")
    assert path.is_file() and path.stat().st_size > 5000
    assert any("fixed magenta | moving green" in t for t in titles)
    assert any("fixed grey | moving green" in t for t in titles)
    assert sum(t.startswith("sagittal x =") for t in titles) == 4


def test_nonlinear_results_add_deformed_grid_and_jacobian(tmp_path):
    img, _ = _marker_image()
    bs = rf.BSplineTransform.from_domain(img, mesh_size=2)
    bs.parameters = np.random.default_rng(1).normal(0.0, 1.0, bs.n_parameters)
    comp = rf.CompositeTransform(3)
    comp.add_transform(rf.TranslationTransform(3))
    comp.add_transform(bs)
    assert qc._is_nonlinear(comp) and qc._is_nonlinear(bs)
    assert not qc._is_nonlinear(rf.AffineTransform(3)) and not qc._is_nonlinear(None)
    sitk = pytest.importorskip("SimpleITK")
    flat = Image(np.random.default_rng(0).random((24, 32)), spacing=(1.0, 2.0))
    warp = rf.BSplineTransform.from_domain(flat, mesh_size=2)
    warp.parameters = np.random.default_rng(1).normal(0.0, 1.0, warp.n_parameters)
    lin = qc.registration_report(flat, flat, flat, tmp_path / "lin.png", transform=rf.AffineTransform(2))
    non = qc.registration_report(flat, flat, flat, tmp_path / "non.png", transform=warp)
    w_lin = sitk.ReadImage(str(lin)).GetSize()[0]
    w_non = sitk.ReadImage(str(non)).GetSize()[0]
    assert w_non == pytest.approx(w_lin * 6 / 4, rel=0.02)  # two more columns


def test_metric_legend_counts_levels_like_the_log():
    hist = []
    for stage, n_levels in ((1, 3), (2, 2)):
        for lv in range(n_levels):
            for it in range(4):
                s = RegistrationState(level=lv, iteration=it, value=1.0 / (it + 1), gradient_norm=1.0,
                                      parameters=np.zeros(1))
                object.__setattr__(s, "stage", stage)
                hist.append(s)
    values, levels, stages = qc._history_lists(hist)
    fig, ax = plt.subplots()
    qc._plot_history(ax, values, levels, stages, {1: "rigid", 2: "bspline"})
    labels = ax.get_legend_handles_labels()[1]
    colours = {line.get_label(): line.get_color() for line in ax.get_lines() if not line.get_label().startswith("_")}
    n_boundaries = sum(1 for line in ax.get_lines() if line.get_label().startswith("_"))
    plt.close(fig)
    assert labels == ["rigid level 1/3", "rigid level 2/3", "rigid level 3/3", "bspline level 1/2",
                      "bspline level 2/2"]
    assert colours["rigid level 1/3"] == colours["rigid level 3/3"] != colours["bspline level 1/2"]
    assert n_boundaries == 4  # 2 + 1 level boundaries and 1 stage boundary


def test_deformation_plot_uses_the_same_orientation(tmp_path):
    from regframe.quality import plot_deformation

    img, _ = _marker_image()
    bs = rf.BSplineTransform.from_domain(img, mesh_size=2)
    bs.parameters = np.random.default_rng(2).normal(0.0, 1.0, bs.n_parameters)
    path = plot_deformation(bs, img, tmp_path / "d.png", background=img)
    assert path.stat().st_size > 5000
    with pytest.raises(ShapeError, match="background"):
        plot_deformation(bs, img, tmp_path / "e.png", background=Image(np.zeros((3, 3, 3))))


def test_a_result_gives_history_transform_and_stage_names(tmp_path):
    from types import SimpleNamespace

    hist = []
    for stage, n_levels in ((1, 1), (2, 2)):
        for lv in range(n_levels):
            s = RegistrationState(level=lv, iteration=0, value=1.0, gradient_norm=1.0, parameters=np.zeros(1))
            object.__setattr__(s, "stage", stage)
            hist.append(s)
    result = SimpleNamespace(history=hist, transform=rf.AffineTransform(2),
                             stages=[SimpleNamespace(kind=k) for k in ("initialize", "similarity", "affine")])
    history, transform, names = qc._from_result(result, None, None, None)
    assert history is hist and transform is result.transform
    fig, ax = plt.subplots()
    qc._plot_history(ax, *qc._history_lists(history), names)
    labels = ax.get_legend_handles_labels()[1]
    plt.close(fig)
    assert labels == ["similarity level 1/1", "affine level 1/2", "affine level 2/2"]
    path = qc.plot_metric_history(path=tmp_path / "curve.png", result=result)
    assert path.stat().st_size > 2000


def test_symmetric_results_add_the_inverse_consistency_map(tmp_path):
    """With an inverse transform the report gets one more column: |T^-1(T(x)) - x| per voxel of the plane, the
    values of ``inverse_consistency_error``."""
    from regframe.quality import draw_inverse_consistency, inverse_consistency_error

    sitk = pytest.importorskip("SimpleITK")
    flat = Image(np.random.default_rng(0).random((24, 32)), spacing=(1.0, 2.0), origin=(3.0, -5.0))
    warp = rf.BSplineTransform.from_domain(flat, mesh_size=2)
    warp.parameters = np.random.default_rng(1).normal(0.0, 1.0, warp.n_parameters)
    rough = warp.copy()
    rough.parameters = -warp.parameters  # an approximate inverse: the error is small but not zero
    non = qc.registration_report(flat, flat, flat, tmp_path / "non.png", transform=warp)
    sym = qc.registration_report(flat, flat, flat, tmp_path / "sym.png", transform=warp, inverse_transform=rough)
    assert sitk.ReadImage(str(sym)).GetSize()[0] == pytest.approx(sitk.ReadImage(str(non)).GetSize()[0] * 7 / 6,
                                                                  rel=0.02)
    view = plane_views(flat)[0]
    fig, ax = plt.subplots()
    draw_inverse_consistency(ax, warp, rough, flat, view)
    shown = np.asarray(ax.images[0].get_array())
    expected = view.take(inverse_consistency_error(warp, rough, flat).image.array)
    plt.close(fig)
    np.testing.assert_allclose(shown, expected, rtol=0, atol=1e-12)
    assert 0.0 < expected.max() < 2.0
