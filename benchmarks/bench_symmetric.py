"""Benchmark of symmetric diffeomorphic registration (issue 13) beside ANTs and DIPY.

Same process, every tool warmed up once (numba compilation, library loading),
then timed (median of ``--repeats`` wall times), all at ``--threads`` threads
(``NUMBA_NUM_THREADS``, ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``,
``OMP_NUM_THREADS``).

* regframe: ``register(fixed, moving, transform="syn", metric=...)`` (initialization,
  similarity and affine stages, then SyN, defaults); on the disc -> C also the SyN stage
  alone (``presets.syn(linear_stage=None)``, 100x70x40 iterations).
* ANTs: ``ants.registration(type_of_transform="SyN")`` (its own affine + SyN
  preset; ``mask``/``moving_mask`` on the multi-modal pair).
* DIPY: ``SymmetricDiffeomorphicRegistration(CCMetric(d))`` (no prealignment,
  default iterations) on the 2-D cases.

Scores: NCC (Pearson correlation over the fixed grid, inside the fixed mask
when there is one) between the fixed image and each tool's warped moving image;
SSD (mean squared difference) on the disc -> C case; for regframe also the
inverse consistency ``|T^-1(T(x)) - x|`` (mean/max, px) and min det J.
3-D: the lung CT warped (SimpleITK, B-spline interpolation) by known smooth
displacement fields of small and large amplitude; regframe's peak traced
memory (tracemalloc) against the image size.

Run (from the repository root, benchmark environment)::

    PYTHONPATH=$PWD /work/benchenv/bin/python benchmarks/bench_symmetric.py [--case all] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


def _set_threads(n: int) -> None:
    for key in ("NUMBA_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS"):
        os.environ[key] = str(n)


def _timed(fn, repeats: int):
    fn()  # warm-up
    walls, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
    return out, sorted(walls)[len(walls) // 2]


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def _read(path: Path):
    import numpy as np
    import SimpleITK as sitk

    from regframe import from_sitk

    im = from_sitk(sitk.ReadImage(str(path)))
    if im.array.ndim == 3 and path.suffix == ".png":
        im = im.with_array(im.array[..., 0])
    return im.with_array(np.asarray(im.array, dtype=np.float64))


def case_rat_lung():
    return _read(DATA / "rat_lung" / "RatLungSlice1.mha"), _read(DATA / "rat_lung" / "RatLungSlice2.mha"), None, None


def case_multimodal():
    d = DATA / "elastix_example"
    return (_read(d / "fixed.mhd"), _read(d / "moving.mhd"), _read(d / "mask_fixed.mhd"), _read(d / "mask_moving.mhd"))


def case_em_sections():
    import numpy as np
    import SimpleITK as sitk

    from regframe import Image

    out = []
    for name in ("2016_12_02_0101_s00_01.png", "2016_12_02_0101_s00_02.png"):
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "lung_sem" / name))).astype(np.float64)
        if arr.ndim == 3:
            arr = arr[..., 0]
        arr = arr[: arr.shape[0] // 2 * 2, : arr.shape[1] // 2 * 2]
        out.append(Image(arr.reshape(arr.shape[0] // 2, 2, arr.shape[1] // 2, 2).mean(axis=(1, 3))))
    return out[0], out[1], None, None


def case_disc_to_c(n: int = 256):
    """Moving: a disc; fixed: a C of the same outer radius (a thick ring open to the right)."""
    import numpy as np
    from scipy import ndimage

    from regframe import Image

    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    c = (n - 1) / 2.0
    r = 0.3 * n
    disc = ((x - c) ** 2 + (y - c) ** 2 <= r * r).astype(np.float64)
    hole = ((x - c) ** 2 + (y - c) ** 2 <= (0.55 * r) ** 2) | ((x > c) & (np.abs(y - c) < 0.25 * r))
    shape_c = disc * (~hole)
    return Image(ndimage.gaussian_filter(shape_c, 1.0)), Image(ndimage.gaussian_filter(disc, 1.0)), None, None


def case_lung3d(amplitude_mm: float, seed: int = 0):
    """The lung CT and the same CT warped by a known smooth field of ``amplitude_mm`` (SimpleITK)."""
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage

    fixed_s = sitk.Cast(sitk.ReadImage(str(DATA / "lung3d" / "3DCT_lung_baseline_small.mha")), sitk.sitkFloat64)
    arr = sitk.GetArrayFromImage(fixed_s)
    rng = np.random.default_rng(seed)
    sig = 12.0 / np.array(fixed_s.GetSpacing())[::-1] * 2.0  # ~24 mm correlation length
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(arr.shape), sig) for _ in range(3)], -1)
    field *= amplitude_mm / np.abs(field).max()
    disp = sitk.GetImageFromArray(field, isVector=True)
    disp.CopyInformation(fixed_s)
    tx = sitk.DisplacementFieldTransform(sitk.Cast(disp, sitk.sitkVectorFloat64))
    moving_s = sitk.Resample(fixed_s, fixed_s, tx, sitk.sitkBSpline, float(arr.min()), sitk.sitkFloat64)
    from regframe import from_sitk

    return from_sitk(fixed_s), from_sitk(moving_s), None, None


# ---------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------
def _ncc(a, b, mask=None):
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if mask is not None:
        sel = np.asarray(mask) != 0
        a, b = a[sel], b[sel]
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _ssd(a, b) -> float:
    import numpy as np

    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def _to_ants(image):
    import ants
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(image.array, dtype=np.float32).T)
    return ants.from_numpy(arr, origin=tuple(image.origin), spacing=tuple(image.spacing),
                           direction=np.asarray(image.direction))


def run_regframe(fixed, moving, fmask, mmask, *, metric: str, linear_stage: str | None = "affine", **syn_kw):
    """``register(transform="syn")`` (the public path: initialization, similarity, affine, SyN);
    with other SyN options or ``linear_stage``, the same ``presets.syn`` stages run by ``run_pipeline``."""
    from regframe.registration import presets, register, resample
    from regframe.registration.pipeline import RegistrationInputs, run_pipeline

    if linear_stage == "affine" and not syn_kw:
        res = register(fixed, moving, transform="syn", metric=metric, fixed_mask=fmask, moving_mask=mmask)
    else:
        stages = presets.syn(linear_stage=linear_stage, metric=metric, **syn_kw)
        res = run_pipeline(stages, RegistrationInputs.for_images(fixed, moving, fmask, mmask)).result
    return res, resample(moving, res.transform, reference=fixed).array


def run_ants(fixed, moving, fmask, mmask):
    import ants

    kw = {}
    if fmask is not None:
        kw = {"mask": _to_ants(fmask), "moving_mask": _to_ants(mmask)}
    out = ants.registration(_to_ants(fixed), _to_ants(moving), type_of_transform="SyN", **kw)
    return out["warpedmovout"].numpy().T


def run_dipy(fixed, moving):
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    sdr = SymmetricDiffeomorphicRegistration(CCMetric(fixed.ndim), level_iters=[100, 50, 25])
    mapping = sdr.optimize(fixed.array, moving.array)
    return mapping.transform(moving.array)


def _exactness(res, fixed):
    import numpy as np

    from regframe.quality import jacobian_determinant

    pts = fixed.voxel_points()
    back = res.inverse_transform.transform_points(res.transform.transform_points(pts))
    err = np.linalg.norm(back - pts, axis=1) / float(np.min(fixed.spacing))
    return float(err.mean()), float(err.max()), float(jacobian_determinant(res.transform, fixed).array.min())


CASES_2D = {
    "rat_lung": (case_rat_lung, "ncc"),
    "multimodal": (case_multimodal, "mattes"),
    "em_sections": (case_em_sections, "ncc"),
    "disc_to_c": (case_disc_to_c, "mse"),
}


#: regframe variants: register(transform="syn") defaults, and on the disc -> C also SyN alone
#: (no affine stages) with a longer schedule
VARIANTS = (("regframe", {}),)
VARIANTS_LARGE = (("regframe", {}), ("rf SyN only", {"linear_stage": None, "n_iterations": (100, 70, 40)}))


def _iterations(res) -> tuple[int, ...]:
    return res.stages[-1].iterations_per_level


def _print_rows(fixed, rows, score_mask, t_ref) -> None:
    print(f"{'tool':<12} {'NCC':>8} {'SSD':>10} {'time s':>8} {'t/regframe':>11} {'inv mean':>9} {'inv max':>8} {'min detJ':>9}")
    for tool, warped, t, exact in rows:
        ex = "" if exact is None else f" {exact[0]:9.4f} {exact[1]:8.3f} {exact[2]:9.3f}"
        print(f"{tool:<12} {_ncc(fixed.array, warped, score_mask):8.4f} {_ssd(fixed.array, warped):10.5g} "
              f"{t:8.3f} {t / t_ref:11.2f}{ex}")
    sys.stdout.flush()


def bench_2d(name: str, repeats: int, with_dipy: bool) -> None:
    maker, metric = CASES_2D[name]
    fixed, moving, fmask, mmask = maker()
    score_mask = None if fmask is None else fmask.array
    before = _ncc(fixed.array, moving.array, score_mask)
    rows = []
    iters = []
    for label, kw in VARIANTS_LARGE if name == "disc_to_c" else VARIANTS:
        (res, ours), t = _timed(lambda: run_regframe(fixed, moving, fmask, mmask, metric=metric, **kw), repeats)
        rows.append((label, ours, t, _exactness(res, fixed)))
        iters.append(_iterations(res))
    ants_w, t_ants = _timed(lambda: run_ants(fixed, moving, fmask, mmask), repeats)
    rows.append(("ANTs SyN", ants_w, t_ants, None))
    if with_dipy:
        dipy_w, t_dipy = _timed(lambda: run_dipy(fixed, moving), repeats)
        rows.append(("DIPY SyN", dipy_w, t_dipy, None))
    print(f"\n== {name}: {fixed.size}, metric {metric}, NCC before {before:.4f}; "
          f"regframe iterations {iters} (inv = |T^-1(T(x)) - x| px)")
    _print_rows(fixed, rows, score_mask, rows[0][2])


def bench_3d(amplitude: float, repeats: int) -> None:
    import tracemalloc

    fixed, moving, _, _ = case_lung3d(amplitude)
    before = _ncc(fixed.array, moving.array)
    rows = []
    iters = []
    for label, kw in VARIANTS:
        (res, ours), t = _timed(lambda: run_regframe(fixed, moving, None, None, metric="ncc", **kw), repeats)
        rows.append((label, ours, t, _exactness(res, fixed)))
        iters.append(_iterations(res))
    ants_w, t_ants = _timed(lambda: run_ants(fixed, moving, None, None), repeats)
    rows.append(("ANTs SyN", ants_w, t_ants, None))
    tracemalloc.start()
    run_regframe(fixed, moving, None, None, metric="ncc")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    image_mb = fixed.n_voxels * 8 / 2**20
    print(f"\n== lung CT 3-D {fixed.size}, known field amplitude {amplitude} mm, NCC before {before:.4f}; "
          f"regframe iterations {iters}; regframe peak traced memory {peak / 2**20:.1f} MiB = "
          f"{peak / 2**20 / image_mb:.0f} x the float64 image ({image_mb:.2f} MiB)")
    _print_rows(fixed, rows, None, rows[0][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", default="all", choices=["all", "3d", *CASES_2D])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-dipy", action="store_true", help="skip DIPY on the real 2-D pairs")
    args = parser.parse_args()
    _set_threads(args.threads)
    names = list(CASES_2D) if args.case == "all" else ([] if args.case == "3d" else [args.case])
    for name in names:
        bench_2d(name, args.repeats, with_dipy=(name == "disc_to_c" or not args.no_dipy))
    if args.case in ("all", "3d"):
        for amp in (3.0, 10.0):
            bench_3d(amp, args.repeats)


if __name__ == "__main__":
    main()
