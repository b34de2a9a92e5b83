"""CLI: ``regframe align-stack`` (multi-page TIFF in and out, transforms, QC) and ``regframe register-many``."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

import regframe as rf
from regframe import cli

sitk = pytest.importorskip("SimpleITK")
tifffile = pytest.importorskip("tifffile")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return cli.main(list(argv), stdout=out, stderr=err), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def rat(request):
    from conftest import data_path

    return sitk.ReadImage(str(data_path("rat_lung", "RatLungSlice1.mha")), sitk.sitkFloat32)


def _shifted(img, shift):
    return sitk.Resample(img, img, sitk.TranslationTransform(2, shift), sitk.sitkBSpline, 0.0)


@pytest.mark.data
def test_align_stack_tiff(rat, tmp_path):
    shifts = [(0.0, 0.0), (1.5, -1.0), (-0.5, 2.0), (1.0, 1.0)]
    stack = np.stack([sitk.GetArrayFromImage(_shifted(rat, s)) for s in shifts])
    stack = np.clip(np.rint(stack * (255.0 / stack.max())), 0, 255).astype(np.uint8)  # 8-bit, as microscopes write
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    code, out, _ = run("align-stack", str(tmp_path / "s.tif"), "--transform", "translation", "--reference",
                       "previous", "--init", "geometry", "--output", str(tmp_path / "out" / "s"), "--json")
    assert code == 0
    summary = json.loads(out)
    aligned = tifffile.imread(tmp_path / "out" / "s_aligned.tif")
    assert aligned.shape == stack.shape and aligned.dtype == np.uint8
    tfms = sorted((tmp_path / "out" / "s_transforms").glob("slice_*.tfm"))
    assert len(tfms) == 4 and summary["n_slices"] == 4 and (tmp_path / "out" / "s_qc.png").exists()
    spacing = rf.from_sitk(rat).spacing
    for tfm, s in zip(tfms, shifts):  # slice k holds base(x + s): its transform is x -> x - s
        t = rf.read_transform(tfm)
        np.testing.assert_allclose(t.transform_point([20.0, 20.0]) - 20.0, -np.array(s), atol=0.15 * spacing.max())
    assert not list((tmp_path / "out").glob(".tmp_*"))


@pytest.mark.data
def test_register_many_csv(rat, tmp_path):
    rf.write_image(rf.from_sitk(rat), tmp_path / "fixed.mha")
    rf.write_image(rf.from_sitk(_shifted(rat, (1.0, -0.5))), tmp_path / "a.mha")
    rf.write_image(rf.from_sitk(rat).with_array(np.zeros(rf.from_sitk(rat).shape, np.float32)), tmp_path / "flat.mha")
    (tmp_path / "pairs.csv").write_text("fixed,moving,name\nfixed.mha,a.mha,good\nfixed.mha,flat.mha,flat\n")
    code, out, err = run("register-many", str(tmp_path / "pairs.csv"), "--transform", "translation", "--init",
                         "geometry", "--output", str(tmp_path / "res"), "--quiet")
    assert code == 1  # one pair failed; the other is written
    rows = list(csv.DictReader((tmp_path / "res" / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "failed"] and rows[1]["error"]
    t = rf.read_transform(tmp_path / "res" / "good.tfm")
    np.testing.assert_allclose(t.parameters, [-1.0, 0.5], atol=0.1)  # moving(x) = fixed(x + s): T(x) = x - s
    assert not (tmp_path / "res" / "flat.tfm").exists()
    code, _, err = run("register-many", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "r2"))
    assert code == 1 and "does not exist" in err


def _uint8(img) -> np.ndarray:
    return np.clip(np.rint(sitk.GetArrayFromImage(img)), 0, 255).astype(np.uint8)


def _no_nan(text: str):
    """json.loads that refuses the bare NaN / Infinity Python's json writes by default."""
    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.data
def test_align_stack_image_folder_in_mha_out(sem_sections, tmp_path):
    """A folder of 2-D PNGs (one real EM section moved by known shifts) -> default .mha output, valid JSON."""
    shifts = [(0.0, 0.0), (2.0, -1.0), (-1.5, 1.5)]
    folder = tmp_path / "sections"
    folder.mkdir()
    for k, s in enumerate(shifts):
        sitk.WriteImage(sitk.GetImageFromArray(_uint8(_shifted(sem_sections[1], s))), str(folder / f"sec_{k:02d}.png"))
    code, out, err = run("align-stack", str(folder), "--transform", "translation", "--reference", "first", "--init",
                         "geometry", "--no-qc", "--output", str(tmp_path / "out" / "s"), "--json")
    assert code == 0, err
    assert json.loads(out)["n_slices"] == 3
    aligned = rf.read_image(tmp_path / "out" / "s_aligned.mha")  # a folder input is written as MetaImage
    assert aligned.shape == (3, 100, 100) and aligned.dtype == np.uint8
    summary = _no_nan((tmp_path / "out" / "s_summary.json").read_text())
    assert summary["metric_values"][0] is None and all(v < 0 for v in summary["metric_values"][1:])  # Mattes < 0
    for k, s in enumerate(shifts):  # slice k holds base(x + s): its transform is x -> x - s
        t = rf.read_transform(tmp_path / "out" / "s_transforms" / f"slice_{k:04d}.tfm")
        np.testing.assert_allclose(t.transform_point([50.0, 50.0]) - 50.0, -np.array(s), atol=0.15)


