"""Vectorised environments: many independent agents stepped at once with numpy.

Each environment matches a model of :mod:`fa_core.builtin_models`: the
observation row of agent ``i`` holds one outcome index per modality of that
model, in the same order, and ``actions`` hold one control index per factor.
Outcomes are drawn from the same likelihoods the model's ``A`` states, so an
agent with that model is not misspecified.
"""

from __future__ import annotations

import numpy as np

from fa_core.builtin_models import GRID_ACTIONS, TMAZE_REWARD_PROB, default_reward_locations

__all__ = ["GridWorld", "ModelWorld", "TMaze"]


def _as_actions(actions, n_agents: int, n_factors: int, num_controls: int) -> np.ndarray:
    """The first-factor control index per agent from ``(n_agents,)`` or ``(n_agents, n_factors)``.

    Accepts floats holding whole numbers, as ``Agent.sample_action`` returns.
    Other factors must be uncontrolled (control 0).
    """
    a = np.asarray(actions)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n_agents or a.shape[1] not in (1, n_factors):
        raise ValueError(
            f"actions: expected shape ({n_agents},) or ({n_agents}, {n_factors}), "
            f"got {np.shape(actions)}"
        )
    if a.dtype.kind not in "iuf" or (a.dtype.kind == "f" and not np.all(a == np.round(a))):
        raise ValueError("actions: must be whole numbers (control indices)")
    a = a.astype(np.int64)
    if a[:, 0].min() < 0 or a[:, 0].max() >= num_controls:
        raise ValueError(f"actions: factor-0 controls must lie in [0, {num_controls})")
    if np.any(a[:, 1:] != 0):
        raise ValueError("actions: uncontrolled factors take control 0")
    return a[:, 0]


