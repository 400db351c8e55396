"""Seeded random generative models in pymdp's layout, for tests.

Every function takes a ``numpy.random.Generator`` so that a test is fully
determined by its seed. Models are float64 object arrays exactly as a pymdp
user would build them: ``A[m]`` has shape ``(num_obs[m], *num_states[A_factor_list[m]])``
and ``B[f]`` has shape ``(num_states[f], *num_states[B_factor_list[f]], num_controls[f])``,
with every column (axis 0) summing to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def obj_array(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Pack arrays into a 1-D object array (``np.array`` would try to stack them)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def random_columns(rng: np.random.Generator, shape: tuple[int, ...], sparsity: float = 0.0,
                   concentration: float = 1.0) -> np.ndarray:
    """Array of ``shape`` whose columns (axis 0) are Dirichlet draws.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        ``shape[0]`` is the length of each distribution.
    sparsity : float
        Probability that an entry is set to zero before renormalising. A column
        is never left all-zero: one entry of an emptied column is kept.
    concentration : float
        Dirichlet concentration; small values give peaked columns.
    """
    n = shape[0]
    cols = int(np.prod(shape[1:], dtype=np.int64))
    x = rng.dirichlet(np.full(n, concentration), size=cols).T  # (n, cols)
    # Dirichlet draws with small concentration can underflow to exact zeros;
    # floor them so that zeros only come from ``sparsity`` and stay deliberate.
    x = np.maximum(x, 1e-12)
    if sparsity > 0.0:
        mask = rng.random(x.shape) >= sparsity
        empty = ~mask.any(axis=0)
        mask[rng.integers(0, n, size=cols)[empty], np.nonzero(empty)[0]] = True
        x = x * mask
    x = x / x.sum(axis=0, keepdims=True)
    return x.reshape(shape)


def near_onehot_columns(rng: np.random.Generator, shape: tuple[int, ...],
                        eps: float = 0.02) -> np.ndarray:
    """Columns close to one-hot: ``(1 - eps) * onehot + eps * dirichlet``."""
    n = shape[0]
    cols = int(np.prod(shape[1:], dtype=np.int64))
    onehot = np.zeros((n, cols))
    onehot[rng.integers(0, n, size=cols), np.arange(cols)] = 1.0
    x = (1.0 - eps) * onehot + eps * rng.dirichlet(np.ones(n), size=cols).T
    return (x / x.sum(axis=0, keepdims=True)).reshape(shape)


def random_model(rng: np.random.Generator, num_states: Sequence[int], num_obs: Sequence[int],
                 num_controls: Sequence[int], A_factor_list: Sequence[Sequence[int]] | None = None,
                 B_factor_list: Sequence[Sequence[int]] | None = None, sparsity: float = 0.0,
                 near_onehot_B: bool = False, C_scale: float = 1.0, C_len: int | None = None,
                 concentration: float = 1.0) -> dict:
    """A random model in pymdp's layout.

    Parameters
    ----------
    rng : numpy.random.Generator
    num_states, num_obs, num_controls : sequence of int
        Per factor, per modality and per factor sizes.
    A_factor_list : list of list of int, optional
        Factors each modality depends on; all factors if None.
    B_factor_list : list of list of int, optional
        Factors each factor's transitions depend on; ``[[f] for f]`` if None.
    sparsity : float
        Fraction of entries of A and B set to zero (columns renormalised).
    near_onehot_B : bool
        Make B columns nearly deterministic, as in grid worlds.
    C_scale : float
        Standard deviation of the random preferences.
    C_len : int, optional
        If given, each ``C[m]`` is 2-D of shape ``(num_obs[m], C_len)`` (one
        preference vector per future step, as pymdp allows); otherwise 1-D.
    concentration : float
        Dirichlet concentration of A and B columns.

    Returns
    -------
    dict
        ``A, B, C, D`` (float64 object arrays), ``num_states, num_obs,
        num_controls`` (lists of int), ``A_factor_list, B_factor_list``
        (as given, possibly None) and the resolved ``A_deps, B_deps``.
    """
    num_states = [int(n) for n in num_states]
    num_obs = [int(n) for n in num_obs]
    num_controls = [int(n) for n in num_controls]
    nf = len(num_states)
    a_deps = ([list(range(nf))] * len(num_obs) if A_factor_list is None
              else [list(d) for d in A_factor_list])
    b_deps = [[f] for f in range(nf)] if B_factor_list is None else [list(d) for d in B_factor_list]

    A = obj_array([random_columns(rng, (no, *[num_states[f] for f in deps]), sparsity,
                                  concentration)
                   for no, deps in zip(num_obs, a_deps)])
    B = []
    for f in range(nf):
        shape = (num_states[f], *[num_states[g] for g in b_deps[f]], num_controls[f])
        if near_onehot_B:
            B.append(near_onehot_columns(rng, shape))
        else:
            B.append(random_columns(rng, shape, sparsity, concentration))
    B = obj_array(B)
    if C_len is None:
        C = obj_array([C_scale * rng.standard_normal(no) for no in num_obs])
    else:
        C = obj_array([C_scale * rng.standard_normal((no, C_len)) for no in num_obs])
    D = obj_array([rng.dirichlet(np.full(ns, 2.0)) for ns in num_states])
    return dict(A=A, B=B, C=C, D=D, num_states=num_states, num_obs=num_obs,
                num_controls=num_controls, A_factor_list=A_factor_list,
                B_factor_list=B_factor_list, A_deps=a_deps, B_deps=b_deps)


def dirichlet_counts(rng: np.random.Generator, arrays: np.ndarray,
                     scale: float = 4.0) -> np.ndarray:
    """Positive Dirichlet pseudo-counts with the zero pattern of ``arrays``.

    Used as ``pA``/``pB``/``pD``: counts are ``scale * p + U(0.1, 1)`` where
    ``p > 0`` and exactly zero where ``p == 0``.
    """
    return obj_array([(scale * a + rng.uniform(0.1, 1.0, size=a.shape)) * (a > 0)
                      for a in arrays])


def random_obs(rng: np.random.Generator, num_obs: Sequence[int]) -> list[int]:
    """One observation index per modality, as plain Python ints."""
    return [int(rng.integers(0, n)) for n in num_obs]


def random_distr_obs(rng: np.random.Generator, num_obs: Sequence[int]) -> np.ndarray:
    """One observation distribution per modality (for ``distr_obs=True``)."""
    return obj_array([rng.dirichlet(np.ones(n)) for n in num_obs])


def random_policies(rng: np.random.Generator, num_controls: Sequence[int], policy_len: int,
                    n: int) -> list[np.ndarray]:
    """``n`` distinct random policies of shape ``(policy_len, num_factors)``."""
    seen: set[bytes] = set()
    out = []
    total = int(np.prod(num_controls, dtype=np.int64)) ** policy_len
    n = min(n, total)
    while len(out) < n:
        p = np.stack([rng.integers(0, c, size=policy_len) for c in num_controls], axis=1)
        key = p.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


class RandomEnv:
    """A generative process sampling true states and observations from a model.

    Both agents under comparison read observations from one ``RandomEnv``, so
    they always see identical inputs; the env owns its own ``Generator`` so the
    agents' use of the global ``np.random`` does not disturb it.
    """

    def __init__(self, rng: np.random.Generator, model: dict):
        self.rng = rng
        self.A, self.B = model["A"], model["B"]
        self.a_deps, self.b_deps = model["A_deps"], model["B_deps"]
        self.state = [int(rng.choice(len(d), p=d)) for d in model["D"]]

    def observe(self) -> list[int]:
        """Sample one observation index per modality from the current state."""
        obs = []
        for A_m, deps in zip(self.A, self.a_deps):
            p = A_m[(slice(None), *[self.state[f] for f in deps])]
            obs.append(int(self.rng.choice(len(p), p=p / p.sum())))
        return obs

    def step(self, action: Sequence[float]) -> list[int]:
        """Advance the true state under ``action`` and return the new observation."""
        new = []
        for f, (B_f, deps) in enumerate(zip(self.B, self.b_deps)):
            p = B_f[(slice(None), *[self.state[g] for g in deps], int(action[f]))]
            new.append(int(self.rng.choice(len(p), p=p / p.sum())))
        self.state = new
        return self.observe()
