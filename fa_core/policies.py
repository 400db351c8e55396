"""Policy sets: every combination of controls, or a user's own list."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

#: Largest number of policies a model may have. A policy set is built, stored and
#: evaluated for every agent at every step: 10^6 policies take minutes to build and
#: gigabytes per thousand agents. Raise it (``fa_core.policies.MAX_POLICIES = ...``)
#: to opt out knowingly.
MAX_POLICIES = 100_000

#: Largest number of actions in a policy set (policies x policy_len x factors).
MAX_POLICY_ENTRIES = 10_000_000


def count_policies(num_controls: Sequence[int], policy_len: int) -> int:
    """How many policies :func:`construct_policies` builds: ``prod(num_controls) ** policy_len``.

    Exact (a Python int), computed before anything is built.

    Parameters
    ----------
    num_controls : sequence of int
        Controls per factor.
    policy_len : int
        Steps per policy.

    Returns
    -------
    int
        The number of policies.

    Examples
    --------
    >>> from fa_core.policies import count_policies
    >>> count_policies([3, 3, 1, 1], 2)
    81
    """
    return math.prod(int(n) for n in num_controls) ** int(policy_len)


def check_policy_count(n_policies: int, policy_len: int, num_factors: int,
                       what: str = "the policy set") -> None:
    """Refuse policy sets above :data:`MAX_POLICIES` or :data:`MAX_POLICY_ENTRIES`.

    Parameters
    ----------
    n_policies : int
        Number of policies.
    policy_len : int
        Steps per policy.
    num_factors : int
        Hidden-state factors (one action per factor and step).
    what : str
        How the message names the policy set.

    Raises
    ------
    ValueError
        If the set is too large; the message names the bound to raise.

    Examples
    --------
    >>> from fa_core.policies import MAX_POLICIES, check_policy_count
    >>> check_policy_count(81, 2, 4)                 # fine: returns None
    >>> check_policy_count(MAX_POLICIES + 1, 1, 1)
    Traceback (most recent call last):
    ...
    ValueError: the policy set would have 100,001 policies, more than ...
    """
    if n_policies > MAX_POLICIES:
        raise ValueError(f"{what} would have {n_policies:,} policies, more than "
                         f"fa_core.policies.MAX_POLICIES = {MAX_POLICIES:,}: shorten policy_len, "
                         f"reduce num_controls, pass your own policies, or raise the bound")
    entries = n_policies * policy_len * num_factors
    if entries > MAX_POLICY_ENTRIES:
        raise ValueError(f"{what} would hold {entries:,} actions ({n_policies:,} policies x "
                         f"policy_len {policy_len} x {num_factors} factors), more than "
                         f"fa_core.policies.MAX_POLICY_ENTRIES = {MAX_POLICY_ENTRIES:,}")


def construct_policies(num_states: Sequence[int], num_controls: Sequence[int] | None = None,
                       policy_len: int = 1, control_fac_idx: Sequence[int] | None = None
                       ) -> list[np.ndarray]:
    """All policies of ``policy_len`` steps, in pymdp's order.

    Parameters
    ----------
    num_states : sequence of int
        States per factor.
    num_controls : sequence of int, optional
        Controls per factor; default ``num_states[f]`` for the controllable
        factors and 1 for the others (as pymdp).
    policy_len : int
        Steps per policy.
    control_fac_idx : sequence of int, optional
        The controllable factors; default those with more than one control.

    Returns
    -------
    list of ndarray
        One int array of shape ``(policy_len, num_factors)`` per policy: the
        product over factors and time steps of ``range(num_controls[f])``.

    Raises
    ------
    ValueError
        If the set would exceed :data:`MAX_POLICIES` or :data:`MAX_POLICY_ENTRIES`.

    Examples
    --------
    >>> from fa_core.policies import construct_policies
    >>> policies = construct_policies([4, 2], [4, 1], policy_len=2)
    >>> len(policies), policies[1].tolist()
    (16, [[0, 0], [1, 0]])
    """
    num_factors = len(num_states)
    if control_fac_idx is None:
        control_fac_idx = ([f for f, n in enumerate(num_controls) if n > 1]
                           if num_controls is not None else list(range(num_factors)))
    if num_controls is None:
        num_controls = [num_states[f] if f in control_fac_idx else 1 for f in range(num_factors)]
    check_policy_count(count_policies(num_controls, policy_len), policy_len, num_factors)
    ranges = [range(n) for n in list(num_controls) * policy_len]
    return [np.array(p).reshape(policy_len, num_factors) for p in itertools.product(*ranges)]


def validate_policies(policies, num_controls: Sequence[int]) -> list[np.ndarray]:
    """Check a user's policies and return them as int64 arrays of one shape.

    Parameters
    ----------
    policies : sequence of array_like of int
        Each of shape ``(policy_len, num_factors)`` (or ``(num_factors,)`` for
        one step).
    num_controls : sequence of int
        Controls per factor.

    Returns
    -------
    list of ndarray of int64
        The policies, each of shape ``(policy_len, num_factors)``.

    Raises
    ------
    ValueError
        If the list is empty, shapes differ or do not match the number of
        factors, or an action is outside ``0..num_controls[f]-1``.
    TypeError
        If ``policies`` is not a list of integer arrays.

    Examples
    --------
    >>> from fa_core.policies import validate_policies
    >>> [p.tolist() for p in validate_policies([[0, 0], [3, 0]], [4, 1])]
    [[[0, 0]], [[3, 0]]]
    >>> validate_policies([[4, 0]], [4, 1])
    Traceback (most recent call last):
    ...
    ValueError: policies[0] has an action outside 0..num_controls-1 (num_controls = [4, 1])
    """
    if isinstance(policies, np.ndarray) and policies.dtype != object and policies.ndim == 3:
        policies = list(policies)
    if not isinstance(policies, (list, tuple, np.ndarray)):
        raise TypeError(f"policies must be a list of (policy_len, num_factors) integer arrays, "
                        f"got {type(policies).__name__}")
    if len(policies) == 0:
        raise ValueError("policies must be a non-empty list of (policy_len, num_factors) arrays")
    out = []
    nf = len(num_controls)
    check_policy_count(len(policies), 1, nf, "policies")
    for i, p in enumerate(policies):
        arr = np.asarray(p)
        if arr.ndim == 1:
            arr = arr[None, :]
        if not (np.issubdtype(arr.dtype, np.integer)
                or (np.issubdtype(arr.dtype, np.floating) and np.all(np.abs(arr) < 2 ** 31)
                    and np.all(arr == np.round(arr)))):
            raise TypeError(f"policies[{i}] must hold integer actions, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.ndim != 2 or arr.shape[1] != nf:
            raise ValueError(f"policies[{i}] has shape {arr.shape}; expected (policy_len, {nf})")
        if arr.shape[0] < 1:
            raise ValueError(f"policies[{i}] has no time steps (shape {arr.shape}); "
                             f"policy_len must be >= 1")
        if out and arr.shape != out[0].shape:
            raise ValueError(
                f"policies[{i}] has shape {arr.shape}, unlike policies[0] {out[0].shape}")
        if np.any(arr < 0) or np.any(arr >= np.asarray(num_controls)):
            raise ValueError(f"policies[{i}] has an action outside 0..num_controls-1 "
                             f"(num_controls = {list(num_controls)})")
        out.append(arr)
    check_policy_count(len(out), out[0].shape[0], nf, "policies")
    return out
