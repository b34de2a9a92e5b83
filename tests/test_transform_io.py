"""ITK transform files: regframe <-> SimpleITK in both directions, bit-exact parameters."""

from __future__ import annotations

import re
import struct
import warnings

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import regframe
from regframe.errors import RegframeWarning, TransformFileError
from regframe.transforms import (
    AffineTransform,
    CompositeTransform,
    Euler2DTransform,
    Euler3DTransform,
    Similarity2DTransform,
    Similarity3DTransform,
    TranslationTransform,
    VersorRigid3DTransform,
    VersorTransform,
)
from regframe.transforms.io import (
    format_number,
    format_transform,
    from_sitk_transform,
    parse_transform,
    read_transform,
    to_sitk_transform,
    write_transform,
)
from regframe.transforms.registry import create_transform, register_transform

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the reference reader/writer")

_f = dict(allow_nan=False, allow_infinity=False)


@pytest.fixture(autouse=True, scope="module")
def _one_numba_thread():
    """Small batches: avoid OpenMP launch overhead (results are thread-count independent)."""
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


def _examples(rng: np.random.Generator) -> dict[str, object]:
    """One transform of every type at random parameters with non-zero centres."""
    out: dict[str, object] = {}
    out["euler2d"] = Euler2DTransform(center=rng.uniform(-50, 50, 2), angle=rng.uniform(-3, 3), translation=rng.uniform(-9, 9, 2))
    out["similarity2d"] = Similarity2DTransform(
        center=rng.uniform(-50, 50, 2), scale=rng.uniform(0.5, 2), angle=rng.uniform(-3, 3), translation=rng.uniform(-9, 9, 2)
    )
    for zyx in (False, True):
        out[f"euler3d_{int(zyx)}"] = Euler3DTransform(
            center=rng.uniform(-50, 50, 3), angles=rng.uniform(-3, 3, 3), translation=rng.uniform(-9, 9, 3), compute_zyx=zyx
        )
    v = VersorRigid3DTransform(center=rng.uniform(-50, 50, 3), translation=rng.uniform(-9, 9, 3))
    v.set_rotation(rng.standard_normal(3), rng.uniform(-3, 3))
    out["versorrigid3d"] = v
    vt = VersorTransform(center=rng.uniform(-50, 50, 3))
    vt.set_rotation(rng.standard_normal(3), rng.uniform(-3, 3))
    out["versor3d"] = vt
    s3 = Similarity3DTransform(center=rng.uniform(-50, 50, 3), translation=rng.uniform(-9, 9, 3), scale=rng.uniform(0.5, 2))
    s3.set_rotation(rng.standard_normal(3), rng.uniform(-3, 3))
    out["similarity3d"] = s3
    for d in (2, 3):
        a = AffineTransform(d)
        a.fixed_parameters = rng.uniform(-50, 50, d)
        a.parameters = np.r_[(np.eye(d) + rng.uniform(-0.4, 0.4, (d, d))).ravel(), rng.uniform(-9, 9, d)]
        out[f"affine{d}d"] = a
        tr = TranslationTransform(d)
        tr.parameters = rng.uniform(-9, 9, d)
        out[f"translation{d}d"] = tr
    out["composite2d"] = CompositeTransform(2, [out["euler2d"].copy(), out["affine2d"].copy(), out["translation2d"].copy()])
    out["composite3d"] = CompositeTransform(3, [out["similarity3d"].copy(), out["euler3d_1"].copy()])
    return out


KINDS = sorted(_examples(np.random.default_rng(0)))


def _sitk_points(s, pts):
    return np.array([s.TransformPoint(p) for p in pts.tolist()])


def _bits(x: np.ndarray) -> list[bytes]:
    return [struct.pack("<d", float(v)) for v in np.asarray(x).ravel()]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("suffix", [".tfm", ".txt"])
def test_regframe_written_file_read_by_simpleitk(kind, suffix, tmp_path, rng) -> None:
    t = _examples(rng)[kind]
    path = tmp_path / f"t{suffix}"
    write_transform(t, path)
    s = sitk.ReadTransform(str(path))
    pts = rng.uniform(-80, 80, (10, t.ndim))
    assert np.max(np.abs(_sitk_points(s, pts) - t.transform_points(pts))) <= 1e-9
    if not isinstance(t, CompositeTransform):
        assert _bits(s.GetParameters()) == _bits(t.parameters)
        assert _bits(s.GetFixedParameters()) == _bits(t.fixed_parameters)


