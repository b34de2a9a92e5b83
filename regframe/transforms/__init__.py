"""Transforms mapping fixed-space points to moving-space points (ITK conventions)."""

from .base import Transform
from .linear import AffineTransform, MatrixOffsetTransformBase, TranslationTransform

__all__ = [
    "Transform",
    "MatrixOffsetTransformBase",
    "AffineTransform",
    "TranslationTransform",
]
