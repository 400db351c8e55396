"""Write the reference blobs: agents stepped by a fixed script, hibernated.

Run from the repository root (``python tests/data/blobs/make_blobs.py``) only
to add cases: the committed blobs were written by fa_core before the engine
layer (fa_core.engines), and tests/test_engines.py checks that today's code
wakes them into the agents the same script builds, and hibernates those
agents back into the same bytes.
"""

from __future__ import annotations

import os

from fa_core import Agent, builtin_models

HERE = os.path.dirname(os.path.abspath(__file__))
OBS = ([0, 0, 1], [3, 0, 1], [3, 0, 0], [1, 1, 0], [0, 0, 1])

#: name -> Agent keywords (on the builtin tmaze); every agent is seeded with 0
CASES = {
    "vanilla": dict(policy_len=2, save_belief_hist=True),
    "vanilla_params": dict(inference_params={"num_iter": 4, "dF": 1.0, "dF_tol": 0.01},
                           gamma=8.0, action_hist_len=3),
    "sophisticated": dict(sophisticated=True, si_horizon=2),
    "mmp_bma": dict(inference_algo="MMP", policy_len=2, inference_horizon=3,
                    save_belief_hist=True),
    "mmp_sep": dict(inference_algo="MMP", inference_horizon=2, use_BMA=False,
                    policy_sep_prior=True, reuse_buffers=True),
}


def build(name: str, n_steps: int = len(OBS)) -> Agent:
    """The agent of case ``name`` after ``n_steps`` scripted steps."""
    agent = Agent(**builtin_models.tmaze(), **CASES[name], seed=0)
    for obs in OBS[:n_steps]:
        agent.infer_states(obs)
        agent.infer_policies()
        agent.sample_action()
    agent.infer_states(OBS[0])  # mid-step: beliefs newer than the policy posterior
    return agent


if __name__ == "__main__":
    for name in CASES:
        with open(os.path.join(HERE, f"{name}.blob"), "wb") as fh:
            fh.write(build(name).hibernate())
