"""Public verification tools: derivative checkers and hypothesis strategies.

``check_transform`` and ``check_gradient`` (and ``check_metric``) are what make
"subclass it yourself" safe: run them on your own transforms and metrics.
The hypothesis strategies live in :mod:`regframe.testing.strategies` (import it
explicitly; it needs the ``hypothesis`` package).
"""

from .gradient_checks import GradientCheckReport, check_gradient
from .metric_checks import MetricCheckReport, check_metric, physical_shift_steps
from .transform_checks import TransformCheckReport, check_transform, transform_jacobian_fd

__all__ = [
    "GradientCheckReport",
    "MetricCheckReport",
    "check_metric",
    "physical_shift_steps",
    "TransformCheckReport",
    "check_gradient",
    "check_transform",
    "transform_jacobian_fd",
]
