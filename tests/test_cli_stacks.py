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
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    code, out, _ = run("align-stack", str(tmp_path / "s.tif"), "--transform", "translation", "--reference",
                       "previous", "--init", "geometry", "--output", str(tmp_path / "out" / "s"), "--json")
    assert code == 0
    summary = json.loads(out)
    aligned = tifffile.imread(tmp_path / "out" / "s_aligned.tif")
    assert aligned.shape == stack.shape
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
