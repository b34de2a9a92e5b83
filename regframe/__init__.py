"""regframe: ITK-style, object-oriented image registration in Python.

Layers (imports only go downwards): images and I/O; interpolators; transforms;
metrics and optimizers; registration; the command line.  The most used names
are re-exported here; every sub-package documents its own.
"""

from . import _parallel  # noqa: F401  (first: sets the OpenMP wait policy before numba starts threads)
from . import datasets, errors, metrics, optimizers, points, registration, testing, transforms
from .image import Image
from .interpolators import (
    BSplineInterpolator,
    Interpolator,
    LinearInterpolator,
    NearestNeighborInterpolator,
    make_interpolator,
)
from .io import from_sitk, read_image, to_sitk, write_image
from .metrics import (
    FullSampler,
    ImageMetric,
    MattesMutualInformation,
    MeanSquares,
    Metric,
    NormalizedCorrelation,
    PointwiseMetric,
    RandomSampler,
    RegularSampler,
)
from .optimizers import (
    LBFGSB,
    ConjugateGradientLineSearch,
    Exhaustive,
    GradientDescent,
    GradientDescentLineSearch,
    NelderMead,
    PhysicalShiftScales,
    Powell,
    RegularStepGradientDescent,
)
from .points import PointRegistrationResult, register_points
from .quality import folding_fraction, inverse_consistency_error, jacobian_determinant
from .registration import (
    LevelSchedule,
    RegistrationMethod,
    RegistrationResult,
    centered_initializer,
    displacement_field,
    landmark_initializer,
    register,
    register_bspline,
    resample,
)
from .registration.batch import PairError, register_many
from .registration.stacks import StackResult, align_stack
from .registration.warp import warp_stack
from .transforms import (
    AffineTransform,
    BSplineTransform,
    CompositeTransform,
    DisplacementFieldTransform,
    Euler2DTransform,
    Euler3DTransform,
    MatrixOffsetTransformBase,
    Similarity2DTransform,
    Similarity3DTransform,
    Transform,
    TranslationTransform,
    VersorRigid3DTransform,
    VersorTransform,
    read_transform,
    write_transform,
)

__version__ = "0.1.0"

__all__ = [
    "datasets",
    "errors",
    "metrics",
    "optimizers",
    "points",
    "registration",
    "testing",
    "transforms",
    "Image",
    "read_image",
    "write_image",
    "from_sitk",
    "to_sitk",
    "Interpolator",
    "NearestNeighborInterpolator",
    "LinearInterpolator",
    "BSplineInterpolator",
    "make_interpolator",
    "Transform",
    "MatrixOffsetTransformBase",
    "TranslationTransform",
    "AffineTransform",
    "Euler2DTransform",
    "Euler3DTransform",
    "Similarity2DTransform",
    "Similarity3DTransform",
    "VersorTransform",
    "VersorRigid3DTransform",
    "CompositeTransform",
    "BSplineTransform",
    "DisplacementFieldTransform",
    "read_transform",
    "write_transform",
    "Metric",
    "ImageMetric",
    "PointwiseMetric",
    "MeanSquares",
    "NormalizedCorrelation",
    "MattesMutualInformation",
    "FullSampler",
    "RegularSampler",
    "RandomSampler",
    "GradientDescent",
    "RegularStepGradientDescent",
    "GradientDescentLineSearch",
    "ConjugateGradientLineSearch",
    "LBFGSB",
    "Powell",
    "NelderMead",
    "Exhaustive",
    "PhysicalShiftScales",
    "RegistrationMethod",
    "RegistrationResult",
    "LevelSchedule",
    "register",
    "register_bspline",
    "register_points",
    "PointRegistrationResult",
    "register_many",
    "PairError",
    "align_stack",
    "StackResult",
    "warp_stack",
    "resample",
    "displacement_field",
    "centered_initializer",
    "landmark_initializer",
    "jacobian_determinant",
    "folding_fraction",
    "inverse_consistency_error",
]
