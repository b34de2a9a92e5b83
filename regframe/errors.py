"""Typed exceptions and warnings raised by regframe.

Every message follows one grammar: what was expected, what was got, and how to
fix it.  All errors derive from :class:`RegframeError`; errors about bad input
also derive from :class:`ValueError` so generic ``except ValueError`` handlers
keep working.
"""

from __future__ import annotations

__all__ = [
    "RegframeError",
    "InvalidInputError",
    "ShapeError",
    "WrongTypeError",
    "NonFiniteError",
    "EmptyMaskError",
    "NoOverlapError",
    "ConstantImageError",
    "NotInvertibleError",
    "NotInitializedError",
    "TransformFileError",
    "MissingDependencyError",
    "OutputError",
    "RegframeWarning",
    "RegistrationWarning",
    "ImageConversionWarning",
]


class RegframeError(Exception):
    """Base class of every exception raised by regframe."""


class InvalidInputError(RegframeError, ValueError):
    """An argument has the wrong value, type or range."""


class ShapeError(InvalidInputError):
    """An array argument has the wrong shape."""


class WrongTypeError(InvalidInputError, TypeError):
    """An argument has the wrong type (e.g. a numpy array where an :class:`~regframe.Image` is needed)."""


class NonFiniteError(InvalidInputError):
    """An array argument contains NaN or infinite values."""


class EmptyMaskError(InvalidInputError):
    """A mask selects no voxel (or no sample point)."""


class ConstantImageError(InvalidInputError):
    """An image has a single intensity where a metric needs variation."""


class NoOverlapError(RegframeError):
    """Too few samples map inside the moving image (and masks).

    Attributes
    ----------
    n_valid : int
        Number of samples that were valid.
    n_samples : int
        Number of samples that were tried.
    """

    def __init__(self, message: str, n_valid: int = 0, n_samples: int = 0) -> None:
        super().__init__(message)
        self.n_valid = n_valid
        self.n_samples = n_samples

    @property
    def overlap_fraction(self) -> float:
        """Fraction of the samples that were valid."""
        return self.n_valid / self.n_samples if self.n_samples else 0.0


class NotInvertibleError(RegframeError):
    """A transform has no inverse (singular matrix, folded field)."""


class NotInitializedError(RegframeError, RuntimeError):
    """An object was used before it was initialised (``set_image`` or ``initialize`` not called)."""


class TransformFileError(RegframeError, ValueError):
    """A transform file cannot be parsed or holds an unsupported transform."""


class MissingDependencyError(RegframeError, ImportError):
    """An optional dependency is needed for this feature."""


class OutputError(RegframeError, OSError):
    """An output file cannot be written (missing or read-only folder, disk full, ...)."""


class RegframeWarning(UserWarning):
    """Warnings issued by regframe."""


class RegistrationWarning(RegframeWarning):
    """A registration ended worse than it started (or a stage was dropped for making it worse).

    The result then carries the same text in ``result.warnings``; the command line
    prints it and exits with status 3.
    """


class ImageConversionWarning(RegframeWarning):
    """An image was converted on reading (e.g. colour to luminance); the message says how."""
