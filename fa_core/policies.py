"""Policy sets: every combination of controls, or a user's own list."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np


def construct_policies(num_states: Sequence[int], num_controls: Sequence[int] | None = None,
                       policy_len: int = 1, control_fac_idx: Sequence[int] | None = None
                       ) -> list[np.ndarray]:
    """All policies of ``policy_len`` steps, in pymdp's order.

    Returns
    -------
    list of ndarray
        One int array of shape ``(policy_len, num_factors)`` per policy: the
        product over factors and time steps of ``range(num_controls[f])``.
    """
    num_factors = len(num_states)
    if control_fac_idx is None:
        control_fac_idx = ([f for f, n in enumerate(num_controls) if n > 1]
                           if num_controls is not None else list(range(num_factors)))
    if num_controls is None:
        num_controls = [num_states[f] if f in control_fac_idx else 1 for f in range(num_factors)]
    ranges = [range(n) for n in list(num_controls) * policy_len]
    return [np.array(p).reshape(policy_len, num_factors) for p in itertools.product(*ranges)]


def validate_policies(policies, num_controls: Sequence[int]) -> list[np.ndarray]:
    """Check a user's policies and return them as int64 arrays of one shape.

    Raises
    ------
    ValueError
        If the list is empty, shapes differ or do not match the number of
        factors, or an action is outside ``0..num_controls[f]-1``.
    """
    if policies is None or len(policies) == 0:
        raise ValueError("policies must be a non-empty list of (policy_len, num_factors) arrays")
    out = []
    nf = len(num_controls)
    for i, p in enumerate(policies):
        arr = np.asarray(p)
        if arr.ndim == 1:
            arr = arr[None, :]
        if not (np.issubdtype(arr.dtype, np.integer)
                or (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
            raise TypeError(f"policies[{i}] must hold integer actions, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.ndim != 2 or arr.shape[1] != nf:
            raise ValueError(f"policies[{i}] has shape {arr.shape}; expected (policy_len, {nf})")
        if out and arr.shape != out[0].shape:
            raise ValueError(f"policies[{i}] has shape {arr.shape}, unlike policies[0] {out[0].shape}")
        if np.any(arr < 0) or np.any(arr >= np.asarray(num_controls)):
            raise ValueError(f"policies[{i}] has an action outside 0..num_controls-1 "
                             f"(num_controls = {list(num_controls)})")
        out.append(arr)
    return out