class GridWorld:
    """Foragers on a ``size`` x ``size`` grid, as :func:`~fa_core.builtin_models.grid_forager`.

    Parameters
    ----------
    size : int
        Side of the grid.
    n_agents : int
        Number of independent agents (they do not interact; food is not eaten).
    reward_locations : sequence of (row, col), optional
        Food cells; the model's defaults if omitted.
    seed : int or numpy.random.Generator, optional
        Randomness of the start cells.

    Attributes
    ----------
    location : ndarray of int64, shape (n_agents,)
        Current cell of each agent, ``row * size + col``.
    food_steps : ndarray of int64, shape (n_agents,)
        Number of observations of food so far, per agent.
    found : ndarray of bool, shape (n_agents,)
        Whether the agent has observed food at least once.

    Notes
    -----
    Observations are ``(n_agents, 2)`` int64: column 0 the location, column 1
    the reward (0 nothing, 1 food). Agents start on random cells without food.

    Examples
    --------
    >>> import numpy as np
    >>> from fa_core.envs import GridWorld
    >>> env = GridWorld(size=5, n_agents=3, seed=0)
    >>> env.reset()                               # (location, food) per agent
    array([[21,  0],
           [15,  0],
           [12,  0]])
    >>> env.step(np.array([4, 4, 4]))             # everyone moves right; agent 1 finds food
    array([[22,  0],
           [16,  1],
           [13,  0]])
    """

    n_factors = 1
    num_controls = len(GRID_ACTIONS)

    def __init__(self, size: int = 10, n_agents: int = 1, reward_locations=None, seed=None):
        self.size = int(size)
        self.n_agents = int(n_agents)
        if self.size < 2:
            raise ValueError(f"size: must be at least 2, got {size}")
        if self.n_agents < 1:
            raise ValueError(f"n_agents: must be at least 1, got {n_agents}")
        if reward_locations is None:
            reward_locations = default_reward_locations(self.size)
        n = self.size * self.size
        self.food = np.zeros(n, dtype=bool)
        for r, c in reward_locations:
            if not (0 <= r < self.size and 0 <= c < self.size):
                raise ValueError(
                    f"reward_locations: cell ({r}, {c}) is outside a {size}x{size} grid")
            self.food[r * self.size + c] = True
        self._free_cells = np.flatnonzero(~self.food)
        if self._free_cells.size == 0:
            raise ValueError("reward_locations: food everywhere leaves no start cell")
        # next_cell[a, s]: deterministic successor, the same table as the model's B.
        rows, cols = np.divmod(np.arange(n), self.size)
        self._next_cell = np.stack([
            np.clip(rows + dr, 0, self.size - 1) * self.size + np.clip(cols + dc, 0, self.size - 1)
            for dr, dc in GRID_ACTIONS
        ])
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.location = np.zeros(self.n_agents, dtype=np.int64)
        self.food_steps = np.zeros(self.n_agents, dtype=np.int64)
        self.found = np.zeros(self.n_agents, dtype=bool)

    def _observe(self) -> np.ndarray:
        obs = np.empty((self.n_agents, 2), dtype=np.int64)
        obs[:, 0] = self.location
        obs[:, 1] = self.food[self.location]
        self.food_steps += obs[:, 1]
        self.found |= obs[:, 1].astype(bool)
        return obs

    def reset(self) -> np.ndarray:
        """Put every agent on a random food-free cell and clear the tallies.

        Returns
        -------
        obs : ndarray of int64, shape (n_agents, 2)
            Location and food outcome per agent.

        Examples
        --------
        >>> from fa_core.envs import GridWorld
        >>> env = GridWorld(size=5, n_agents=3, seed=0)
        >>> obs = env.reset()
        >>> obs[:, 0].tolist() == env.location.tolist(), obs[:, 1].tolist()
        (True, [0, 0, 0])
        """
        self.location = self._rng.choice(self._free_cells, size=self.n_agents).astype(np.int64)
        self.food_steps[:] = 0
        self.found[:] = False
        return self._observe()

    def step(self, actions) -> np.ndarray:
        """Move every agent by its action (0 stay, 1 up, 2 down, 3 left, 4 right).

        Moving into a wall keeps the agent in place.

        Parameters
        ----------
        actions : array_like of int, shape (n_agents,) or (n_agents, 1)
            One control index per agent, as :meth:`fa_core.Population.step` returns.

        Returns
        -------
        obs : ndarray of int64, shape (n_agents, 2)
            Location and food outcome per agent.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core.envs import GridWorld
        >>> env = GridWorld(size=5, n_agents=3, seed=0)
        >>> _ = env.reset()
        >>> env.step(np.array([[1], [0], [3]]))[:, 0]  # up, stay, left
        array([16, 15, 11])
        """
        a = _as_actions(actions, self.n_agents, self.n_factors, self.num_controls)
        self.location = self._next_cell[a, self.location]
        return self._observe()


