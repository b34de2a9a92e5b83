"""regframe: ITK-style, object-oriented image registration in Python."""

from . import errors
from .transforms import AffineTransform, MatrixOffsetTransformBase, Transform, TranslationTransform

__version__ = "0.1.0"

__all__ = [
    "errors",
    "Transform",
    "MatrixOffsetTransformBase",
    "AffineTransform",
    "TranslationTransform",
]
