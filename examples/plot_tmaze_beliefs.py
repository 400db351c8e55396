"""
A T-maze agent's beliefs over a trial
=====================================

One :class:`fa_core.Agent` in the T-maze of :func:`fa_core.builtin_models.tmaze`: reward is in the
right or the left arm (the hidden *context*), and a cue at the bottom of the maze tells which.
With two-step policies the agent first visits the cue, then walks to the arm the cue names. We run
two trials, one per context, and plot the belief over the context and the policy posterior's
choice at every step.
"""

import matplotlib.pyplot as plt
import numpy as np

from fa_core import Agent, builtin_models
from fa_core.envs import TMaze

LOCATIONS = ["centre", "right arm", "left arm", "cue"]

# %%
# Run one trial per context. ``env.context`` is the hidden state; we set it so both trials
# are shown. The agent's ``action`` is one float per factor (pymdp's type); the environment
# takes one int per factor.

agent = Agent(**builtin_models.tmaze(), policy_len=2, seed=0)
trials = []
for context in (0, 1):
    env = TMaze(n_agents=1, seed=context)
    obs = env.reset()
    env.context[:] = context
    obs = env.step(np.zeros((1, 2), dtype=int))     # start in the centre, observe with the context set
    agent.reset()
    agent.action = None                              # start the trial from D, not the last action
    rows = []
    for t in range(4):
        qs = agent.infer_states(list(obs[0]))
        q_pi, G = agent.infer_policies()
        action = agent.sample_action()
        rows.append({"where": LOCATIONS[obs[0, 0]], "p_right": qs[1][0],
                     "reward": int(obs[0, 1]), "q_pi_max": q_pi.max()})
        obs = env.step(action[None, :].astype(int))
    trials.append(rows)
    print(f"context {context}:", " -> ".join(r["where"] for r in rows))

# %%
# The belief that reward is in the right arm starts at 0.5, jumps to 0 or 1 at the cue, and stays
# there while the agent collects the reward (reward outcome 1).

fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True, layout="constrained")
for ax, context, rows in zip(axes, (0, 1), trials):
    t = np.arange(len(rows))
    ax.plot(t, [r["p_right"] for r in rows], "o-", label="q(reward in right arm)")
    ax.plot(t, [r["q_pi_max"] for r in rows], "s--", label="largest q(policy)")
    for ti, r in zip(t, rows):
        ax.annotate(r["where"] + (" +" if r["reward"] == 1 else ""), (ti, 0.05),
                    ha="center", fontsize=8, rotation=20)
    ax.set_title(f"reward in the {'right' if context == 0 else 'left'} arm")
    ax.set_xlabel("time step")
    ax.set_xticks(t)
    ax.set_ylim(-0.05, 1.05)
axes[0].set_ylabel("probability")
axes[0].legend(loc="center right", fontsize=8)
plt.show()
