"""Registration: the multi-resolution method, initializers, resampling and ``register()``."""

from .api import make_metric, make_optimizer, make_transform, register
from .deformable import register_bspline
from .initializers import (
    affine_from_points,
    centered_initializer,
    image_center,
    landmark_initializer,
    rigid_from_points,
    set_translation,
    similarity_from_points,
)
from .method import LevelResult, RegistrationMethod, RegistrationResult, RegistrationState
from .pyramid import ImagePyramid, Level, LevelSchedule, level_image, shrink_geometry, shrink_image, smooth_image
from .resample import displacement_field, resample, transform_points

__all__ = [
    "register",
    "register_bspline",
    "make_optimizer",
    "make_metric",
    "make_transform",
    "RegistrationMethod",
    "RegistrationResult",
    "RegistrationState",
    "LevelResult",
    "Level",
    "LevelSchedule",
    "smooth_image",
    "level_image",
    "ImagePyramid",
    "shrink_image",
    "shrink_geometry",
    "resample",
    "transform_points",
    "displacement_field",
    "centered_initializer",
    "landmark_initializer",
    "image_center",
    "set_translation",
    "rigid_from_points",
    "similarity_from_points",
    "affine_from_points",
]
