"""SimpleITK's side of ``bench_registration.py``: issue 4's tuned rigid/affine pipeline for the lung CT.

* fixed: ``lung3d/3DCT_lung_baseline_small.mha``; moving: the fixed image resampled through the
  inverse of a known transform ``T_true`` (cubic B-spline, default -1024 HU), so that
  ``moving(T_true(x)) = fixed(x)``; ``T_true`` is a rigid ``Euler3DTransform`` (about 11 degrees,
  11 mm) or an ``AffineTransform`` (rotation, scale and shear), centred on the image centre;
* registration: ``ImageRegistrationMethod`` with Mattes MI (50 bins), RANDOM sampling 20 %
  (fixed seed), linear interpolation, regular-step gradient descent with physical-shift scales,
  3 levels (shrink 4, 2, 1; smoothing 2, 1, 0 voxels), geometry-centred initial transform
  (``VersorRigid3DTransform`` or ``AffineTransform``).

Run beside regframe in the same process; no numbers are stored.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SEED = 12345


def image_center(image: sitk.Image) -> list[float]:
    size = np.array(image.GetSize(), float)
    return list(image.TransformContinuousIndexToPhysicalPoint(list((size - 1) / 2)))


def true_transforms(center: list[float]) -> dict[str, sitk.Transform]:
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(center)
    rigid.SetRotation(*np.deg2rad([4.0, -3.0, 10.0]))
    rigid.SetTranslation((8.0, -6.0, 5.0))

    affine = sitk.AffineTransform(3)
    affine.SetCenter(center)
    az = np.deg2rad(6.0)
    rot = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    shear = np.array([[1.0, 0.03, 0.0], [0.0, 1.0, -0.02], [0.01, 0.0, 1.0]])
    matrix = rot @ shear @ np.diag([1.05, 0.95, 1.03])
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation((5.0, -4.0, 3.0))
    return {"rigid": rigid, "affine": affine}


def read_landmarks(path: Path) -> np.ndarray:
    lines = path.read_text().split("\n")
    assert lines[0].strip() == "point"
    n = int(lines[1])
    return np.array([[float(v) for v in line.split()] for line in lines[2:2 + n]])


def register(fixed, moving, kind: str):
    if kind == "rigid":
        initial = sitk.VersorRigid3DTransform()
    else:
        initial = sitk.AffineTransform(3)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, initial, sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=300,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    iterations = []
    reg.AddCommand(sitk.sitkMultiResolutionIterationEvent,
                   lambda: iterations.append(0))
    reg.AddCommand(sitk.sitkIterationEvent,
                   lambda: iterations.__setitem__(-1, iterations[-1] + 1) if iterations else None)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = reg.Execute(fixed, moving)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return result, elapsed, cpu, reg.GetOptimizerStopConditionDescription(), iterations