class TMaze:
    """Agents in the T-maze of :func:`~fa_core.builtin_models.tmaze`.

    Parameters
    ----------
    n_agents : int
        Number of independent agents, each with its own context.
    seed : int or numpy.random.Generator, optional
        Randomness of contexts, reward draws and uninformative cues.

    Attributes
    ----------
    location, context : ndarray of int64, shape (n_agents,)
        Hidden state per agent (location 0 centre, 1 right arm, 2 left arm,
        3 cue; context 0 means reward in the right arm).
    rewards, losses : ndarray of int64, shape (n_agents,)
        Reward and loss outcomes observed so far, per agent.

    Notes
    -----
    Observations are ``(n_agents, 3)`` int64: location, reward (0 none,
    1 reward, 2 loss) and cue (the context at the cue location, a fair coin
    elsewhere). Actions name the location to move to; the context factor is
    uncontrolled.

    Examples
    --------
    >>> import numpy as np
    >>> from fa_core.envs import TMaze
    >>> env = TMaze(n_agents=3, seed=0)
    >>> obs = env.reset()                         # all in the centre
    >>> env.step(np.array([[3, 0]] * 3))          # to the cue: it shows the context
    array([[3, 0, 1],
           [3, 0, 1],
           [3, 0, 1]])
    >>> env.context
    array([1, 1, 1])
    """

    n_factors = 2
    num_controls = 4

    def __init__(self, n_agents: int = 1, seed=None):
        self.n_agents = int(n_agents)
        if self.n_agents < 1:
            raise ValueError(f"n_agents: must be at least 1, got {n_agents}")
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.location = np.zeros(self.n_agents, dtype=np.int64)
        self.context = np.zeros(self.n_agents, dtype=np.int64)
        self.rewards = np.zeros(self.n_agents, dtype=np.int64)
        self.losses = np.zeros(self.n_agents, dtype=np.int64)

    def _observe(self) -> np.ndarray:
        n, loc = self.n_agents, self.location
        obs = np.zeros((n, 3), dtype=np.int64)
        obs[:, 0] = loc
        in_arm = (loc == 1) | (loc == 2)
        likely = self._rng.random(n) < TMAZE_REWARD_PROB
        good_arm = loc == self.context + 1
        # The matching arm mostly rewards, the other mostly punishes.
        obs[:, 1] = np.where(in_arm, np.where(good_arm == likely, 1, 2), 0)
        obs[:, 2] = np.where(loc == 3, self.context, self._rng.integers(0, 2, size=n))
        self.rewards += obs[:, 1] == 1
        self.losses += obs[:, 1] == 2
        return obs

    def reset(self) -> np.ndarray:
        """Agents to the centre with a fresh random context; clear the tallies.

        Returns
        -------
        obs : ndarray of int64, shape (n_agents, 3)
            Location, reward and cue outcome per agent.

        Examples
        --------
        >>> from fa_core.envs import TMaze
        >>> env = TMaze(n_agents=2, seed=0)
        >>> env.reset()[:, :2]                        # centre, no reward
        array([[0, 0],
               [0, 0]])
        """
        self.location = np.zeros(self.n_agents, dtype=np.int64)
        self.context = self._rng.integers(0, 2, size=self.n_agents).astype(np.int64)
        self.rewards[:] = 0
        self.losses[:] = 0
        return self._observe()

    def step(self, actions) -> np.ndarray:
        """Move every agent to the location its action names.

        Parameters
        ----------
        actions : array_like of int, shape (n_agents,) or (n_agents, 2)
            The location to move to per agent (factor 0's control; the context
            factor's control is ignored), as :meth:`fa_core.Population.step` returns.

        Returns
        -------
        obs : ndarray of int64, shape (n_agents, 3)
            Location, reward (0 none, 1 reward, 2 loss) and cue outcome per agent.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core.envs import TMaze
        >>> env = TMaze(n_agents=2, seed=0)
        >>> _ = env.reset()
        >>> obs = env.step(np.array([1, 2]))          # right arm, left arm
        >>> obs[:, 0].tolist(), env.rewards.tolist(), env.losses.tolist()
        ([1, 2], [0, 1], [1, 0])
        """
        self.location = _as_actions(actions, self.n_agents, self.n_factors, self.num_controls)
        return self._observe()