@pytest.mark.parametrize("kind", KINDS)
def test_simpleitk_written_file_read_by_regframe(kind, tmp_path, rng) -> None:
    t = _examples(rng)[kind]
    s = to_sitk_transform(t)
    path = tmp_path / "sitk.tfm"
    sitk.WriteTransform(s, str(path))
    back = read_transform(path)
    assert type(back) is type(t)
    pts = rng.uniform(-80, 80, (10, t.ndim))
    assert np.max(np.abs(back.transform_points(pts) - _sitk_points(s, pts))) <= 1e-9
    assert _bits(back.parameters) == _bits(t.parameters)
    assert _bits(back.fixed_parameters) == _bits(t.fixed_parameters)
    # our writer produces the same bytes as ITK's
    assert format_transform(back) == path.read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_hdf5_round_trip(kind, tmp_path, rng) -> None:
    t = _examples(rng)[kind]
    path = tmp_path / "t.h5"
    write_transform(t, path)
    back = read_transform(path)
    assert type(back) is type(t)
    assert _bits(back.parameters) == _bits(t.parameters)
    s = sitk.ReadTransform(str(path))
    pts = rng.uniform(-80, 80, (5, t.ndim))
    assert np.max(np.abs(_sitk_points(s, pts) - t.transform_points(pts))) <= 1e-9


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=300, deadline=None)
@given(finite)
def test_number_format_round_trips_bit_exactly(x: float) -> None:
    text = format_number(x)
    assert struct.pack("<d", float(text)) == struct.pack("<d", x)
    assert " " not in text
    assert re.search(r"e[+-]0\d", text) is None  # ITK style: no zero-padded exponent


def test_number_format_is_itks(tmp_path) -> None:
    values = [1e16, 1e21, 1e-6, 1e-7, 0.1, 5.0, -2.5e-7, 12345678901234567890.0, 5e-324, 1.7976931348623157e308]
    t = TranslationTransform(2)
    path = tmp_path / "n.tfm"
    for i in range(0, len(values), 2):
        s = sitk.TranslationTransform(2, values[i : i + 2])
        sitk.WriteTransform(s, str(path))
        line = path.read_text().splitlines()[3]
        t.parameters = values[i : i + 2]
        assert line == "Parameters: " + " ".join(format_number(v) for v in t.parameters)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, **_f), min_size=2, max_size=2),
    st.floats(-1e3, 1e3, **_f),
    st.lists(finite.filter(lambda v: abs(v) < 1e300), min_size=2, max_size=2),
)
def test_text_round_trip_is_bit_exact(center, angle, translation) -> None:
    t = Euler2DTransform(center=center, angle=angle, translation=translation)
    back = parse_transform(format_transform(t))
    assert _bits(back.parameters) == _bits(t.parameters)
    assert _bits(back.fixed_parameters) == _bits(t.fixed_parameters)


# ----------------------------------------------------------- local-support types
def test_bspline_file_from_simpleitk(tmp_path, rng) -> None:
    pytest.importorskip("regframe.transforms.bspline", reason="BSplineTransform not available yet")
    img = sitk.Image([40, 30], sitk.sitkFloat32)
    img.SetOrigin((-10.0, 5.0))
    img.SetSpacing((1.5, 2.0))
    s = sitk.BSplineTransformInitializer(img, [3, 2])
    s.SetParameters(rng.uniform(-2, 2, len(s.GetParameters())).tolist())
    path = tmp_path / "b.tfm"
    sitk.WriteTransform(s, str(path))
    t = read_transform(path)
    assert t.itk_name == "BSplineTransform"
    assert _bits(t.parameters) == _bits(s.GetParameters())
    pts = np.c_[rng.uniform(-9, 48, 30), rng.uniform(6, 62, 30)]
    assert np.max(np.abs(t.transform_points(pts) - _sitk_points(s, pts))) <= 1e-9
    out = tmp_path / "b2.tfm"
    write_transform(t, out)
    assert out.read_text() == path.read_text()
    s2 = sitk.ReadTransform(str(out))
    assert np.max(np.abs(_sitk_points(s2, pts) - t.transform_points(pts))) <= 1e-9


def test_displacement_field_file_from_simpleitk(tmp_path, rng) -> None:
    pytest.importorskip("regframe.transforms.displacement", reason="DisplacementFieldTransform not available yet")
    arr = rng.uniform(-2, 2, (6, 7, 2))
    img = sitk.GetImageFromArray(arr, isVector=True)
    img.SetOrigin((3.0, -4.0))
    img.SetSpacing((2.0, 1.5))
    s = sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))
    path = tmp_path / "d.tfm"
    sitk.WriteTransform(s, str(path))
    t = read_transform(path)
    assert t.itk_name == "DisplacementFieldTransform"
    pts = np.c_[rng.uniform(3, 15, 20), rng.uniform(-4, 4, 20)]
    assert np.max(np.abs(t.transform_points(pts) - _sitk_points(s, pts))) <= 1e-9
    out = tmp_path / "d2.tfm"
    write_transform(t, out)
    s2 = sitk.ReadTransform(str(out))
    assert np.max(np.abs(_sitk_points(s2, pts) - t.transform_points(pts))) <= 1e-9


