"""Ready-made generative models in pymdp's layout, for demos, tests and benchmarks.

Each builder returns a dict of keyword arguments (float64 object arrays ``A``,
``B``, ``C``, ``D`` and whatever else the model needs) accepted unchanged by
both ``pymdp.legacy.agent.Agent(**d)`` and ``fa_core.Agent(**d)``. Every
builder is deterministic: random parts use a fixed seed.

The models are the sizes used in the benchmark table of the project's
reference document, so figures from :mod:`fa_core` and pymdp are comparable.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import numpy as np

__all__ = [
    "MODELS",
    "get",
    "tmaze",
    "tmaze_dense",
    "dense_like",
    "grid_forager",
    "grid10",
    "grid30",
    "grid30_confused",
    "four_factor",
    "default_reward_locations",
    "GRID_ACTIONS",
    "TMAZE_REWARD_PROB",
]

#: Moves of the grid forager, in control-index order, as (d_row, d_col).
GRID_ACTIONS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # stay, up, down, left, right

#: Probability that the arm matching the context gives reward (else loss), as in
#: pymdp's ``TMazeEnv``; the other arm gives loss with this probability.
TMAZE_REWARD_PROB = 0.98


def _obj_array(items) -> np.ndarray:
    # np.array(list_of_arrays, dtype=object) would build a nested array when the
    # shapes happen to agree, so fill an empty object array instead.
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = np.asarray(x, dtype=np.float64)
    return out


def tmaze() -> dict[str, Any]:
    """The classic T-maze of pymdp's ``TMazeEnv``.

    Factors: location (0 centre, 1 right arm, 2 left arm, 3 cue location) and
    context (0: reward in the right arm, 1: reward in the left arm).
    Modalities: location (4, observed exactly), reward (0 none, 1 reward,
    2 loss) and cue (2, reveals the context at the cue location and is
    uninformative elsewhere). Controls: 4 moves to any location, and 1 (none)
    for the context. The agent starts in the centre, uncertain of the context,
    and prefers reward (+3) to loss (-3).

    Returns
    -------
    dict
        ``A``, ``B``, ``C``, ``D``.

    Examples
    --------
    >>> from fa_core import Agent, builtin_models
    >>> d = builtin_models.tmaze()
    >>> [a.shape for a in d["A"]], [b.shape for b in d["B"]]
    ([(4, 4, 2), (3, 4, 2), (2, 4, 2)], [(4, 4, 4), (2, 2, 1)])
    >>> Agent(**d, policy_len=2)
    fa_core.Agent(num_states=[4, 2], num_obs=[4, 3, 2], policies=16, t=0)
    """
    n_loc, n_ctx = 4, 2
    A_loc = np.zeros((n_loc, n_loc, n_ctx))
    A_rew = np.zeros((3, n_loc, n_ctx))
    A_cue = np.zeros((2, n_loc, n_ctx))
    for loc in range(n_loc):
        for ctx in range(n_ctx):
            A_loc[loc, loc, ctx] = 1.0
            if loc in (0, 3):
                A_rew[0, loc, ctx] = 1.0
                if loc == 3:
                    A_cue[ctx, loc, ctx] = 1.0
                else:
                    A_cue[:, loc, ctx] = 0.5
            else:
                good, bad = (1, 2) if loc == ctx + 1 else (2, 1)
                A_rew[good, loc, ctx] = TMAZE_REWARD_PROB
                A_rew[bad, loc, ctx] = 1.0 - TMAZE_REWARD_PROB
                A_cue[:, loc, ctx] = 0.5

    # B_loc[next, prev, action] = 1 where next == action: every move is allowed.
    B_loc = np.zeros((n_loc, n_loc, n_loc))
    for action in range(n_loc):
        B_loc[action, :, action] = 1.0
    B_ctx = np.eye(n_ctx).reshape(n_ctx, n_ctx, 1)

    C = _obj_array([np.zeros(n_loc), np.array([0.0, 3.0, -3.0]), np.zeros(2)])
    D = _obj_array([np.eye(n_loc)[0], np.full(n_ctx, 1.0 / n_ctx)])
    return {"A": _obj_array([A_loc, A_rew, A_cue]), "B": _obj_array([B_loc, B_ctx]), "C": C, "D": D}


def dense_like(name: str, seed: int = 0) -> dict[str, Any]:
    """The builtin model ``name`` with every entry of ``A`` and ``B`` non-zero and random.

    Same shapes, ``C``, ``D`` and other keywords as ``get(name)``; each column of every
    ``A[m]`` and ``B[f]`` is drawn as ``gamma(1) + 1e-3`` per entry, normalised (a
    Dirichlet(1) column kept away from 0). No entry is zero, so the kernels take their
    dense paths: the cost of a model of that size without any structure to exploit.

    Parameters
    ----------
    name : str
        A name of :data:`MODELS`.
    seed : int
        Seed of the random entries (the arrays are drawn in the order ``A[0]``, ``A[1]``,
        ..., ``B[0]``, ...).

    Returns
    -------
    dict
        ``A``, ``B``, ``C``, ``D`` and whatever else ``get(name)`` returns.

    Examples
    --------
    >>> import numpy as np
    >>> from fa_core import builtin_models
    >>> d = builtin_models.dense_like("tmaze", seed=1)
    >>> [a.shape for a in d["A"]] == [a.shape for a in builtin_models.tmaze()["A"]]
    True
    >>> bool(all(np.all(a > 0) for a in d["A"])), np.allclose(d["B"][0].sum(axis=0), 1.0)
    (True, True)
    """
    d = dict(get(name))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)

    def dense(x):
        r = rng.gamma(1.0, size=np.shape(x)) + 1e-3
        return r / r.sum(axis=0, keepdims=True)

    for key in ("A", "B"):
        d[key] = _obj_array([dense(a) for a in d[key]])
    return d


def tmaze_dense() -> dict[str, Any]:
    """A T-maze-sized model with dense random ``A`` and ``B``: ``dense_like("tmaze", 0)``.

    The T-maze's shapes (factors of 4 and 2 states: 8 joint states; modalities of 4, 3
    and 2 outcomes; 4 policies) and its ``C`` and ``D``, but every likelihood and
    transition entry random and non-zero: the benchmark of small models without
    one-hot structure.

    Returns
    -------
    dict
        ``A``, ``B``, ``C``, ``D``.

    Examples
    --------
    >>> from fa_core import GenerativeModel, builtin_models
    >>> gm = GenerativeModel(**builtin_models.tmaze_dense())
    >>> gm.num_states, gm.num_obs, gm.num_policies
    ([4, 2], [4, 3, 2], 4)
    >>> gm.is_sparse["A"], gm.is_sparse["B"]
    ([False, False, False], [[False, False, False, False], [False]])
    """
    return dense_like("tmaze", 0)


def default_reward_locations(size: int) -> list[tuple[int, int]]:
    """Food cells used by :func:`grid_forager` when none are given.

    Three cells away from the borders and from each other, so food has to be
    looked for; the same cells for a given ``size`` every time.

    Parameters
    ----------
    size : int
        Side of the grid, at least 2.

    Returns
    -------
    list of (int, int)
        ``(row, col)`` of each food cell, sorted.

    Examples
    --------
    >>> from fa_core import builtin_models
    >>> builtin_models.default_reward_locations(10)
    [(2, 7), (7, 2), (7, 7)]
    """
    if size < 2:
        raise ValueError(f"size must be at least 2, got {size}")
    a, b = size // 4, size - 1 - size // 4
    return sorted({(a, b), (b, a), (b, b)})


def grid_forager(size: int = 10, reward_locations=None,
                 cue_confusion: float = 0.0) -> dict[str, Any]:
    """A forager on a ``size`` x ``size`` grid looking for food.

    One factor: the location, ``row * size + col``. Five controls: stay, up,
    down, left, right (moving into a wall keeps the agent in place); ``B`` is
    one-hot. Modalities: location (``size * size`` outcomes) and reward (0
    nothing, 1 food, food at ``reward_locations``). The agent prefers food
    (``C`` = [0, 4]) and starts uncertain of where it is (uniform ``D``).

    With ``cue_confusion=0`` the location cue is exact (identity ``A``) and the
    first observation settles where the agent is. With ``cue_confusion=c`` the
    cue reports the true cell with probability ``1 - c`` and one of its
    in-grid neighbours (up, down, left, right) with ``c`` shared equally, so
    beliefs stay spread over a few neighbouring cells.

    Parameters
    ----------
    size : int
        Side of the grid; 10 gives 100 states, 30 gives 900.
    reward_locations : sequence of (row, col), optional
        Food cells; :func:`default_reward_locations` if omitted.
    cue_confusion : float
        Probability, in [0, 1), that the location cue names a neighbouring cell.

    Returns
    -------
    dict
        ``A``, ``B``, ``C``, ``D``.

    Examples
    --------
    >>> from fa_core import GenerativeModel, builtin_models
    >>> d = builtin_models.grid_forager(5, reward_locations=[(0, 4)])
    >>> d["A"][1][1].reshape(5, 5)[0]             # food only in the top-right corner
    array([0., 0., 0., 0., 1.])
    >>> GenerativeModel(**d).num_states
    [25]
    >>> a = builtin_models.grid_forager(5, cue_confusion=0.2)["A"][0]
    >>> a[:, 0].reshape(5, 5)[:2]                 # the corner cell's cue: itself or a neighbour
    array([[0.8, 0.1, 0. , 0. , 0. ],
           [0.1, 0. , 0. , 0. , 0. ]])
    """
    size = int(size)
    cue_confusion = float(cue_confusion)
    if not 0.0 <= cue_confusion < 1.0:
        raise ValueError(f"cue_confusion must be in [0, 1), got {cue_confusion}")
    if reward_locations is None:
        reward_locations = default_reward_locations(size)
    n = size * size
    food = np.zeros(n, dtype=bool)
    for r, c in reward_locations:
        if not (0 <= r < size and 0 <= c < size):
            raise ValueError(f"reward_locations: cell ({r}, {c}) is outside a {size}x{size} grid")
        food[r * size + c] = True

    A_rew = np.zeros((2, n))
    A_rew[1, food] = 1.0
    A_rew[0, ~food] = 1.0

    B = np.zeros((n, n, len(GRID_ACTIONS)))
    rows, cols = np.divmod(np.arange(n), size)
    for a, (dr, dc) in enumerate(GRID_ACTIONS):
        nxt = np.clip(rows + dr, 0, size - 1) * size + np.clip(cols + dc, 0, size - 1)
        B[nxt, np.arange(n), a] = 1.0

    A_loc = np.eye(n)
    if cue_confusion > 0.0:
        A_loc *= 1.0 - cue_confusion
        for s_ in range(n):
            r, c = divmod(s_, size)
            nbrs = [(r + dr) * size + (c + dc) for dr, dc in GRID_ACTIONS[1:]
                    if 0 <= r + dr < size and 0 <= c + dc < size]
            A_loc[nbrs, s_] = cue_confusion / len(nbrs)

    return {
        "A": _obj_array([A_loc, A_rew]),
        "B": _obj_array([B]),
        "C": _obj_array([np.zeros(n), np.array([0.0, 4.0])]),
        "D": _obj_array([np.full(n, 1.0 / n)]),
    }


def grid10() -> dict[str, Any]:
    """:func:`grid_forager` on a 10 x 10 grid (100 states).

    Returns
    -------
    dict
        ``A``, ``B``, ``C``, ``D``.

    Examples
    --------
    >>> from fa_core import builtin_models
    >>> builtin_models.grid10()["B"][0].shape     # 100 states, 5 moves
    (100, 100, 5)
    """
    return grid_forager(10)


def grid30() -> dict[str, Any]:
    """:func:`grid_forager` on a 30 x 30 grid (900 states).

    Returns
    -------
    dict
        ``A``, ``B``, ``C``, ``D``.

    Examples
    --------
    >>> from fa_core import builtin_models
    >>> builtin_models.grid30()["A"][0].shape
    (900, 900)
    """
    return grid_forager(30)


def grid30_confused() -> dict[str, Any]:
    """:func:`grid_forager` on a 30 x 30 grid whose location cue confuses neighbouring cells.

    ``cue_confusion=0.2``: the cue names the true cell with probability 0.8 and
    a neighbour otherwise, so beliefs spread over a handful of cells instead of
    settling on one.

    Returns
    -------
    dict
        ``A``, ``B``, ``C``, ``D``.

    Examples
    --------
    >>> from fa_core import builtin_models
    >>> a = builtin_models.grid30_confused()["A"][0]
    >>> a.shape, float(a[0, 0]), int((a[:, 31] > 0).sum())   # an inner cell: itself + 4
    ((900, 900), 0.8, 5)
    """
    return grid_forager(30, cue_confusion=0.2)


def four_factor(policy_len: int = 2, seed: int = 0) -> dict[str, Any]:
    """A dense multi-factor model that stresses policy inference.

    Four factors of 5 states; three modalities of 6 outcomes, each ``A[m]``
    depending on all four factors (shape ``(6, 5, 5, 5, 5)``, columns drawn
    from a flat Dirichlet). Factors 0 and 1 are controllable with 3 controls
    (stay, step forward, step back, cyclically); factors 2 and 3 drift on
    their own (1 control, random Dirichlet transitions). With ``policy_len=2``
    there are (3 * 3) ** 2 = 81 policies.

    Parameters
    ----------
    policy_len : int
        Returned in the dict, so ``Agent(**d)`` uses it.
    seed : int
        Seed of the random parts; the default gives the benchmark model.

    Returns
    -------
    dict
        ``A``, ``B``, ``C``, ``D``, ``control_fac_idx``, ``policy_len``.

    Examples
    --------
    >>> from fa_core import GenerativeModel, builtin_models
    >>> d = builtin_models.four_factor()
    >>> d["A"][0].shape, d["policy_len"]
    ((6, 5, 5, 5, 5), 2)
    >>> GenerativeModel(**d).num_policies
    81
    """
    rng = np.random.default_rng(seed)
    ns, no, n_mod = 5, 6, 3
    A = [np.moveaxis(rng.dirichlet(np.ones(no), size=(ns,) * 4), -1, 0) for _ in range(n_mod)]

    shift = np.stack([np.eye(ns), np.roll(np.eye(ns), 1, axis=0), np.roll(np.eye(ns), -1, axis=0)],
                     axis=-1)
    drift = [rng.dirichlet(np.ones(ns), size=ns).T[:, :, None] for _ in range(2)]
    B = [shift, shift.copy(), *drift]

    C = [rng.normal(0.0, 1.0, size=no) for _ in range(n_mod)]
    D = [np.full(ns, 1.0 / ns) for _ in range(4)]
    return {
        "A": _obj_array(A),
        "B": _obj_array(B),
        "C": _obj_array(C),
        "D": _obj_array(D),
        "control_fac_idx": [0, 1],
        "policy_len": int(policy_len),
    }


#: Builders by name, as accepted by :func:`get` and ``python -m fa_core``.
MODELS: dict[str, Callable[[], dict[str, Any]]] = {
    "tmaze": tmaze,
    "tmaze_dense": tmaze_dense,
    "grid10": grid10,
    "grid30": grid30,
    "grid30_confused": grid30_confused,
    "four_factor": four_factor,
}


def get(name: str) -> dict[str, Any]:
    """Build the model registered as ``name`` in :data:`MODELS`.

    Parameters
    ----------
    name : str
        ``"tmaze"``, ``"tmaze_dense"``, ``"grid10"``, ``"grid30"``,
        ``"grid30_confused"`` or ``"four_factor"``.

    Returns
    -------
    dict
        Fresh arrays: the caller may modify them.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`MODELS`.

    Examples
    --------
    >>> from fa_core import GenerativeModel, builtin_models
    >>> sorted(builtin_models.MODELS)
    ['four_factor', 'grid10', 'grid30', 'grid30_confused', 'tmaze', 'tmaze_dense']
    >>> GenerativeModel(**builtin_models.get("grid10"))
    GenerativeModel(num_states=[100], num_obs=[100, 2], num_controls=[5], policies=5, nbytes=...)
    """
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"name: unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return builder()
