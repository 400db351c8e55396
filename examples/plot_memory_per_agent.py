"""
Memory per agent: fa_core against pymdp
=======================================

How many bytes one more agent costs. pymdp's numpy Agent (``pymdp.legacy.agent.Agent``) is built
with its own copy of the model arrays, as users write it, and measured with tracemalloc
(:func:`fa_core.memory.retained_bytes`: what stays allocated after construction and one step).
fa_core's agents share one :class:`fa_core.GenerativeModel`: each owns only its beliefs, policy
posterior, action and random state (:func:`fa_core.memory_report_many`), and the shared model is
divided over the agents that use it.
"""

import copy

import matplotlib.pyplot as plt
import numpy as np
from pymdp.legacy.agent import Agent as PymdpAgent

from fa_core import Agent, GenerativeModel, builtin_models, memory_report_many
from fa_core.memory import retained_bytes

MODELS = ["tmaze", "grid10", "grid30"]
N_SHARED = 1000                                      # fa_core agents sharing one model


def first_obs(kwargs):
    return [0] * len(kwargs["A"])


def pymdp_agent(kwargs):
    agent = PymdpAgent(**copy.deepcopy(kwargs))
    agent.infer_states(first_obs(kwargs))
    return agent


rows = []
for name in MODELS:
    kwargs = builtin_models.get(name)
    pymdp_agent(kwargs)                              # warm-up: lazy imports are not an agent's
    py_bytes = retained_bytes(lambda: pymdp_agent(kwargs))
    gm = GenerativeModel(**kwargs)
    agents = [Agent(model=gm, seed=i) for i in range(N_SHARED)]
    for a in agents[:10]:
        a.infer_states(first_obs(kwargs))
    report = memory_report_many(agents, include_scratch=False)
    fa_bytes = report.per_agent + report.shared_model / N_SHARED
    rows.append((name, py_bytes, report.per_agent, fa_bytes))
    print(f"{name:7s} pymdp {py_bytes / 1e3:10.1f} KB   fa_core owned {report.per_agent / 1e3:6.1f} KB"
          f" + shared model / {N_SHARED} = {fa_bytes / 1e3:6.1f} KB   ({py_bytes / fa_bytes:,.0f}x)")
    del agents, gm

# %%
# Log scale: the bigger the model, the more pymdp pays per agent, while an fa_core agent's own
# bytes grow only with its beliefs and policy posterior.

fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
x = np.arange(len(rows))
ax.bar(x - 0.2, [r[1] for r in rows], 0.4, label="pymdp numpy Agent (own model copy)")
ax.bar(x + 0.2, [r[3] for r in rows], 0.4, label=f"fa_core Agent ({N_SHARED} share a model)")
ax.set_yscale("log")
ax.set_ylim(top=max(r[1] for r in rows) * 5)
ax.set_xticks(x, MODELS)
ax.set_ylabel("bytes per agent")
for xi, r in zip(x, rows):
    ax.annotate(f"{r[1] / r[3]:,.0f}x", (xi, r[1]), ha="center", va="bottom", fontsize=9)
ax.legend(fontsize=8)
plt.show()
