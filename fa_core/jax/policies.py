"""The policy table of a :class:`fa_core.jax.Agent`: a static, hashable nested tuple."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import jax
import jax.numpy as jnp


class Policies:
    """Policies of shape ``(num_policies, policy_len, num_factors)``, as pymdp's ``Policies``.

    Held as a nested tuple of ints so that it can be a static field of the
    agent (hashable, never traced) and be built while the agent's constructor
    is traced under ``jax.jit``.

    Parameters
    ----------
    policies : tuple or array-like
        A nested tuple or an integer array of shape
        ``(num_policies, policy_len, num_factors)``.
    """

    __slots__ = ("_tup", "num_policies", "horizon", "_arr")

    def __init__(self, policies) -> None:
        if isinstance(policies, Policies):
            policies = policies._tup
        if not isinstance(policies, tuple):
            if isinstance(policies, jax.core.Tracer):
                raise TypeError("policies must be concrete (not traced) to build an Agent")
            arr = np.asarray(policies)
            if arr.ndim != 3 or arr.dtype.kind not in "iu":
                raise ValueError("policies must be an integer array of shape "
                                 f"(num_policies, policy_len, num_factors), got {arr.shape}")
            policies = tuple(tuple(tuple(int(u) for u in step) for step in pol) for pol in arr)
        if not policies:
            raise ValueError("policies must hold at least one policy")
        self._tup = policies
        self.num_policies = len(policies)
        self.horizon = len(policies[0])
        self._arr = None

    @property
    def policy_arr(self) -> jax.Array:
        """The policies as a ``jax.Array`` of int32 (pymdp's default integer type)."""
        arr = self._arr
        if arr is None:
            # built outside any trace, so the cached array is never a tracer
            with jax.ensure_compile_time_eval():
                arr = jnp.asarray(self.as_numpy())
            self._arr = arr
        return arr

    def as_numpy(self) -> np.ndarray:
        """The policies as a numpy int32 array."""
        return np.asarray(self._tup, dtype=np.int32).reshape(
            self.num_policies, self.horizon, -1)

    def __getitem__(self, idx):
        return self.policy_arr[idx]

    def __len__(self) -> int:
        return self.num_policies

    def __eq__(self, other) -> bool:
        return isinstance(other, Policies) and self._tup == other._tup

    def __hash__(self) -> int:
        return hash(self._tup)

    def __repr__(self) -> str:
        return f"Policies(num_policies={self.num_policies}, horizon={self.horizon})"


def product_policies(num_controls: Sequence[int], policy_len: int) -> tuple:
    """Every sequence of ``policy_len`` actions, in pymdp's order (last factor and last step
    fastest)."""
    nf = len(num_controls)
    flat = itertools.product(*[range(n) for n in list(num_controls) * policy_len])
    return tuple(tuple(tuple(f[t * nf:(t + 1) * nf]) for t in range(policy_len)) for f in flat)


def combination_index(xs: Sequence[int], dims: Sequence[int]) -> int:
    """Mixed-radix index of ``xs`` (last entry fastest), pymdp's ``get_combination_index``."""
    index = 0
    for x, d in zip(xs, dims):
        index = index * d + x
    return index


def flatten_multi_policies(policies: tuple, action_maps: list[dict]) -> tuple:
    """Policies over several actions per factor, as one flat action index per factor."""
    out = []
    for pol in policies:
        steps = []
        for step in pol:
            steps.append(tuple(
                combination_index([step[d] for d in m["multi_dependency"]], m["multi_dims"])
                if m["multi_dependency"] else 0
                for m in action_maps))
        out.append(tuple(steps))
    return tuple(out)


def count_policies(num_controls: Sequence[int], policy_len: int) -> int:
    """How many policies :func:`product_policies` would build."""
    return math.prod(num_controls) ** policy_len
