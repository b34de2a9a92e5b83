"""Deformable registration: regframe ``register(transform="bspline")`` vs elastix, same process.

Both tools run on the same inputs in the same Python process, each warmed up by one untimed
run of the same case (numba compilation / caches; ITK's object factories), then timed over
``--repeats`` runs (median wall time).  Nothing is compared with stored numbers.

* regframe: ``register(fixed, moving, transform="bspline", metric=..., fixed_mask=...,
  moving_mask=...)`` with its defaults (an affine stage, then the multi-level B-spline stage).
* elastix (itk-elastix, run beside it): its default ``"affine"`` parameter map followed by its
  default ``"bspline"`` map (``itk.elastix_registration_method``), i.e. the affine
  initialization its recommended default B-spline registration is run after.

Cases (real images from ``../shared/data``):

========================  ========================================================  =================
case                      pair                                                      score
========================  ========================================================  =================
``rat_lung``              rat thorax MR at two breathing states (mono-modal)        MSE
``brain_multimodal``      elastix's T1/PD brain example with both masks             mask Dice
``brain_small/large``     brain slice, fixed = slice warped by a known smooth       field error (px)
                          random B-spline (SimpleITK), small / large amplitude
``sem_small/large``       ``lung_sem`` section (800x800), same construction         field error (px)
``lung3d_small/large``    3-D lung CT, same construction                            landmark error
``lung3d_rigid``          3-D lung CT moved by a known rigid transform              landmark error
========================  ========================================================  =================

With a known truth ``T`` (``fixed(x) = moving(T(x))``, ``fixed`` made by SimpleITK
resampling), the field error is the mean ``|T_est(x) - T(x)|`` over the fixed voxels whose true
point lies inside the moving image and near image content (not the constant background, where
no data constrain a deformation), the landmark error the same at the 100 lung landmarks.
The MSE (mono-modal cases) is the mean squared difference between the fixed image and the
moving image resampled through each tool's transform with the same cubic B-spline
interpolation (scipy), over all fixed voxels.  Dice: fixed mask vs moving mask warped by the
transform (nearest neighbour).

A case passes when regframe's score is at least as good as elastix's **and** its time is at
most elastix's.  Run (benchmark environment, from the repository root)::

    PYTHONPATH=$PWD /work/benchenv/bin/python benchmarks/bench_deformable.py [--case all]
        [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


# ------------------------------------------------------------------ cases
@dataclass
class Case:
    """One benchmark pair (regframe images) and how it is scored."""

    name: str
    fixed: object  # regframe.Image (float32)
    moving: object
    score: str  # "mse", "dice", "field", "landmarks"
    metric: str = "mattes"
    fixed_mask: object | None = None
    moving_mask: object | None = None
    truth: Callable[[np.ndarray], np.ndarray] | None = None  # fixed points -> moving points
    landmarks: np.ndarray | None = None
    background: float = 0.0
    notes: dict = field(default_factory=dict)


def _rf_image(sitk_image):
    import regframe as rf

    return rf.from_sitk(sitk_image)


def _sitk_truth(tx) -> Callable[[np.ndarray], np.ndarray]:
    """A SimpleITK transform as a vectorised points -> points function (ground truth)."""

    def apply(points: np.ndarray) -> np.ndarray:
        return np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in points])

    return apply


def _sitk_field(tx, sitk_image) -> np.ndarray:
    """Displacement of ``tx`` at every voxel of ``sitk_image``, ``(n_voxels, d)`` raster order."""
    import SimpleITK as sitk

    f = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, sitk_image.GetSize(),
                                          sitk_image.GetOrigin(), sitk_image.GetSpacing(),
                                          sitk_image.GetDirection())
    return sitk.GetArrayFromImage(f).reshape(-1, sitk_image.GetDimension())


def _known_bspline_case(name: str, image_sitk, amplitude: float, mesh: int, seed: int,
                        background: float, landmarks: np.ndarray | None = None) -> Case:
    """fixed = image warped by a random smooth B-spline (SimpleITK), moving = image."""
    import SimpleITK as sitk

    d = image_sitk.GetDimension()
    tx = sitk.BSplineTransformInitializer(image_sitk, [mesh] * d, 3)
    spacing = np.array(image_sitk.GetSpacing()) * np.array(image_sitk.GetSize()) / mesh
    coef = np.random.default_rng(seed).normal(0.0, amplitude * float(spacing.min()), tx.GetNumberOfParameters())
    tx.SetParameters(coef.tolist())
    fixed = sitk.Resample(image_sitk, image_sitk, tx, sitk.sitkBSpline, background)
    case = Case(name, _rf_image(fixed), _rf_image(image_sitk), "landmarks" if landmarks is not None else "field",
                truth=_sitk_truth(tx), landmarks=landmarks, background=background)
    case.notes["true_field"] = _sitk_field(tx, fixed)
    case.notes["amplitude_std_mm"] = amplitude * float(spacing.min())
    return case


def _read_sitk(*parts: str):
    import SimpleITK as sitk

    return sitk.ReadImage(str(DATA.joinpath(*parts)), sitk.sitkFloat32)


def make_cases(names: list[str]) -> list[Case]:
    import SimpleITK as sitk

    out: list[Case] = []
    want = set(names)
    if "rat_lung" in want:
        out.append(Case("rat_lung", _rf_image(_read_sitk("rat_lung", "RatLungSlice1.mha")),
                        _rf_image(_read_sitk("rat_lung", "RatLungSlice2.mha")), "mse"))
    if "brain_multimodal" in want:
        ex = ("elastix_example",)
        out.append(Case("brain_multimodal", _rf_image(_read_sitk(*ex, "fixed.mhd")),
                        _rf_image(_read_sitk(*ex, "moving.mhd")), "dice",
                        fixed_mask=_rf_image(_read_sitk(*ex, "mask_fixed.mhd")),
                        moving_mask=_rf_image(_read_sitk(*ex, "mask_moving.mhd"))))
    brain = _read_sitk("elastix_example", "fixed.mhd")
    sem = sitk.Cast(sitk.ReadImage(str(DATA / "lung_sem" / "2016_12_02_0101_s00_01.png")), sitk.sitkFloat32)
    for amp_name, amp in (("small", 0.03), ("large", 0.10)):
        if f"brain_{amp_name}" in want:
            out.append(_known_bspline_case(f"brain_{amp_name}", brain, amp, 4, 1, 0.0))
        if f"sem_{amp_name}" in want:
            out.append(_known_bspline_case(f"sem_{amp_name}", sem, amp, 4, 2, 0.0))
    if want & {"lung3d_small", "lung3d_large", "lung3d_rigid"}:
        ct = _read_sitk("lung3d", "3DCT_lung_baseline_small.mha")
        lm = np.loadtxt(DATA / "lung3d" / "3DCT_lung_baseline_landmarks.txt", skiprows=2)
        for amp_name, amp in (("small", 0.03), ("large", 0.08)):
            if f"lung3d_{amp_name}" in want:
                out.append(_known_bspline_case(f"lung3d_{amp_name}", ct, amp, 3, 3, -1024.0, lm))
        if "lung3d_rigid" in want:
            size = np.array(ct.GetSize(), float)
            rigid = sitk.Euler3DTransform()
            rigid.SetCenter(ct.TransformContinuousIndexToPhysicalPoint(list((size - 1) / 2)))
            rigid.SetRotation(*np.deg2rad([4.0, -3.0, 10.0]))
            rigid.SetTranslation((8.0, -6.0, 5.0))
            # moving(y) = ct(rigid(y)), so fixed = ct maps to moving through rigid^-1
            moving = sitk.Resample(ct, ct, rigid, sitk.sitkBSpline, -1024.0)
            inverse = rigid.GetInverse()
            case = Case("lung3d_rigid", _rf_image(ct), _rf_image(moving), "landmarks",
                        truth=_sitk_truth(inverse), landmarks=lm, background=-1024.0)
            case.notes["true_field"] = _sitk_field(inverse, ct)
            out.append(case)
    order = {n: i for i, n in enumerate(names)}
    return sorted(out, key=lambda c: order[c.name])


# ------------------------------------------------------------------ tools
def _itk_image(image, pixel="float"):
    import itk

    arr = np.ascontiguousarray(image.array, dtype=np.float32 if pixel == "float" else np.uint8)
    out = itk.GetImageFromArray(arr)
    out.SetOrigin([float(v) for v in image.origin])
    out.SetSpacing([float(v) for v in image.spacing])
    if not np.allclose(image.direction, np.eye(image.ndim)):  # all benchmark images are axis-aligned
        raise ValueError("bench_deformable: images with a non-identity direction are not supported")
    return out


class Regframe:
    name = "regframe"

    def prepare(self, case: Case) -> None:
        pass

    def run(self, case: Case):
        from regframe.registration import register

        return register(case.fixed, case.moving, transform="bspline", metric=case.metric,
                        fixed_mask=case.fixed_mask, moving_mask=case.moving_mask)

    def displacement(self, case: Case, result) -> np.ndarray:
        pts = case.fixed.voxel_points()
        return result.transform.transform_points(pts) - pts

    def map_points(self, case: Case, result, points: np.ndarray) -> np.ndarray:
        return result.transform.transform_points(points)


class Elastix:
    name = "elastix"

    def __init__(self) -> None:
        import itk

        self.itk = itk
        po = itk.ParameterObject.New()
        po.AddParameterMap(po.GetDefaultParameterMap("affine"))
        po.AddParameterMap(po.GetDefaultParameterMap("bspline"))
        self.parameters = po

    def prepare(self, case: Case) -> None:
        self._fixed = _itk_image(case.fixed)
        self._moving = _itk_image(case.moving)
        self._masks = {}
        if case.fixed_mask is not None:
            self._masks["fixed_mask"] = _itk_image(case.fixed_mask, "uchar")
        if case.moving_mask is not None:
            self._masks["moving_mask"] = _itk_image(case.moving_mask, "uchar")

    def run(self, case: Case):
        _, params = self.itk.elastix_registration_method(
            self._fixed, self._moving, parameter_object=self.parameters, log_to_console=False, **self._masks)
        return params

    def displacement(self, case: Case, params) -> np.ndarray:
        with tempfile.TemporaryDirectory() as folder:  # transformix writes deformationField.nii
            here = os.getcwd()
            os.chdir(folder)
            try:
                field_image = self.itk.transformix_deformation_field(self._moving, params)
            finally:
                os.chdir(here)
        return np.asarray(self.itk.array_from_image(field_image), dtype=np.float64).reshape(-1, case.fixed.ndim)

    def map_points(self, case: Case, params, points: np.ndarray) -> np.ndarray:
        # displacement field on the fixed grid, interpolated (cubic) at the points
        disp = self.displacement(case, params).reshape(*case.fixed.shape, case.fixed.ndim)
        idx = case.fixed.physical_to_index(points)[:, ::-1].T
        return points + np.stack([ndimage.map_coordinates(disp[..., a], idx, order=3, mode="nearest")
                                  for a in range(case.fixed.ndim)], axis=1)


# ------------------------------------------------------------------ scores
def _warp(case: Case, image, disp: np.ndarray, order: int, cval: float) -> np.ndarray:
    pts = case.fixed.voxel_points() + disp
    idx = image.physical_to_index(pts)[:, ::-1].T
    return ndimage.map_coordinates(np.asarray(image.array, np.float64), idx, order=order, mode="constant",
                                   cval=cval).reshape(case.fixed.shape)


def _foreground(case: Case) -> np.ndarray:
    """Fixed voxels with image content (not the constant background), dilated by 3 voxels, raveled.

    Outside the anatomy no data constrain a deformation, so the field error is measured where
    there is something to align.
    """
    f = np.asarray(case.fixed.array, np.float64)
    content = np.abs(f - case.background) > 0.02 * (f.max() - f.min())
    return ndimage.binary_dilation(content, iterations=3).ravel()


def score(case: Case, tool, result) -> dict:
    disp = tool.displacement(case, result)
    out: dict = {}
    f = np.asarray(case.fixed.array, np.float64)
    if case.score in ("mse", "field", "landmarks"):
        out["mse"] = float(np.mean((f - _warp(case, case.moving, disp, 3, case.background)) ** 2))
    if case.score == "dice":
        fm = np.asarray(case.fixed_mask.array) > 0.5
        wm = _warp(case, case.moving_mask, disp, 0, 0.0) > 0.5
        out["dice"] = float(2 * np.sum(fm & wm) / (fm.sum() + wm.sum()))
    if "true_field" in case.notes:
        true = case.notes["true_field"]
        pts = case.fixed.voxel_points() + true
        idx = case.moving.physical_to_index(pts)
        inside = np.all((idx >= 0) & (idx <= np.array(case.moving.size) - 1), axis=1)
        err = np.linalg.norm(disp - true, axis=1)[inside & _foreground(case)]
        out["field"] = float(err.mean())
        out["field_max"] = float(err.max())
    if case.landmarks is not None:
        err = np.linalg.norm(tool.map_points(case, result, case.landmarks) - case.truth(case.landmarks), axis=1)
        out["landmarks"], out["landmarks_max"] = float(err.mean()), float(err.max())
    return out


def before_score(case: Case) -> float:
    """The score of the identity transform (before registration)."""

    class Identity:
        def displacement(self, case, result):
            return np.zeros((int(np.prod(case.fixed.shape)), case.fixed.ndim))

        def map_points(self, case, result, points):
            return points

    return score(case, Identity(), None)[case.score]


HIGHER_IS_BETTER = {"dice"}


def bench_case(case: Case, tools, repeats: int) -> dict:
    row: dict = {"case": case.name, "score": case.score, "before": before_score(case)}
    for tool in tools:
        tool.prepare(case)
        tool.run(case)  # warm-up (untimed)
        walls, cpus = [], []
        result = None
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            result = tool.run(case)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        row[tool.name] = {"wall_s": walls, "cpu_s": cpus, "time_s": statistics.median(walls),
                          **score(case, tool, result)}
    a, b = row["regframe"], row["elastix"]
    s = case.score
    better = a[s] >= b[s] if s in HIGHER_IS_BETTER else a[s] <= b[s]
    row["score_ok"], row["time_ok"] = bool(better), bool(a["time_s"] <= b["time_s"])
    return row


UNITS = {"mse": "", "dice": "", "field": "mm", "landmarks": "mm"}


def print_row(row: dict) -> None:
    s = row["score"]
    a, b = row["regframe"], row["elastix"]
    extra = ""
    if s == "landmarks":
        extra = f"  max {a['landmarks_max']:.3f} / {b['landmarks_max']:.3f}"
    elif s == "field":
        extra = f"  max {a['field_max']:.2f} / {b['field_max']:.2f}"
    extra += f"  CPU {statistics.median(a['cpu_s']):.2f} / {statistics.median(b['cpu_s']):.2f} s"
    if "mse" in a and s != "mse":
        extra += f"  MSE {a['mse']:.1f} / {b['mse']:.1f}"
    print(f"{row['case']:<17} {s:<9} {row['before']:>9.4g} {a[s]:>10.4g} {b[s]:>10.4g} "
          f"{'ok' if row['score_ok'] else 'WORSE':>5} {a['time_s']:>7.2f} {b['time_s']:>7.2f} "
          f"{a['time_s'] / b['time_s']:>5.2f} {'ok' if row['time_ok'] else 'SLOWER':>6}{extra}", flush=True)


ALL_CASES = ["rat_lung", "brain_multimodal", "brain_small", "brain_large", "sem_small", "sem_large",
             "lung3d_small", "lung3d_large", "lung3d_rigid"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs="+", default=["all"], choices=["all", *ALL_CASES])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write every number to this file")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"skipped: {DATA} not found (expected ../shared/data beside the repository)")
        return 0
    try:
        tools = [Regframe(), Elastix()]
    except ImportError as exc:  # the benchmark environment has itk-elastix; regframe never needs it
        print(f"skipped: itk-elastix is not installed ({exc}); pip install regframe[bench]")
        return 0
    names = ALL_CASES if "all" in args.case else args.case
    print(f"regframe register(transform='bspline') vs elastix default affine+bspline maps; "
          f"median wall time of {args.repeats} runs after a warm-up")
    print(f"{'case':<17} {'score':<9} {'before':>9} {'regframe':>10} {'elastix':>10} {'':>5} "
          f"{'rf s':>7} {'ex s':>7} {'ratio':>5}")
    rows = []
    for case in make_cases(names):
        row = bench_case(case, tools, args.repeats)
        print_row(row)
        rows.append(row)
    n_ok = sum(r["score_ok"] and r["time_ok"] for r in rows)
    print(f"{n_ok}/{len(rows)} cases with regframe's score and time at least elastix's")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
