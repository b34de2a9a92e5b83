"""Transforms mapping fixed-space points to moving-space points (ITK conventions)."""

from .base import Transform
from .linear import AffineTransform, MatrixOffsetTransformBase, TranslationTransform
from .euler import Euler2DTransform, Euler3DTransform
from .similarity import Similarity2DTransform, Similarity3DTransform
from .versor import VersorRigid3DTransform, VersorTransform
from .displacement import DisplacementFieldTransform
from .bspline import BSplineTransform, IterativeInverseTransform
from .composite import CompositeTransform
from .io import read_transform, write_transform

__all__ = [
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
    "IterativeInverseTransform",
    "read_transform",
    "write_transform",
]
