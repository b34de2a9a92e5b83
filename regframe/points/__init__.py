"""Point sets: robust ICP with global initialization, normals, surfaces and point files."""

from .icp import PointRegistrationResult, register_points, robust_weights
from .normals import estimate_normals

__all__ = ["register_points", "PointRegistrationResult", "robust_weights", "estimate_normals"]
