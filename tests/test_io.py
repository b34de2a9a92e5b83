"""Image I/O through SimpleITK: identical arrays and geometry, round trips, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from regframe import Image, from_sitk, read_image, to_sitk, write_image
from regframe.errors import ImageConversionWarning, InvalidInputError

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
    field = sitk.Compose([sitk.Image([4, 3], sitk.sitkFloat32)] * 2)   # a vector image, not a picture
    sitk.WriteImage(field, str(tmp_path / "field.mha"))
    with pytest.raises(InvalidInputError, match="scalar image or a grey/colour picture"):
        read_image(tmp_path / "field.mha")
    with pytest.raises(InvalidInputError, match="cannot write"):
        write_image(Image(np.zeros((3, 4, 5), dtype=np.float64)), tmp_path / "volume.png")
    with pytest.raises(TypeError):
        to_sitk(np.zeros((3, 3)))
    with pytest.raises(TypeError):
        from_sitk(np.zeros((3, 3)))


# ------------------------------------------------------------- pictures users have
def _grey(h: int = 24, w: int = 32) -> np.ndarray:
    return ((np.arange(h * w).reshape(h, w) * 7) % 251).astype(np.uint8)


def _pictures(tmp_path: Path) -> dict[str, Path]:
    pil = pytest.importorskip("PIL.Image")
    g = _grey()
    files = {}
    for name, picture in {
        "palette": pil.fromarray(g).convert("P"),
        "rgb_equal": pil.fromarray(np.stack([g] * 3, -1)),
        "rgb_colour": pil.fromarray(np.stack([g, 255 - g, g // 2], -1)),
        "la_opaque": pil.fromarray(np.stack([g, np.full_like(g, 255)], -1), mode="LA"),
        "la_transparent": pil.fromarray(np.stack([g, g], -1), mode="LA"),
    }.items():
        files[name] = tmp_path / f"{name}.png"
        picture.save(files[name])
    return files


@pytest.mark.parametrize("name", ["palette", "rgb_equal", "la_opaque"])
def test_grey_pictures_read_as_their_grey_values_silently(tmp_path, name, recwarn):
    path = _pictures(tmp_path)[name]
    image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 2
    np.testing.assert_array_equal(image.array, _grey())
    assert not [w for w in recwarn if issubclass(w.category, ImageConversionWarning)]
    if name != "la_opaque":   # SimpleITK cannot read grey+alpha; for the others it is the reference
        np.testing.assert_array_equal(image.array,
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkUInt8)))


def test_colour_picture_reads_as_luminance_with_a_warning(tmp_path):
    path = _pictures(tmp_path)["rgb_colour"]
    with pytest.warns(ImageConversionWarning, match="luminance"):
        image = read_image(path)
    assert image.dtype == np.float32
    want = sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32))   # ITK's luminance
    np.testing.assert_allclose(image.array, want, rtol=1e-6, atol=1e-4)


def test_grey_alpha_picture_drops_the_alpha_with_a_warning(tmp_path):
    path = _pictures(tmp_path)["la_transparent"]
    with pytest.raises(RuntimeError, match="Unknown PixelType"):
        sitk.ReadImage(str(path))                       # what read_image() used to pass on
    with pytest.warns(ImageConversionWarning, match="alpha"):
        image = read_image(path)
    np.testing.assert_array_equal(image.array, _grey())


def test_pixel_type_option(tmp_path):
    path = _pictures(tmp_path)["palette"]
    image = read_image(path, pixel_type="float32")
    assert image.dtype == np.float32
    assert read_image(path, pixel_type=sitk.sitkFloat32).dtype == np.float32      # SimpleITK's spelling
    with pytest.raises(InvalidInputError, match="pixel_type"):
        read_image(path, pixel_type=sitk.sitkVectorFloat32)
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32)))
    # integers: rounded and clipped, never wrapped
    src = Image(np.array([[-3.7, 0.4], [254.6, 300.0]], dtype=np.float32))
    write_image(src, tmp_path / "f.mha")
    np.testing.assert_array_equal(read_image(tmp_path / "f.mha", pixel_type=np.uint8).array, [[0, 0], [255, 255]])
    with pytest.raises(InvalidInputError, match="pixel_type"):
        read_image(path, pixel_type="banana")


def test_multipage_tiff_reads_as_3d_with_imagej_spacing(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    volume = (np.arange(5 * 24 * 32).reshape(5, 24, 32) % 1000).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, volume, imagej=True, resolution=(1 / 0.5, 1 / 0.25),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    image = read_image(path)
    assert image.size == (32, 24, 5)
    np.testing.assert_array_equal(image.array, volume)
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    np.testing.assert_allclose(image.spacing, [0.5, 0.25, 2.0])
    # a plain multi-page TIFF (no metadata): spacing 1
    tifffile.imwrite(tmp_path / "plain.tif", volume)
    plain = read_image(tmp_path / "plain.tif")
    np.testing.assert_array_equal(plain.array, volume)
    np.testing.assert_allclose(plain.spacing, [1.0, 1.0, 1.0])


def test_folder_of_slices_reads_as_a_stack_in_natural_order(tmp_path):
    g = _grey()
    for k in (1, 2, 10):   # lexicographic order would put 10 before 2
        sitk.WriteImage(sitk.GetImageFromArray((g + k).astype(np.uint8)), str(tmp_path / f"slice{k}.png"))
    image = read_image(tmp_path)
    assert image.size == (32, 24, 3)
    np.testing.assert_array_equal(image.array, np.stack([g + 1, g + 2, g + 10]).astype(np.uint8))


def test_truncated_file_says_truncated(tmp_path):
    write_image(Image(np.random.default_rng(0).random((20, 30, 40)).astype(np.float32)), tmp_path / "v.mha")
    data = (tmp_path / "v.mha").read_bytes()
    (tmp_path / "t.mha").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="truncated") as info:
        read_image(tmp_path / "t.mha")
    assert "No such file" not in str(info.value)


def test_writes_are_atomic(tmp_path, monkeypatch):
    image = Image(np.arange(12, dtype=np.uint16).reshape(3, 4), spacing=(0.5, 2.0))
    for name in ("a.mha", "b.mhd", "c.nii.gz", "d.png"):
        write_image(image, tmp_path / name)
        np.testing.assert_array_equal(read_image(tmp_path / name).array, image.array)
    assert (tmp_path / "b.raw").is_file() or (tmp_path / "b.zraw").is_file()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".~partial")]
    # a writer that fails half-way leaves neither a partial file nor a changed old one
    before = (tmp_path / "a.mha").read_bytes()

    def fail(img, path, *args):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(sitk, "WriteImage", fail)
    with pytest.raises(KeyboardInterrupt):
        write_image(image, tmp_path / "a.mha")
    assert (tmp_path / "a.mha").read_bytes() == before
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".~partial")]


@pytest.mark.data
def test_real_slice_folder_and_real_picture_as_palette_and_rgb(tmp_path):
    folder = _data_file("lung_sem")
    files = sorted(folder.glob("*.png"))
    stack = read_image(folder)
    assert stack.size == (*sitk.ReadImage(str(files[0])).GetSize(), len(files))
    for k in (0, len(files) - 1):
        np.testing.assert_array_equal(stack.array[k], sitk.GetArrayFromImage(sitk.ReadImage(str(files[k]))))
    # the same real slice saved as a palette PNG and as an RGB PNG (how many tools export grey)
    pil = pytest.importorskip("PIL.Image")
    grey = sitk.GetArrayFromImage(sitk.ReadImage(str(files[0])))
    pil.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    pil.fromarray(grey).convert("RGB").save(tmp_path / "rgb.png")
    for name in ("palette.png", "rgb.png"):
        np.testing.assert_array_equal(read_image(tmp_path / name).array, grey)
