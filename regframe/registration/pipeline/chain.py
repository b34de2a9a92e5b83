"""The chain of transforms a pipeline builds: each stage absorbs the last link or composes on it.

- **Absorb**: a linear stage whose kind can represent the last link exactly
  (translation < rigid < similarity < affine) starts from that link converted
  to its kind and replaces it (ANTs' per-stage initialization).
- **Compose**: otherwise the stage optimises a new transform with the whole
  chain as its fixed moving-initial transform (ITK's multi-stage method,
  elastix's ``"Compose"``).  B-spline, SyN and point stages always compose.

The caller's ``initial_transform`` is a *frozen* link: never absorbed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...transforms.base import Transform
from ...transforms.composite import CompositeTransform
from ...transforms.linear import MatrixOffsetTransformBase
from ..defaults import can_represent, convert_transform, linear_kind_of

__all__ = ["Link", "TransformChain", "compose"]


@dataclass(frozen=True)
class Link:
    """One transform of the chain (``inverse`` when its stage built an exact one)."""

    kind: str
    transform: Transform
    inverse: Transform | None = None
    frozen: bool = False


@dataclass(frozen=True)
class TransformChain:
    """Links applied last-first: ``x -> L_0(L_1(... L_{n-1}(x)))`` (ITK composite order)."""

    links: tuple[Link, ...] = ()

    @classmethod
    def start(cls, initial_transform: Transform | None = None) -> TransformChain:
        """A chain holding the caller's initial transform (frozen), or nothing."""
        if initial_transform is None:
            return cls()
        return cls((Link("initial", initial_transform.copy(), frozen=True),))

    @property
    def last(self) -> Link | None:
        return self.links[-1] if self.links else None

    def absorbable(self, kind: str | None) -> Transform | None:
        """The last link as a transform of linear ``kind`` when it can be taken over exactly.

        ``kind=None`` takes over an unfrozen last link of any class as it is.
        """
        last = self.last
        if last is None or last.frozen:
            return None
        if kind is None:
            return last.transform.copy()
        if not isinstance(last.transform, MatrixOffsetTransformBase):
            return None
        if not can_represent(kind, linear_kind_of(last.transform)):
            return None
        return convert_transform(last.transform, kind)

    def base(self, absorbs: bool) -> Transform | None:
        """The fixed moving-initial transform of a stage (all links but an absorbed last one)."""
        links = self.links[:-1] if absorbs else self.links
        return compose([lk.transform for lk in links])

    def then(self, link: Link, absorbs: bool) -> TransformChain:
        """The chain after a stage that produced ``link``."""
        keep = self.links[:-1] if absorbs else self.links
        return TransformChain((*keep, link))

    def as_transform(self) -> Transform | None:
        """The whole mapping: a lone link itself, else one flat composite (``None`` if empty)."""
        return compose([lk.transform for lk in self.links])

    def inverse(self) -> Transform | None:
        """The exact inverse mapping when every link has one (linear links invert exactly)."""
        inverses = []
        for lk in reversed(self.links):
            if lk.inverse is not None:
                inverses.append(lk.inverse)
            elif lk.transform.is_linear:
                inverses.append(lk.transform.inverse())
            else:
                return None
        return compose(inverses)


def compose(transforms: list[Transform]) -> Transform | None:
    """``transforms`` as one mapping (applied last-first): a lone one copied, else a flat composite."""
    if not transforms:
        return None
    if len(transforms) == 1:
        return transforms[0].copy()
    comp = CompositeTransform(transforms[0].ndim)
    for t in transforms:
        if isinstance(t, CompositeTransform):
            for member in t.flatten().transforms:
                comp.add_transform(member.copy())
        else:
            comp.add_transform(t.copy())
    comp.set_only_most_recent_transform_to_optimize()
    return comp
