"""
Hibernate and wake: many agents under a memory budget
=====================================================

An :class:`fa_core.AgentPool` keeps at most ``max_awake`` agents awake and hibernates the least
recently used into small checked blobs (:meth:`fa_core.Agent.hibernate`). Hibernation is lossless
by default, so a run through the pool gives exactly the numbers of a run with every agent awake.
We run 200 T-maze agents for a few steps both ways, compare, and plot the bytes an agent takes
awake and asleep (lossless, and with ``lossy="float16"``).
"""

import matplotlib.pyplot as plt
import numpy as np

from fa_core import Agent, AgentPool, GenerativeModel, builtin_models, memory_report
from fa_core.envs import TMaze

N, STEPS = 200, 4
gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)


def run(get):
    """Step agent ``i`` (through ``get(i)``) in its own T-maze; return every agent's actions."""
    env = TMaze(N, seed=0)
    obs = env.reset()
    actions = np.zeros((STEPS, N, 2), dtype=int)
    for t in range(STEPS):
        for i in range(N):
            agent = get(i)
            agent.infer_states(list(obs[i]))
            agent.infer_policies()
            actions[t, i] = agent.sample_action()
        obs = env.step(actions[t])
    return actions


awake = [Agent(model=gm, seed=i) for i in range(N)]
pool = AgentPool(max_awake=20)
for i in range(N):
    pool[i] = Agent(model=gm, seed=i)
a_awake = run(lambda i: awake[i])
a_pool = run(lambda i: pool[i])
print(pool, f"- hibernated {pool.n_hibernated} times, woken {pool.n_woken} times")
print("same actions with 20 of 200 awake as with all awake:", np.array_equal(a_awake, a_pool))
assert np.array_equal(a_awake, a_pool)

# %%
# Bytes per agent: its own memory awake (:func:`fa_core.memory_report`, the shared model not
# counted), and its blob asleep.

agent = awake[0]
sizes = {
    "awake (owned)": memory_report(agent).per_agent,
    "hibernated": len(agent.hibernate()),
    'hibernated, lossy="float16"': len(agent.hibernate(lossy="float16")),
}
woken = Agent.wake(agent.hibernate())
assert all(np.array_equal(a, b) for a, b in zip(woken.qs, agent.qs))

fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
ax.barh(list(sizes), list(sizes.values()), color=["tab:blue", "tab:green", "tab:olive"])
for y, v in enumerate(sizes.values()):
    ax.annotate(f"{v:,.0f} B", (v, y), va="center", xytext=(3, 0), textcoords="offset points")
ax.set_xlabel("bytes per T-maze agent")
ax.invert_yaxis()
ax.set_xlim(0, max(sizes.values()) * 1.25)
plt.show()
