"""Sophisticated inference for :class:`fa_core.Agent` (``sophisticated=True``).

pymdp.legacy's ``Agent.infer_policies`` calls ``control.sophisticated_inference_search``
instead of its usual policy evaluation when built with ``sophisticated=True``. The
search itself runs in :mod:`fa_core._sophisticated`; this module validates the
options, keeps one dense copy of each model the search reads, and sizes the scratch.

Semantics reproduced from pymdp 1.0.x (deliberately, for parity):

* The agent passes ``gamma=1.0`` to the search: ``q_pi = softmax(G)`` whatever
  ``Agent.gamma`` is, and the policy prior ``E`` is not used.
* ``G`` at every node is expected utility + state information gain (+ the
  inductive cost when ``H`` is given, from that node's beliefs); ``use_utility``,
  ``use_states_info_gain`` and ``use_param_info_gain`` are not read.
* A policy whose (pre-expansion) probability is below ``si_policy_prune_threshold``
  gets ``-si_prune_penalty`` instead of a subtree. Joint outcomes are weighted by
  the product of the per-modality predicted outcome probabilities; those below
  ``si_state_prune_threshold`` are skipped. Each kept outcome's posterior comes
  from the agent's fixed-point state inference with the predicted states as prior.
"""

from __future__ import annotations

import warnings
import weakref

import numpy as np

from fa_core import _sophisticated
from fa_core.scratch import scratch

# one dense copy per model, dropped with the model
_SI_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()



def check_options(model, si_horizon, si_policy_prune_threshold, si_state_prune_threshold,
                  si_prune_penalty, *, policy_len=1, E=None, use_utility=True,
                  use_states_info_gain=True, use_param_info_gain=False) -> None:
    """Raise ValueError / TypeError for options the search cannot run with.

    Warns (UserWarning) about options the search does not read, as pymdp
    ignores them silently: ``E``, ``use_utility=False``,
    ``use_states_info_gain=False``, ``use_param_info_gain=True``.
    """
    # pymdp asserts on the policy_len keyword only (and then runs multi-step custom
    # policies with the search's one-step semantics broken): refuse both
    if policy_len != 1 or model.policy_len != 1:
        raise ValueError(f"sophisticated=True needs one-step policies (policy_len=1, as pymdp "
                         f"asserts); got policy_len={policy_len} and policies of length "
                         f"{model.policy_len}")
    if not isinstance(si_horizon, (int, np.integer)) or isinstance(si_horizon, bool):
        raise TypeError(f"si_horizon must be an int, got {si_horizon!r}")
    if si_horizon < 1:
        raise ValueError(f"si_horizon must be at least 1, got {si_horizon}")
    for name, v in (("si_policy_prune_threshold", si_policy_prune_threshold),
                    ("si_state_prune_threshold", si_state_prune_threshold),
                    ("si_prune_penalty", si_prune_penalty)):
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) \
                or not np.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    for name, v in (("si_policy_prune_threshold", si_policy_prune_threshold),
                    ("si_state_prune_threshold", si_state_prune_threshold)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} is a probability threshold in [0, 1], got {v!r}")
    ignored = [name for name, given in (("E", E is not None),
                                        ("use_utility=False", not use_utility),
                                        ("use_states_info_gain=False", not use_states_info_gain),
                                        ("use_param_info_gain=True", bool(use_param_info_gain)))
               if given]
    if ignored:
        warnings.warn(f"sophisticated=True does not use {', '.join(ignored)}: as in pymdp, the "
                      "search scores utility + state information gain (+ inductive cost) with "
                      "gamma=1 and no policy prior", UserWarning, stacklevel=3)


def si_model(model) -> _sophisticated.SIModel:
    """The search's dense copy of ``model`` (built once per model)."""
    sm = _SI_MODELS.get(model)
    if sm is None:
        sm = _sophisticated.SIModel(
            list(model.num_states), list(model.num_obs),
            [list(d) for d in model.A_factor_list], [list(d) for d in model.B_factor_list],
            list(model.A), list(model._a_H), list(model.B), list(model._lnC), model._I,
            np.stack(model.policies)[:, 0, :])
        _SI_MODELS[model] = sm
    return sm


def infer_policies(model, qs_flat, horizon, policy_prune_threshold, state_prune_threshold,
                   prune_penalty, fpi, G, q_pi) -> None:
    """Run the search from ``qs_flat``; writes ``G`` and ``q_pi`` (float32) in place.

    ``fpi`` is the agent's ``(num_iter, dF, dF_tol, compute_vfe)``.
    """
    sm = si_model(model)
    n_dbl, n_int = sm.scratch_sizes(horizon)
    num_iter, dF, dF_tol, compute_vfe = fpi
    qs = scratch(sm.num_states_total, "si_qs", np.float64)[:sm.num_states_total]
    qs[:] = qs_flat
    _sophisticated.search(sm, qs, int(horizon), float(policy_prune_threshold),
                          float(state_prune_threshold), float(prune_penalty), 1.0,
                          num_iter, dF, dF_tol, compute_vfe,
                          scratch(n_dbl, "si_dbl", np.float64), scratch(n_int, "si_int", np.int32),
                          G, q_pi)


def tie_rtol(G: np.ndarray, q_pi: np.ndarray) -> float:
    """Relative band within which two action probabilities are a tie.

    The search sums in double precision over float32 copies of the model, so a
    policy's ``G`` carries a relative error of a few float32 epsilons: the band
    is 16 epsilons times ``1 + max |G|`` over the policies that carry
    probability (pruned ones, at ``-si_prune_penalty``, do not compete).
    """
    # computed once, in the compiled search's c_si_tie_rtol (Population's selection uses it)
    return _sophisticated.tie_rtol(np.ascontiguousarray(G, np.float32),
                                   np.ascontiguousarray(q_pi, np.float32))