class ModelWorld:
    """Agents in the world a generative model describes: hidden states move under the
    model's own ``B`` and the agents' actions, outcomes are drawn from its ``A``.

    For models without a hand-written environment (``four_factor``); the agents are not
    misspecified, so what they do shows the model's preferences at work.

    Parameters
    ----------
    model : fa_core.GenerativeModel
        The model whose ``A``, ``B``, ``C`` and ``D`` define the world (first states from ``D``).
    n_agents : int
        Number of independent agents.
    seed : int or numpy.random.Generator, optional
        Randomness of the states and outcomes.

    Attributes
    ----------
    state : ndarray of int64, shape (n_agents, num_factors)
        True hidden state per agent and factor.
    utility : ndarray of float64, shape (n_agents,)
        Sum over the steps so far of the preferences ``C[m][o]`` (the model's ``C``) of the
        outcomes each agent observed, over all modalities: higher is better for the agent.
    steps : int
        Observations made since :meth:`reset` (the first one included).

    Examples
    --------
    >>> from fa_core import GenerativeModel, Population, builtin_models
    >>> gm = GenerativeModel(**builtin_models.get("tmaze"))
    >>> world = ModelWorld(gm, 4, seed=0)
    >>> world.reset().shape
    (4, 3)
    """

    def __init__(self, model, n_agents: int = 1, seed=None):
        self.n_agents = int(n_agents)
        if self.n_agents < 1:
            raise ValueError(f"n_agents: must be at least 1, got {n_agents}")
        self._A = [np.asarray(a, dtype=np.float64) for a in model.A]
        self._B = [np.asarray(b, dtype=np.float64) for b in model.B]
        self._D = [np.asarray(d, dtype=np.float64) for d in model.D]
        self._C = [np.asarray(c, dtype=np.float64) for c in model.C]
        self._a_deps = [list(d) for d in model.A_factor_list]
        self._b_deps = [list(d) for d in model.B_factor_list]
        self.num_controls = list(model.num_controls)
        self.n_factors = len(self._B)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.state = np.zeros((self.n_agents, self.n_factors), dtype=np.int64)
        self.utility = np.zeros(self.n_agents)
        self.steps = 0

    def _draw(self, p: np.ndarray) -> np.ndarray:
        """One index per column of ``p`` (outcomes x agents), by inverse CDF."""
        cdf = np.cumsum(p, axis=0)
        u = self._rng.random(p.shape[1]) * cdf[-1]
        return np.minimum((cdf < u).sum(axis=0), p.shape[0] - 1)

    def _observe(self) -> np.ndarray:
        obs = np.stack([self._draw(a[(slice(None), *self.state[:, deps].T)])
                        for a, deps in zip(self._A, self._a_deps)], axis=1).astype(np.int64)
        for m, c in enumerate(self._C):
            self.utility += c[obs[:, m]]
        self.steps += 1
        return obs

    def reset(self) -> np.ndarray:
        """Draw every agent's states from ``D``, clear the tallies, return observations.

        Returns
        -------
        obs : ndarray of int64, shape (n_agents, num_modalities)
            Each agent's first outcome indices.

        Examples
        --------
        >>> from fa_core import GenerativeModel, builtin_models
        >>> world = ModelWorld(GenerativeModel(**builtin_models.get("tmaze")), 4, seed=0)
        >>> obs = world.reset()
        >>> obs.shape, world.steps
        ((4, 3), 1)
        """
        self.state = np.stack([self._draw(np.repeat(d[:, None], self.n_agents, axis=1))
                               for d in self._D], axis=1).astype(np.int64)
        self.utility[:] = 0.0
        self.steps = 0
        return self._observe()

    def step(self, actions) -> np.ndarray:
        """Move every agent's states under ``B`` and its actions; return the new outcomes.

        Parameters
        ----------
        actions : array_like of int, shape (n_agents, num_factors)
            One control index per agent and factor (as ``Population.step`` returns).

        Returns
        -------
        obs : ndarray of int64, shape (n_agents, num_modalities)
            Each agent's outcome indices.

        Examples
        --------
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.get("tmaze"))
        >>> world, pop = ModelWorld(gm, 4, seed=0), Population(gm, 4, seed=0)
        >>> obs = world.step(pop.step(world.reset()))
        >>> obs.shape, world.steps
        ((4, 3), 2)
        """
        a = np.asarray(actions)
        if a.shape != (self.n_agents, self.n_factors) or a.dtype.kind not in "iuf":
            raise ValueError(f"actions: expected a numeric array of shape "
                             f"({self.n_agents}, {self.n_factors}), got {np.shape(actions)}")
        a = a.astype(np.int64)
        if np.any(a < 0) or np.any(a >= np.asarray(self.num_controls)):
            raise ValueError(f"actions: controls must lie in [0, num_controls) = "
                             f"{self.num_controls} per factor")
        self.state = np.stack(
            [self._draw(b[(slice(None), *self.state[:, deps].T, a[:, f])])
             for f, (b, deps) in enumerate(zip(self._B, self._b_deps))], axis=1).astype(np.int64)
        return self._observe()
