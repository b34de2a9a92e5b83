"""Image I/O through SimpleITK: identical arrays and geometry, round trips, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from regframe import Image, from_sitk, read_image, to_sitk, write_image
from regframe.errors import InvalidInputError

sitk = pytest.importorskip("SimpleITK", reason="image I/O needs SimpleITK (extra 'io')")

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _data_file(*parts: str) -> Path:
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test data {path} not found (expected ../shared/data beside the repository)")
    return path


def _assert_same(image: Image, s, *, geometry_tol: float = 0.0) -> None:
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(s))
    assert image.array.dtype == sitk.GetArrayViewFromImage(s).dtype
    assert image.size == s.GetSize()
    np.testing.assert_allclose(image.spacing, s.GetSpacing(), rtol=0, atol=geometry_tol)
    np.testing.assert_allclose(image.origin, s.GetOrigin(), rtol=0, atol=geometry_tol)
    np.testing.assert_allclose(image.direction.ravel(), s.GetDirection(), rtol=0, atol=geometry_tol)


@pytest.mark.parametrize(
    "parts",
    [
        ("elastix_example", "fixed.mhd"),
        ("elastix_example", "mask_moving.mhd"),
        ("rat_lung", "RatLungSlice1.mha"),
        ("lung3d", "3DCT_lung_baseline_small.mha"),
        ("lung_sem", "2016_12_02_0101_s00_01.png"),
    ],
)
def test_real_images_identical_to_sitk(parts):
    path = _data_file(*parts)
    _assert_same(read_image(path), sitk.ReadImage(str(path)))


def _oblique_sitk_image(ndim: int, pixel: int = sitk.sitkFloat32):
    rng = np.random.default_rng(ndim)
    shape = (5, 6, 7)[-ndim:]
    arr = (rng.normal(size=shape) * 100).astype(sitk.GetArrayViewFromImage(sitk.Image([1] * ndim, pixel)).dtype)
    s = sitk.GetImageFromArray(arr)
    s.SetSpacing(rng.uniform(0.3, 3.0, ndim).tolist())
    s.SetOrigin((rng.normal(size=ndim) * 40).tolist())
    if ndim == 3:
        d = Rotation.from_rotvec([0.2, -0.4, 0.7]).as_matrix()
    else:
        d = np.array([[np.cos(0.6), -np.sin(0.6)], [np.sin(0.6), np.cos(0.6)]])
    s.SetDirection(d.ravel().tolist())
    return s


@pytest.mark.parametrize("ndim", [2, 3])
def test_file_written_by_sitk_reads_identically(tmp_path, ndim):
    s = _oblique_sitk_image(ndim)
    path = tmp_path / "written_by_sitk.mha"
    sitk.WriteImage(s, str(path))
    image = read_image(path)
    _assert_same(image, sitk.ReadImage(str(path)))
    _assert_same(image, s)


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz", ".nrrd"])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
def test_round_trip(tmp_path, suffix, ndim, dtype):
    rng = np.random.default_rng(ndim)
    shape = (4, 6, 5)[-ndim:]
    d = Rotation.from_rotvec([0.3, 0.1, -0.5]).as_matrix() if ndim == 3 else np.array([[0.0, -1.0], [1.0, 0.0]])
    image = Image(
        (rng.normal(size=shape) * 1000).astype(dtype),
        spacing=rng.uniform(0.5, 2.0, ndim),
        origin=rng.normal(size=ndim) * 10,
        direction=d,
    )
    path = tmp_path / f"img{suffix}"
    write_image(image, path)
    back = read_image(path)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.dtype == image.dtype
    # NIfTI stores geometry in float32 (qform/sform); MetaImage and NRRD in text
    tol = 1e-5 if suffix == ".nii.gz" else 1e-12
    assert back.same_geometry(image, tol=tol)
    np.testing.assert_allclose(back.direction, image.direction, atol=tol)


def test_dtype_conversion_and_bool(tmp_path):
    path = _data_file("rat_lung", "RatLungSlice1.mha")
    image = read_image(path, dtype=np.float32)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32))
    mask = Image(np.array([[True, False], [False, True]]), spacing=(0.5, 2.0))
    s = to_sitk(mask)
    assert s.GetPixelID() == sitk.sitkUInt8 and s.GetSpacing() == (0.5, 2.0)
    back = from_sitk(s)
    np.testing.assert_array_equal(back.array, mask.array.astype(np.uint8))


def test_to_sitk_from_sitk_round_trip():
    s = _oblique_sitk_image(3, sitk.sitkInt16)
    image = from_sitk(s)
    _assert_same(image, s)
    s2 = to_sitk(image)
    _assert_same(image, s2)
    # pixel data is copied, not shared
    before = int(image.array[0, 0, 0])
    s2.SetPixel(0, 0, 0, before + 1)
    s.SetPixel(0, 0, 0, before + 2)
    assert image.array[0, 0, 0] == before


def _write_dicom_series(folder: Path, volume: np.ndarray, spacing, origin, uid_suffix: str = "12345") -> None:
    series_uid = f"1.2.826.0.1.3680043.2.1125.1.{uid_suffix}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # otherwise every slice gets a new series UID
    for k in range(volume.shape[0]):
        sl = sitk.GetImageFromArray(volume[k])
        sl.SetSpacing(spacing[:2])
        position = [origin[0], origin[1], origin[2] + k * spacing[2]]
        for tag, value in [
            ("0008|0060", "CT"),
            ("0010|0010", "Phantom^Test"),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.1"),
            ("0020|000e", series_uid),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(f"{v:.6f}" for v in position)),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0028|0030", f"{spacing[1]:.6f}\\{spacing[0]:.6f}"),
            ("0018|0050", f"{spacing[2]:.6f}"),
            ("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.2.{uid_suffix}.{k + 1}"),
        ]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{uid_suffix}_slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_directory(tmp_path):
    volume = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 7 - 50).astype(np.int16)
    _write_dicom_series(tmp_path, volume, [0.75, 0.5, 2.5], [-10.0, 20.0, 30.0])
    image = read_image(tmp_path)
    np.testing.assert_array_equal(image.array, volume)
    assert image.size == (6, 5, 4)
    np.testing.assert_allclose(image.spacing, [0.75, 0.5, 2.5], atol=1e-6)
    np.testing.assert_allclose(image.origin, [-10.0, 20.0, 30.0], atol=1e-6)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    _assert_same(image, reader.Execute())
    with pytest.raises(InvalidInputError, match="series_id"):
        read_image(tmp_path, series_id="1.2.3")


def test_dicom_directory_with_two_series_needs_series_id(tmp_path):
    volume = np.zeros((2, 3, 4), dtype=np.int16)
    _write_dicom_series(tmp_path, volume, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], uid_suffix="1")
    _write_dicom_series(tmp_path, volume + 5, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], uid_suffix="2")
    with pytest.raises(InvalidInputError, match="2 DICOM series"):
        read_image(tmp_path)
    image = read_image(tmp_path, series_id="1.2.826.0.1.3680043.2.1125.1.2")
    assert np.all(image.array == 5)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_image(tmp_path / "missing.mha")
    with pytest.raises(InvalidInputError, match="DICOM series"):
        read_image(tmp_path)  # empty directory
    bad = tmp_path / "garbage.mha"
    bad.write_text("not an image")
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_image(bad)
    rgb = sitk.Compose([sitk.Image([4, 3], sitk.sitkUInt8)] * 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.png"))
    with pytest.raises(InvalidInputError, match="scalar"):
        read_image(tmp_path / "rgb.png")
    with pytest.raises(InvalidInputError, match="cannot write"):
        write_image(Image(np.zeros((3, 4, 5), dtype=np.float64)), tmp_path / "volume.png")
    with pytest.raises(TypeError):
        to_sitk(np.zeros((3, 3)))
    with pytest.raises(TypeError):
        from_sitk(np.zeros((3, 3)))
