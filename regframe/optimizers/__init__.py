"""Optimizers with parameter scaling, scales estimators and the cost protocol.

Every optimizer minimises a :class:`CostFunction` (``value`` is minimised and
``value_and_gradient`` returns the *true* gradient) by changing
``cost.transform`` through ``update_parameters``.  Scales divide the gradient
(ITK convention) except in :class:`Exhaustive`, where they multiply the grid
step.
"""

from .base import CostFunction, IterationState, Optimizer, OptimizerResult, StopReason
from .convergence import WindowConvergenceMonitor
from .exhaustive import Exhaustive
from .gradient_descent import GradientDescent, RegularStepGradientDescent
from .line_search import ConjugateGradientLineSearch, GradientDescentLineSearch
from .point_set_cost import PointSetDistanceCost
from .quasi_newton import LBFGS
from .scales import IndexShiftScales, JacobianScales, PhysicalShiftScales, ScalesEstimator
from .scipy_optimizers import LBFGSB, NelderMead, Powell

__all__ = [
    "CostFunction",
    "IterationState",
    "Optimizer",
    "OptimizerResult",
    "StopReason",
    "WindowConvergenceMonitor",
    "GradientDescent",
    "RegularStepGradientDescent",
    "GradientDescentLineSearch",
    "ConjugateGradientLineSearch",
    "LBFGS",
    "LBFGSB",
    "Powell",
    "NelderMead",
    "Exhaustive",
    "ScalesEstimator",
    "PhysicalShiftScales",
    "IndexShiftScales",
    "JacobianScales",
    "PointSetDistanceCost",
]