@pytest.mark.data
def test_align_stack_anchor_path_on_its_grid_format_mha(sem_sections, tmp_path):
    """A TIFF stack aligned to an anchor volume of another contrast on a cropped grid; --format mha."""
    shifts = [(1.0, -2.0), (-2.0, 0.5), (0.5, 1.5)]
    stack = np.stack([_uint8(_shifted(sem_sections[k], s)) for k, s in enumerate(shifts)])
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    bases = np.stack([sitk.GetArrayFromImage(sem_sections[k]) for k in range(3)])
    crop = (slice(None), slice(10, 90), slice(5, 95))  # numpy (z, y, x): 80 rows, 90 columns from (5, 10)
    anchor = rf.Image((255.0 - bases[crop]) ** 2, spacing=(1.0, 1.0, 1.0), origin=(5.0, 10.0, 0.0))
    rf.write_image(anchor, tmp_path / "anchor.mha")
    code, out, err = run("align-stack", str(tmp_path / "s.tif"), "--transform", "translation", "--reference",
                         str(tmp_path / "anchor.mha"), "--init", "geometry", "--format", "mha", "--no-qc",
                         "--output", str(tmp_path / "out" / "s"), "--quiet")
    assert code == 0, err
    assert not (tmp_path / "out" / "s_aligned.tif").exists()
    aligned = rf.read_image(tmp_path / "out" / "s_aligned.mha")
    assert aligned.shape == anchor.shape and np.allclose(aligned.origin, anchor.origin)  # the anchor's grid
    for k, s in enumerate(shifts):
        t = rf.read_transform(tmp_path / "out" / "s_transforms" / f"slice_{k:04d}.tfm")
        np.testing.assert_allclose(t.transform_point([50.0, 50.0]) - 50.0, -np.array(s), atol=0.2)
        inner = (slice(3, -3), slice(3, -3))  # aligned slice k is section k on the anchor's grid
        got, want = aligned.array[k][inner].astype(float), bases[crop][k][inner]
        # half-pixel shifts smooth the texture (0.97 here), while 3 pixels off correlate at about 0.25
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9 and np.mean(np.abs(got - want)) < 6


def test_align_stack_reference_word_and_choices(tmp_path):
    code, _, err = run("align-stack", str(tmp_path / "s.tif"), "--reference", "prev", "--output", str(tmp_path / "o"))
    assert code == 1 and "previous, first, mean" in err and "anchor stack" in err
    for command in ("align-stack", "register-many"):
        for option in ("--metric", "--transform"):
            assert run(command, str(tmp_path / "s.tif"), option, "foo", "--output", str(tmp_path / "o"))[0] == 2


def _fake_result(stack, warnings_, results=()):
    from regframe.registration.stacks import StackResult

    n = stack.shape[0]
    ident = tuple(rf.TranslationTransform(2) for _ in range(n))
    return StackResult(stack, ident, np.full(n, np.nan), np.zeros(n), np.zeros(n), results=tuple(results),
                       warnings=tuple(warnings_))


@pytest.mark.parametrize("failed", [False, True])
def test_align_stack_warnings_on_stderr_once_and_exit_status(tmp_path, monkeypatch, failed):
    """Warnings reach stderr once even with --quiet/--json; exit 3 for warnings, 1 when a pair failed."""
    import warnings

    from regframe.errors import RegistrationWarning
    from regframe.registration import stacks
    from regframe.registration.batch import PairError

    def fake(stack, *args, **kwargs):  # register() warns inside a pair; align_stack reports it with the pair
        warnings.warn("the result was worse than the start", RegistrationWarning)
        results = [PairError(0, "NoOverlapError", "no overlap")] if failed else []
        return _fake_result(stack, ["pair (0, 1): the result was worse than the start"], results)

    monkeypatch.setattr(stacks, "align_stack", fake)
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 12, 12), np.uint8), photometric="minisblack")
    for flag in ("--quiet", "--json"):
        code, out, err = run("align-stack", str(tmp_path / "s.tif"), "--no-qc", "--output", str(tmp_path / "o" / "s"),
                             flag)
        assert code == (1 if failed else 3)
        assert err.count("the result was worse than the start") == 1 and "warning: pair (0, 1)" in err
        assert out == "" if flag == "--quiet" else _no_nan(out)["warnings"] == ["pair (0, 1): the result was worse than the start"]
        summary = _no_nan((tmp_path / "o" / "s_summary.json").read_text())  # metric_values hold NaN: null here
        assert summary["metric_values"] == [None, None] and summary["n_failed_pairs"] == int(failed)


def test_register_many_duplicate_names(tmp_path):
    img = rf.Image(np.arange(144, dtype=np.float32).reshape(12, 12))
    for name in ("f.mha", "a.mha", "b.mha"):
        rf.write_image(img, tmp_path / name)
    (tmp_path / "pairs.csv").write_text("fixed,moving,name\nf.mha,a.mha,x\nf.mha,b.mha,x\nf.mha,a.mha,y\n")
    code, _, err = run("register-many", str(tmp_path / "pairs.csv"), "--output", str(tmp_path / "res"))
    assert code == 1 and "['x']" in err and "more than once" in err
    assert not (tmp_path / "res").exists()
