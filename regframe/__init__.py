"""regframe: ITK-style, object-oriented image registration in Python."""

from . import errors
from . import optimizers
from .image import Image
from .io import from_sitk, read_image, to_sitk, write_image
from .interpolators import (
    BSplineInterpolator,
    Interpolator,
    LinearInterpolator,
    NearestNeighborInterpolator,
    make_interpolator,
)
from .transforms import AffineTransform, MatrixOffsetTransformBase, Transform, TranslationTransform
from .transforms import (
    CompositeTransform,
    Euler2DTransform,
    Euler3DTransform,
    Similarity2DTransform,
    Similarity3DTransform,
    VersorRigid3DTransform,
    VersorTransform,
    BSplineTransform,
    DisplacementFieldTransform,
    read_transform,
    write_transform,
)

from .quality import folding_fraction, inverse_consistency_error, jacobian_determinant

__version__ = "0.1.0"

__all__ = [
    "errors",
    "optimizers",
    "Image",
    "Interpolator",
    "NearestNeighborInterpolator",
    "LinearInterpolator",
    "BSplineInterpolator",
    "make_interpolator",
    "read_image",
    "write_image",
    "from_sitk",
    "to_sitk",
    "Transform",
    "MatrixOffsetTransformBase",
    "AffineTransform",
    "TranslationTransform",
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
    "jacobian_determinant",
    "folding_fraction",
    "inverse_consistency_error",
]
