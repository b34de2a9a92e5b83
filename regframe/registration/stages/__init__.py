"""Stage classes: one per registration kind (initialization, linear, B-spline, ...)."""

from .bspline import BSplineStage
from .initialize import InitializeStage
from .linear import LinearStage
from .points import PointSetStage
from .syn import SyNStage

__all__ = ["InitializeStage", "LinearStage", "BSplineStage", "SyNStage", "PointSetStage"]
