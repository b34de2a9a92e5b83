"""Composition of transforms with ITK ``CompositeTransform`` semantics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import as_float_vector, check_ndim
from ..errors import InvalidInputError, NotInvertibleError, ShapeError
from .base import Transform

__all__ = ["CompositeTransform"]


class CompositeTransform(Transform):
    """A queue of transforms applied last-added first (ITK ``CompositeTransform``).

    With members ``T_0, ..., T_{n-1}`` in insertion order,

        T(x) = T_0(T_1(... T_{n-1}(x)))

    (the most recently added transform acts first, as in ITK: a registration
    adds the optimised transform after the initial ones).

    Only members flagged *to optimise* contribute parameters (all by default;
    see :meth:`set_optimize` and :meth:`set_only_most_recent_transform_to_optimize`).
    :attr:`parameters`, :attr:`fixed_parameters`, :meth:`jacobian`,
    :meth:`jacobian_vjp` and :meth:`update_parameters` concatenate the
    optimised members **from last-added to first-added** (ITK order), each in
    its own update coordinates.

    The Jacobian with respect to member ``k``'s parameters is the chain rule
    ``Jx(T_0) ... Jx(T_{k-1}) J_p(T_k)``, with each position Jacobian taken at
    the point reaching that member.  :meth:`jacobian_vjp` propagates the
    vectors backwards (``v <- Jx^T v``) and calls each member's own
    ``jacobian_vjp``, so sparse members (B-splines, fields) never form a dense
    Jacobian.

    Parameters
    ----------
    ndim : int
        Spatial dimension (2 or 3).
    transforms : iterable of Transform, optional
        Initial members, added in order (all flagged to optimise).
    """

    itk_name = "CompositeTransform"

    def __init__(self, ndim: int = 3, transforms: Iterable[Transform] | None = None) -> None:
        super().__init__(check_ndim(ndim, where="CompositeTransform()"))
        self._transforms: list[Transform] = []
        self._optimize: list[bool] = []
        if transforms is not None:
            for t in transforms:
                self.add_transform(t)

    # ------------------------------------------------------------- members
    def add_transform(self, transform: Transform) -> None:
        """Append ``transform`` (it will act *first*); it is flagged to optimise.

        The transform is stored by reference (not copied), as in ITK.
        """
        if not isinstance(transform, Transform):
            raise TypeError(
                "CompositeTransform.add_transform(): 'transform' must be a regframe Transform; "
                f"got {type(transform).__name__}."
            )
        if transform.ndim != self.ndim:
            raise InvalidInputError(
                f"CompositeTransform.add_transform(): the transform must be {self.ndim}-D like "
                f"the composite; got a {transform.ndim}-D {type(transform).__name__}."
            )
        self._transforms.append(transform)
        self._optimize.append(True)

    def pop_transform(self) -> Transform:
        """Remove and return the most recently added transform (ITK ``RemoveTransform``)."""
        if not self._transforms:
            raise InvalidInputError("CompositeTransform.pop_transform(): the composite is empty.")
        self._optimize.pop()
        return self._transforms.pop()

    @property
    def transforms(self) -> list[Transform]:
        """The members in insertion order (a new list holding the member objects)."""
        return list(self._transforms)

    @property
    def n_transforms(self) -> int:
        """Number of members."""
        return len(self._transforms)

    def __len__(self) -> int:
        return len(self._transforms)

    def __getitem__(self, index: int) -> Transform:
        return self._transforms[index]

    def __iter__(self) -> Iterator[Transform]:
        return iter(list(self._transforms))

    def _check_index(self, index: int, where: str) -> int:
        n = len(self._transforms)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise InvalidInputError(
                f"CompositeTransform.{where}: 'index' must be an integer in [{-n}, {n}); got {index!r}."
            )
        return int(index) % n

    # ---------------------------------------------------------- optimisation
    @property
    def optimize_flags(self) -> tuple[bool, ...]:
        """Per-member "to optimise" flags, in insertion order."""
        return tuple(self._optimize)

    def set_optimize(self, index: int, optimize: bool = True) -> None:
        """Select whether member ``index`` (insertion order) is optimised."""
        self._optimize[self._check_index(index, "set_optimize()")] = bool(optimize)

    def set_all_transforms_to_optimize(self, optimize: bool = True) -> None:
        """Flag every member (ITK ``SetAllTransformsToOptimize``)."""
        self._optimize = [bool(optimize)] * len(self._transforms)

    def set_only_most_recent_transform_to_optimize(self) -> None:
        """Optimise only the last-added member (ITK ``SetOnlyMostRecentTransformToOptimizeOn``)."""
        self._optimize = [False] * len(self._transforms)
        if self._optimize:
            self._optimize[-1] = True

    def _optimized_reversed(self) -> list[int]:
        """Indices of optimised members, last-added first (parameter order)."""
        return [i for i in range(len(self._transforms) - 1, -1, -1) if self._optimize[i]]

    # -------------------------------------------------------------- category
    @property
    def is_linear(self) -> bool:  # type: ignore[override]
        """True when every member is linear (an empty composite is linear)."""
        return all(t.is_linear for t in self._transforms)

    @property
    def has_local_support(self) -> bool:  # type: ignore[override]
        """True when at least one member is optimised and all optimised ones have local support."""
        opt = [self._transforms[i] for i in self._optimized_reversed()]
        return bool(opt) and all(t.has_local_support for t in opt)

    # ------------------------------------------------------------ parameters
    def _get_parameters(self) -> NDArray[np.float64]:
        parts = [self._transforms[i].parameters for i in self._optimized_reversed()]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _split(self, values: NDArray[np.float64], sizes: list[int]) -> list[NDArray[np.float64]]:
        return np.split(values, np.cumsum(sizes)[:-1]) if sizes else []

    def _set_parameters(self, parameters: NDArray[np.float64]) -> None:
        idx = self._optimized_reversed()
        sizes = [self._transforms[i].n_parameters for i in idx]
        for i, part in zip(idx, self._split(parameters, sizes)):
            self._transforms[i].parameters = part

    def _get_fixed_parameters(self) -> NDArray[np.float64]:
        parts = [self._transforms[i].fixed_parameters for i in self._optimized_reversed()]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _set_fixed_parameters(self, fixed_parameters: NDArray[np.float64]) -> None:
        idx = self._optimized_reversed()
        sizes = [self._transforms[i].fixed_parameters.size for i in idx]
        if fixed_parameters.size != sum(sizes):
            raise ShapeError(
                "CompositeTransform.fixed_parameters: expected the concatenated fixed parameters "
                f"of the optimised members, last-added first ({sum(sizes)} values, sizes {sizes}); "
                f"got {fixed_parameters.size}."
            )
        for i, part in zip(idx, self._split(fixed_parameters, sizes)):
            self._transforms[i].fixed_parameters = part

    def update_parameters(self, step: ArrayLike, factor: float = 1.0) -> None:
        """Dispatch the step to the optimised members (each applies its own update rule)."""
        arr = as_float_vector(
            step, self.n_parameters, where="CompositeTransform.update_parameters", name="step"
        )
        idx = self._optimized_reversed()
        sizes = [self._transforms[i].n_parameters for i in idx]
        for i, part in zip(idx, self._split(arr, sizes)):
            self._transforms[i].update_parameters(part, factor)

    # --------------------------------------------------------------- mapping
    def _stage_points(self, points: NDArray[np.float64]) -> list[NDArray[np.float64]]:
        """``inputs[k]``: the points reaching member ``k`` (member ``n-1`` acts first)."""
        n = len(self._transforms)
        inputs: list[NDArray[np.float64]] = [points] * n
        current = points
        for k in range(n - 1, -1, -1):
            inputs[k] = current
            current = self._transforms[k].transform_points(current)
        return inputs

    def _transform_points(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        current = points
        for t in reversed(self._transforms):
            current = t.transform_points(current)
        return np.array(current, dtype=np.float64, copy=True) if current is points else current

    def _jacobian(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        n_pts, d = points.shape
        inputs = self._stage_points(points)
        opt = set(self._optimized_reversed())
        last_opt = max(opt) if opt else -1
        blocks: dict[int, NDArray[np.float64]] = {}
        chain = None  # product of position Jacobians of members 0..k-1, (n, d, d)
        for k in range(last_opt + 1):
            t = self._transforms[k]
            if k in opt:
                jk = t.jacobian(inputs[k])
                blocks[k] = jk if chain is None else np.einsum("sij,sjp->sip", chain, jk)
            if k < last_opt:
                jx = t.jacobian_position(inputs[k])
                chain = jx if chain is None else np.einsum("sij,sjk->sik", chain, jx)
        parts = [blocks[i] for i in self._optimized_reversed()]
        if not parts:
            return np.zeros((n_pts, d, 0))
        return np.concatenate(parts, axis=2)

    def _jacobian_vjp(
        self, points: NDArray[np.float64], vectors: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        inputs = self._stage_points(points)
        opt = set(self._optimized_reversed())
        last_opt = max(opt) if opt else -1
        grads: dict[int, NDArray[np.float64]] = {}
        v = vectors
        for k in range(last_opt + 1):
            t = self._transforms[k]
            if k in opt:
                grads[k] = t.jacobian_vjp(inputs[k], v)
            if k < last_opt:
                jx = t.jacobian_position(inputs[k])
                v = np.einsum("sij,si->sj", jx, v)
        parts = [grads[i] for i in self._optimized_reversed()]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _jacobian_position(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        n_pts, d = points.shape
        out = np.broadcast_to(np.eye(d), (n_pts, d, d)).copy()
        current = points
        for t in reversed(self._transforms):
            out = np.einsum("sij,sjk->sik", t.jacobian_position(current), out)
            current = t.transform_points(current)
        return out

    # ------------------------------------------------------------- structure
    def inverse(self) -> CompositeTransform:
        """Composite of the member inverses in reverse order.

        ``T^-1 = T_{n-1}^-1 o ... o T_0^-1``; the optimisation flags follow
        their members.

        Raises
        ------
        NotInvertibleError
            If a member has no inverse.
        """
        inv = CompositeTransform(self.ndim)
        for k in range(len(self._transforms) - 1, -1, -1):
            try:
                member_inv = self._transforms[k].inverse()
            except NotInvertibleError as exc:
                raise NotInvertibleError(
                    f"CompositeTransform.inverse(): member {k} "
                    f"({type(self._transforms[k]).__name__}) is not invertible: {exc}"
                ) from exc
            inv.add_transform(member_inv)
            inv._optimize[-1] = self._optimize[k]
        return inv

    def flatten(self) -> CompositeTransform:
        """Return an equivalent composite without nested composites (ITK ``FlattenTransformQueue``).

        Members are deep copies.  A leaf is flagged to optimise when it and all
        the composites containing it are flagged.
        """
        flat = CompositeTransform(self.ndim)
        for t, flag in self._leaves(True):
            flat.add_transform(t.copy())
            flat._optimize[-1] = flag
        return flat

    def _leaves(self, parent_flag: bool) -> list[tuple[Transform, bool]]:
        out: list[tuple[Transform, bool]] = []
        for t, flag in zip(self._transforms, self._optimize):
            if isinstance(t, CompositeTransform):
                out.extend(t._leaves(parent_flag and flag))
            else:
                out.append((t, parent_flag and flag))
        return out

    def __repr__(self) -> str:
        members = ", ".join(
            f"{type(t).__name__}{'*' if f else ''}" for t, f in zip(self._transforms, self._optimize)
        )
        return f"CompositeTransform(ndim={self.ndim}, transforms=[{members}])  # * = optimised"
