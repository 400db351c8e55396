"""
A population of grid foragers: where the agents are
===================================================

A :class:`fa_core.Population` of 2,000 foragers sharing one grid10 model
(:func:`fa_core.builtin_models.grid_forager`) in :class:`fa_core.envs.GridWorld`. Each agent
starts on a random cell without food, prefers to observe food, and infers where to go. We count
agents per cell at the start and after a few steps, and how many have found food.
"""

import matplotlib.pyplot as plt
import numpy as np

from fa_core import GenerativeModel, Population, builtin_models
from fa_core.envs import GridWorld

SIZE, N_AGENTS, STEPS = 10, 2000, 12

gm = GenerativeModel(**builtin_models.grid_forager(SIZE))
pop = Population(gm, N_AGENTS, seed=0)
env = GridWorld(SIZE, N_AGENTS, seed=1)

obs = env.reset()
start = np.bincount(env.location, minlength=SIZE * SIZE).reshape(SIZE, SIZE)
found = [env.found.mean()]
for t in range(STEPS):
    obs = env.step(pop.step(obs))                    # one kernel call steps all agents
    found.append(env.found.mean())
end = np.bincount(env.location, minlength=SIZE * SIZE).reshape(SIZE, SIZE)
print(f"{env.found.mean():.0%} of {N_AGENTS} agents found food in {STEPS} steps")

# %%
# Agents gather on the food cells (outlined): the model's ``C`` makes observing food the
# preferred outcome, and policy inference walks them there.

food = np.flatnonzero(env.food)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.5), layout="constrained")
for ax, counts, title in ((axes[0], start, "agents per cell at t = 0"),
                          (axes[1], end, f"agents per cell at t = {STEPS}")):
    im = ax.imshow(counts, cmap="viridis")
    for cell in food:
        r, c = divmod(cell, SIZE)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)
axes[2].plot(np.arange(STEPS + 1), found, "o-")
axes[2].set_xlabel("time step")
axes[2].set_ylabel("share of agents that found food")
axes[2].set_ylim(0, 1)
plt.show()