# ---------------------------------------------------------------- aliases, errors
def _text(name: str, params: str, fixed: str) -> str:
    return f"#Insight Transform File V1.0\n#Transform 0\nTransform: {name}\nParameters: {params}\nFixedParameters: {fixed}\n"


def test_itk_aliases_and_variants() -> None:
    t = parse_transform(_text("Rigid2DTransform_double_2_2", "0.3 4 5", "1 2"))
    assert isinstance(t, Euler2DTransform)
    np.testing.assert_array_equal(t.parameters, [0.3, 4, 5])
    a = parse_transform(_text("MatrixOffsetTransformBase_double_3_3", "1 0 0 0 1 0 0 0 1 1 2 3", "0 0 0"))
    assert isinstance(a, AffineTransform)
    f = parse_transform(_text("AffineTransform_float_2_2", "1 0 0 1 1 2", "3 4"))
    assert isinstance(f, AffineTransform) and f.ndim == 2
    e = parse_transform(_text("Euler3DTransform_double_3_3", "0.1 0.2 0.3 1 2 3", "4 5 6"))  # old files: 3 values
    assert isinstance(e, Euler3DTransform) and not e.compute_zyx
    i = parse_transform(_text("IdentityTransform_double_3_3", "", ""))
    np.testing.assert_array_equal(i.transform_point([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0])
    assert isinstance(create_transform("Similarity3DTransform_double_3_3"), Similarity3DTransform)


def test_errors_are_typed_and_say_what_to_do(tmp_path) -> None:
    with pytest.raises(TransformFileError, match="supported:"):
        parse_transform(_text("ScaleSkewVersor3DTransform_double_3_3", "0", "0"))
    with pytest.raises(TransformFileError, match="line 4"):
        parse_transform(_text("Euler2DTransform_double_2_2", "0.3 x 5", "1 2"))
    with pytest.raises(TransformFileError, match="expected 3 values|3 values"):
        parse_transform(_text("Euler2DTransform_double_2_2", "0.3 5", "1 2"))
    with pytest.raises(TransformFileError, match="no transform"):
        parse_transform("#Insight Transform File V1.0\n")
    with pytest.raises(TransformFileError, match="2-D only"):
        parse_transform(_text("Euler2DTransform_double_3_3", "0.3 4 5", "1 2"))
    with pytest.raises(TransformFileError, match="extension"):
        write_transform(Euler2DTransform(), tmp_path / "t.mat")
    with pytest.raises(FileNotFoundError):
        read_transform(tmp_path / "missing.tfm")


def test_multiple_transforms_without_composite_warn_and_use_first() -> None:
    text = _text("Euler2DTransform_double_2_2", "0.3 4 5", "1 2") + "#Transform 1\nTransform: TranslationTransform_double_2_2\nParameters: 1 2\nFixedParameters: \n"
    with pytest.warns(RegframeWarning, match="only the first"):
        t = parse_transform(text)
    assert isinstance(t, Euler2DTransform)


def test_user_registered_transform_round_trips(tmp_path) -> None:
    class ShiftedAffine(AffineTransform):
        itk_name = "MyShiftedAffineTransform"

    register_transform("MyShiftedAffineTransform", lambda d: ShiftedAffine(d))
    t = ShiftedAffine(2)
    t.parameters = [1.0, 0.1, 0.0, 1.0, 3.0, 4.0]
    write_transform(t, tmp_path / "u.tfm")
    back = read_transform(tmp_path / "u.tfm")
    assert type(back) is ShiftedAffine
    np.testing.assert_array_equal(back.parameters, t.parameters)


def test_top_level_api_and_sitk_bridge(tmp_path, rng) -> None:
    t = _examples(rng)["composite3d"]
    regframe.write_transform(t, tmp_path / "c.tfm")
    back = regframe.read_transform(tmp_path / "c.tfm")
    assert isinstance(back, CompositeTransform) and back.optimize_flags == (True, True)
    np.testing.assert_array_equal(back.parameters, t.parameters)
    r = from_sitk_transform(to_sitk_transform(t))
    np.testing.assert_array_equal(r.parameters, t.parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(from_sitk_transform(sitk.Euler3DTransform()), Euler3DTransform)
