"""Backward smoothing of a filtered belief history (``inference_algo="ovf"`` / ``"exact"``).

With ``ovf`` and ``exact`` the agent filters one step at a time (in the
kernels, as ``fpi``); when it learns, :meth:`fa_core.jax.Agent.infer_parameters`
turns the filtered history ``q(s_t | o_1..t)`` of each factor into smoothed
marginals ``q(s_t | o_1..T)`` and pairwise joints ``q(s_t+1, s_t | o_1..T)``
with one backward pass through the transitions the actions picked. This is
pymdp's smoothing; it runs in JAX on one batch row (vmapped by the agent),
since learning changes the model anyway.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from fa_core.jax.learning import MINVAL, expected_value


def transitions_taken(B_f, actions_f):
    """``B_f[:, :, a_t]`` for each step, ``(T-1, ns, ns)``; the identity where ``a_t < 0``.

    ``B_f`` is one factor's ``(ns_next, ns_prev, num_controls)`` transition
    tensor (self-dynamics only), ``actions_f`` its ``(T-1,)`` action indices;
    a negative index marks a step without an action (padding), through which
    beliefs carry over unchanged.
    """
    a = actions_f.astype(jnp.int32)
    picked = jnp.moveaxis(jnp.take(B_f, jnp.maximum(a, 0), axis=-1), -1, 0)
    eye = jnp.eye(B_f.shape[0], dtype=B_f.dtype)
    return jnp.where((a < 0)[:, None, None], eye, picked)


def smooth_factor(filtered, trans, renormalize: bool = False):
    """Smoothed marginals ``(T, ns)`` and joints ``(T-1, ns_next, ns_prev)`` of one factor.

    Going back from the last filtered belief, each step conditions the
    earlier state on the later one (``B[next, prev] q_t(prev)`` normalised over
    ``prev``, zero where the later state is impossible) and weights that by the
    later smoothed marginal. ``renormalize`` (``exact``) rescales every
    smoothed marginal to sum to one before it is used, as pymdp's exact HMM
    smoother does; ``ovf`` keeps the recursion's own mass.
    """
    last = filtered[-1]
    if renormalize:
        last = last / jnp.clip(last.sum(), min=MINVAL)

    def back(later, xs):
        q_t, b_t = xs
        w = b_t * q_t[None, :]
        z = w.sum(axis=-1, keepdims=True)
        cond = w / jnp.where(z == 0, MINVAL, z)  # q(s_t | s_t+1), rows of impossible s_t+1: 0
        joint = cond * later[:, None]
        marg = joint.sum(axis=0)
        if renormalize:
            marg = marg / jnp.clip(marg.sum(), min=MINVAL)
        return marg, (marg, joint)

    _, (margs, joints) = lax.scan(back, last, (filtered[:-1], trans), reverse=True)
    return jnp.concatenate([margs, last[None]], axis=0), joints


def smooth_row(filtered, B, actions, renormalize: bool = False):
    """:func:`smooth_factor` for every factor of one batch row.

    ``filtered[f]`` is ``(T, ns_f)``, ``B[f]`` ``(ns_f, ns_f, nc_f)``,
    ``actions`` ``(T-1, num_factors)``. Returns ``(marginals, joints)``, lists
    over factors.
    """
    margs, joints = [], []
    for f, (q, b) in enumerate(zip(filtered, B)):
        m, j = smooth_factor(q, transitions_taken(b, actions[:, f]), renormalize)
        margs.append(m)
        joints.append(j)
    return margs, joints


def update_B_from_joints(pB, joints, actions_onehot, lr):
    """``pB[f] + lr * sum_t q(s_t+1, s_t) x u_t`` and its expectation, per factor (one row).

    ``joints[f]`` is ``(T-1, ns_f, ns_f)`` (zero at steps without a valid
    transition), ``actions_onehot[f]`` ``(T-1, num_controls[f])``.
    """
    new_pB, new_B = [], []
    for p, j, u in zip(pB, joints, actions_onehot):
        counts = p + lr * jnp.einsum("tij,tu->iju", j, u)
        new_pB.append(counts)
        new_B.append(expected_value(counts))
    return new_pB, new_B
