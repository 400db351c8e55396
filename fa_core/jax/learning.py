"""Dirichlet learning of ``A`` / ``B`` and inductive reachability, in jax.numpy.

Learning changes the model, so it runs in JAX on the agent's parameters (as
pymdp's JAX agent does) and the agent registers the learnt model with the
kernels afterwards; these functions act on one batch row (vmapped by the
agent).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

#: pymdp JAX's floor for probabilities and counts (float64 machine epsilon)
MINVAL = float(jnp.finfo(jnp.float64).eps)


def outer(arrays: list) -> jnp.ndarray:
    """Outer product of vectors ``arrays[0] x arrays[1] x ...``, summed over a leading time axis.

    Each array is (T, n_i); the result has shape (n_0, n_1, ...).
    """
    k = len(arrays)
    out = None
    for i, a in enumerate(arrays):
        shape = (a.shape[0],) + tuple(a.shape[1] if j == i else 1 for j in range(k))
        a = a.reshape(shape)
        out = a if out is None else out * a
    return out.sum(axis=0)


def expected_value(counts: jnp.ndarray) -> jnp.ndarray:
    """The mean of a Dirichlet over axis 0 (counts floored at :data:`MINVAL`)."""
    c = jnp.clip(counts, min=MINVAL)
    return c / c.sum(axis=0, keepdims=True)


def update_A_row(pA, obs, qs, A_deps, lr):
    """``pA[m] + lr * sum_t o_t x qs_t[deps]`` and its expectation, per modality.

    ``obs[m]`` is (T, num_obs[m]) (one-hot or categorical), ``qs[f]`` (T, ns_f).
    """
    new_pA, new_A = [], []
    for m, p in enumerate(pA):
        counts = p + lr * outer([obs[m]] + [qs[f] for f in A_deps[m]])
        new_pA.append(counts)
        new_A.append(expected_value(counts))
    return new_pA, new_A


def update_B_row(pB, qs_next, qs_prev, actions_onehot, B_deps, lr):
    """``pB[f] + lr * sum_t q(s_f,t+1) x q(deps,t) x u_f,t`` and its expectation, per factor.

    ``qs_next[f]`` / ``qs_prev[f]`` are (T-1, ns_f), already masked where a
    transition is not valid; ``actions_onehot[f]`` (T-1, num_controls[f]).
    """
    new_pB, new_B = [], []
    for f, p in enumerate(pB):
        counts = p + lr * outer([qs_next[f]] + [qs_prev[d] for d in B_deps[f]]
                                + [actions_onehot[f]])
        new_pB.append(counts)
        new_B.append(expected_value(counts))
    return new_pB, new_B


def reachability(H_f, B_f, threshold, depth: int):
    """Inductive matrix of one factor: row ``k`` marks states from which ``H_f``'s goal
    states are reachable within ``k`` steps (through transitions above ``threshold``).

    Returns (depth, ns) of 0.0 / 1.0.
    """
    step = (B_f > threshold).any(axis=-1)            # (next, prev): some action moves prev->next
    pred = jnp.swapaxes(step, 0, 1).astype(H_f.dtype)  # (prev, next)

    def body(I_prev, _):
        I_next = jnp.where(pred @ I_prev > 0.0, 1.0, 0.0).astype(H_f.dtype)
        return I_next, I_next

    _, rest = lax.scan(body, H_f, None, length=depth - 1)
    return jnp.concatenate([H_f[None], rest], axis=0)
