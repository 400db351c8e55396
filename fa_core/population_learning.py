"""Per-agent Dirichlet counts of a :class:`fa_core.Population` (``pop.update_A/B/D``).

Storage
-------
Nothing is stored until a component is first learned: until then every agent
reads the shared model. The first ``update_A`` (``update_B``, ``update_D``)
gives each learned matrix (modality in ``modalities_to_learn``; every control
slice of a factor in ``factors_to_learn``; ``D``) one row per agent, in the
*pattern* of the shared model's kernel matrix: its CSC positions when the
matrix is stored sparse, every entry when dense. A row holds the agent's
counts (float64, as pymdp) and what the kernels read, derived from them: the
normalised values (float32), their log cache when the model keeps one, the
parameter information-gain weights (spm_wnorm, only once the population uses
``use_param_info_gain``: until then the kernels never read them, and on grid30
they are a third of an agent's learned rows) and, for ``A``, the column
entropies; ``D``'s rows hold ``log D``. Learning never creates non-zeros
(pymdp masks its update with ``A > 0``), so a row keeps its pattern for good.

Each agent that has learned has a private :class:`fa_core._kernels.KModel`
(``KModel.with_changes``: it shares every unlearned matrix with the shared
model and points the learned ones at the agent's rows, no copy); the driver
reads it through an agent-indexed table of C struct addresses (0: the shared
model). An update runs in place over every agent in one ``nogil`` call
(:func:`fa_core._learning.population_learn`): no model is rebuilt per step,
only when an agent first learns a component or its rows move (growth,
removal).
"""

from __future__ import annotations

import numpy as np

from fa_core import _learning
from fa_core.model import GenerativeModel

_PARAM = {"A": "pA", "B": "pB", "D": "pD"}
_ROWS = ("counts", "val", "logval", "wval", "col_H")  # an entry's per-agent arrays


def learn_indices(which, n: int, name: str) -> tuple[int, ...]:
    """``"all"`` or a list of indices, checked against ``n``, as a tuple."""
    if isinstance(which, str):
        if which != "all":
            raise ValueError(f"{name} must be 'all' or a list of indices, got {which!r}")
        return tuple(range(n))
    try:
        idx = [int(i) for i in which]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be 'all' or a list of indices, got {which!r}") from None
    if any(not isinstance(i, (int, np.integer)) or isinstance(i, bool) for i in which):
        raise TypeError(f"{name} must hold integers, got {which!r}")
    if any(i < 0 or i >= n for i in idx):
        raise ValueError(f"{name} contains an index outside 0..{n - 1}")
    return tuple(dict.fromkeys(idx))


class LearnedParams:
    """The learned rows of one population (see the module docstring).

    Parameters
    ----------
    model : GenerativeModel
        The population's shared model.
    capacity : int
        Rows to hold (the population's storage capacity).
    weights : bool
        Keep the parameter information-gain weight rows from the start (the
        population uses ``use_param_info_gain``); otherwise :meth:`use_weights`
        adds them when it first does.
    """

    def __init__(self, model: GenerativeModel, capacity: int, weights: bool = False):
        self.model = model
        self.capacity = capacity
        self.weights = bool(weights)               # wval rows are kept (see use_weights)
        self.entries: dict[tuple, dict] = {}      # ("A", m) / ("B", f, u) / ("D", f) -> rows
        self.own = np.zeros(capacity, np.uint8)   # the agent reads its own model
        self.addr = np.zeros(capacity, np.uintp)  # its KModel's C struct, or 0
        self.kmodels: list = [None] * capacity
        self.D_rows: dict | None = None           # counts / log D of every factor, (cap, S)

    # -- storage -----------------------------------------------------------------------

    def _model_counts(self, key: tuple) -> np.ndarray:
        """The shared model's counts of one matrix in its pattern (float64)."""
        m = self.model
        if key[0] == "D":
            return np.concatenate(m.exact("pD")).astype(np.float64)
        if key[0] == "A":
            like, p2 = m._A_specs[key[1]], m._pA[key[1]].reshape(m.num_obs[key[1]], -1)
        else:
            f, u = key[1], key[2]
            like, p2 = m._B_specs[f][u], m._pB[f][..., u].reshape(m.num_states[f], -1)
        if not like.sparse:
            return np.ascontiguousarray(p2, dtype=np.float64).ravel()
        counts = p2[like.idx, np.repeat(np.arange(like.cols), np.diff(like.indptr))]
        if np.count_nonzero(counts) != np.count_nonzero(p2):
            name = f"{_PARAM[key[0]]}[{key[1]}]"
            raise ValueError(f"{name} has counts where the model's {key[0]} is zero: a "
                             f"population learns within {key[0]}'s sparsity pattern (build "
                             f"the model with {key[0]} normalised from the counts)")
        return counts.astype(np.float64)

    def _new_entry(self, key: tuple) -> dict:
        """Rows of one matrix for every agent, holding the shared model's counts."""
        m, cap = self.model, self.capacity
        counts = self._model_counts(key)
        if key[0] == "D":
            if self.D_rows is None:
                self.D_rows = {"counts": np.tile(counts, (cap, 1)),
                               "val": np.empty((cap, counts.size), np.float32)}
            f = key[1]
            return {"kind": "D", "rows": 1, "cols": m.num_states[f], "indptr": None,
                    "idx": None, "dep": np.zeros(1, np.int32), "index": f, "control": -1,
                    "counts": self.D_rows["counts"], "val": self.D_rows["val"]}
        if key[0] == "A":
            mm = key[1]
            like = m._A_specs[mm]
            mat, wmat = int(m._kernel_layout.a_mat[mm]), int(m._kernel_layout.wa_mat[mm])
            dep, index, control = m.A_factor_list[mm], mm, -1
        else:
            f, u = key[1], key[2]
            like = m._B_specs[f][u]
            mat, wmat = int(m._kernel_layout.b_mat[f]) + u, int(m._kernel_layout.wb_mat[f])
            wmat = wmat + u if wmat >= 0 else -1
            dep, index, control = m.B_factor_list[f], f, u
        n = counts.size

        def rows(width=n):
            return np.empty((cap, width), np.float32)

        return {"kind": key[0], "rows": like.rows, "cols": like.cols,
                "indptr": like.indptr, "idx": like.idx,
                "dep": np.asarray(dep, np.int32), "index": index, "control": control,
                "mat": mat, "wmat": wmat, "like": like,
                "counts": np.tile(counts, (cap, 1)), "val": rows(),
                "logval": None if like.logval is None else rows(),
                "wval": None if wmat < 0 or not self.weights else rows(),
                "col_H": rows(like.cols) if key[0] == "A" else None}

    def _derive(self, rows: slice) -> None:
        """Recompute the values of rows ``rows`` of every entry from their counts.

        Every row's values come from this one kernel pass over its counts (never
        from the shared model's arrays), so a restored population is exact.
        """
        k = len(range(*rows.indices(self.capacity)))
        if not k or not self.entries:
            return
        m = self.model
        for kind, code in (("A", 0), ("B", 1), ("D", 2)):
            ents = [e for key, e in self.entries.items() if key[0] == kind]
            if not ents:
                continue
            sliced = [{name: (v[rows] if name in _ROWS and v is not None else v)
                       for name, v in e.items()} for e in ents]
            _learning.population_learn(code, sliced, np.zeros((k, 1), np.float32), None, None,
                                       None, 0.0, m._kernel_layout.s_off,
                                       m._kernel_layout.ns,
                                       self.scratch(ents, 1, None), 1, False)

    def ensure(self, keys) -> list[dict]:
        """The entries of ``keys``, created (for every row) where missing.

        Raises ValueError (and creates nothing) if the model's counts do not fit
        the pattern.
        """
        new = {k: self._new_entry(k) for k in keys if k not in self.entries}
        if new:
            self.entries.update(new)
            self._derive(slice(0, self.capacity))
            for i in np.nonzero(self.own)[0]:  # their models must point at the new rows too
                self._own_model(int(i))
        return [self.entries[k] for k in keys]

    def resize(self, capacity: int, n: int) -> None:
        """Hold ``capacity`` rows, keeping the first ``n`` (models of moved rows rebuilt)."""
        def grow(a):
            new = np.empty((capacity,) + a.shape[1:], a.dtype)
            new[:min(n, capacity)] = a[:min(n, capacity)]
            return new

        if self.D_rows is not None:
            self.D_rows = {k: grow(v) for k, v in self.D_rows.items()}
        for key, e in self.entries.items():
            for name in _ROWS:
                if key[0] == "D" and name in ("counts", "val"):
                    e[name] = self.D_rows[name]
                elif e.get(name) is not None:
                    e[name] = grow(e[name])
        own = self.own
        self.own = np.zeros(capacity, np.uint8)
        self.addr = np.zeros(capacity, np.uintp)
        self.kmodels = [None] * capacity
        self.capacity = capacity
        if capacity > n:
            self.fresh(slice(n, capacity))
        for i in np.nonzero(own[:n])[0]:  # the arrays moved: rebuild the models
            self._own_model(int(i))

    def fresh(self, rows: slice) -> None:
        """Rows ``rows`` (new agents) back to the shared model's counts; they read the
        shared model until they learn."""
        for key, e in self.entries.items():
            if key[0] != "D":
                e["counts"][rows] = self._model_counts(key)
        if self.D_rows is not None:
            self.D_rows["counts"][rows] = self._model_counts(("D",))
        self._derive(rows)
        for i in range(*rows.indices(self.capacity)):
            self.own[i] = 0
            self.addr[i] = 0
            self.kmodels[i] = None

    @classmethod
    def restored(cls, model: GenerativeModel, capacity: int, n: int, state: dict,
                 mods, facs) -> LearnedParams:
        """The store ``state`` (from :meth:`state`, checked by :func:`check_learned_state`)
        describes, for ``n`` agents."""
        lp = cls(model, capacity)
        keys = [("A", int(k)) for k in state["A"]]
        keys += [("B",) + tuple(int(x) for x in k.split(",")) for k in state["B"]]
        if state["D"] is not None:
            keys += [("D", int(f)) for f in state["D"]["factors"]]
        lp.ensure(keys)
        for k, v in state["A"].items():
            lp.entries[("A", int(k))]["counts"][:n] = v
        for k, v in state["B"].items():
            lp.entries[("B",) + tuple(int(x) for x in k.split(","))]["counts"][:n] = v
        if state["D"] is not None:
            lp.D_rows["counts"][:n] = state["D"]["counts"]
        lp._derive(slice(0, n))
        for i in np.nonzero(state["own"])[0]:
            lp._own_model(int(i))
        return lp

    def move(self, src: int, dst: int) -> None:
        """Row ``src`` into row ``dst`` (Population.remove)."""
        arrays = [e[name] for key, e in self.entries.items() if key[0] != "D"
                  for name in _ROWS if e.get(name) is not None]
        if self.D_rows is not None:
            arrays += list(self.D_rows.values())
        for a in arrays:
            a[dst] = a[src]
        self.own[dst] = 0
        self.addr[dst] = 0
        self.kmodels[dst] = None
        if self.own[src]:
            self._own_model(dst)

    def drop(self, rows) -> None:
        """Rows ``rows`` hold no agent any more (Population.remove): free their models."""
        for i in rows:
            self.own[i] = 0
            self.addr[i] = 0
            self.kmodels[i] = None

    def _own_model(self, i: int) -> None:
        """Agent ``i``'s KModel: the shared one with its learned matrices at its rows."""
        mats, a_H, logD = {}, {}, None
        for key, e in self.entries.items():
            if key[0] == "D":
                logD = self.D_rows["val"][i]
                continue
            mats[e["mat"]] = e["like"].with_values(
                e["val"][i], None if e["logval"] is None else e["logval"][i])
            # without weight rows the agent's model keeps the shared weights, which the
            # kernels do not read (use_param_info_gain off; use_weights adds the rows)
            if e["wval"] is not None:
                mats[e["wmat"]] = e["like"].with_values(e["wval"][i])
            if e["col_H"] is not None:
                a_H[e["index"]] = e["col_H"][i]
        km = self.model.kmodel.with_changes(mats, a_H, logD)
        self.kmodels[i] = km
        self.addr[i] = km._c_address
        self.own[i] = 1

    def use_weights(self) -> None:
        """Keep the parameter information-gain weight rows from now on (the population
        turned ``use_param_info_gain`` on): every row's weights are derived from its
        counts and the agents' models point at them."""
        if self.weights:
            return
        self.weights = True
        for key, e in self.entries.items():
            if key[0] != "D" and e["wmat"] >= 0:
                e["wval"] = np.empty((self.capacity, e["counts"].shape[1]), np.float32)
        self._derive(slice(0, self.capacity))
        for i in np.nonzero(self.own)[0]:
            self._own_model(int(i))

    def adopt(self, n: int, row: int | None = None) -> None:
        """Every one of the first ``n`` agents (or agent ``row``) reads its own rows (after
        a learning call)."""
        if row is not None:
            if not self.own[row]:
                self._own_model(row)
            return
        for i in np.nonzero(self.own[:n] == 0)[0]:
            self._own_model(int(i))

    # -- reading -----------------------------------------------------------------------

    def table(self, n: int):
        """The driver's per-agent model table, or None when no agent has its own model."""
        return self.addr[:n] if self.own[:n].any() else None

    @property
    def nbytes(self) -> int:
        """Bytes of the learned rows (every agent's share of them)."""
        arrays = [e[name] for key, e in self.entries.items() if key[0] != "D"
                  for name in _ROWS if e.get(name) is not None]
        if self.D_rows is not None:
            arrays += list(self.D_rows.values())
        return int(sum(a.nbytes for a in arrays))

    def agent_counts(self, i: int) -> dict:
        """Agent ``i``'s counts in pymdp's layout: {"pA": [...], "pB": [...], "pD": [...]}
        for the components it learned (the others are the shared model's)."""
        m = self.model
        out: dict = {}
        for key, e in self.entries.items():
            if key[0] == "D":
                continue
            if key[0] == "A":
                lst = out.setdefault("pA", [np.array(p) for p in m._pA])
                mm = key[1]
                p2 = lst[mm].reshape(m.num_obs[mm], -1)
            else:
                lst = out.setdefault("pB", [np.array(p) for p in m._pB])
                f, u = key[1], key[2]
                p2 = lst[f][..., u].reshape(m.num_states[f], -1)
                p2 = np.ascontiguousarray(p2)
            row = e["counts"][i]
            if e["indptr"] is not None:
                cols_of = np.repeat(np.arange(e["cols"]), np.diff(e["indptr"]))
                p2[...] = 0.0
                p2[e["idx"], cols_of] = row
            else:
                p2[...] = row.reshape(p2.shape)
            if key[0] == "B":
                lst[f][..., u] = p2.reshape(lst[f][..., u].shape)
        if self.D_rows is not None:
            c = self.D_rows["counts"][i]
            out["pD"] = [c[lo:hi].copy() for lo, hi in m.state_bounds]
        return out

    def agent_model(self, i: int) -> GenerativeModel:
        """Agent ``i``'s parameters as a GenerativeModel (built on request: dense pA / pB)."""
        if not self.own[i]:
            return self.model
        counts = self.agent_counts(i)
        m = self.model
        if "pA" in counts or "pB" in counts:
            m = m.with_counts(pA=counts.get("pA"), pB=counts.get("pB"))
        if "pD" in counts:
            m = m.replace(pD=counts["pD"], D=[d / d.sum() for d in counts["pD"]])
        return m

    # -- learning ----------------------------------------------------------------------

    def scratch(self, entries: list[dict], threads: int, current) -> np.ndarray:
        """Per-thread work space of the learning kernel (reused between calls)."""
        width = max([5 * e["cols"] + e["rows"] for e in entries] + [1])
        if current is None or current.shape[0] < threads or current.shape[1] < width:
            current = np.empty((threads, width), np.float64)
        return current

    def state(self, n: int) -> dict | None:
        """The learned counts of the first ``n`` agents as plain values (hibernate, pickle);
        the values derived from them are recomputed on restoring."""
        if not self.entries:
            return None
        state: dict = {"own": self.own[:n].copy(), "A": {}, "B": {}, "D": None}
        for key, e in self.entries.items():
            if key[0] == "A":
                state["A"][str(key[1])] = e["counts"][:n].copy()
            elif key[0] == "B":
                state["B"][f"{key[1]},{key[2]}"] = e["counts"][:n].copy()
        if self.D_rows is not None:
            state["D"] = {"factors": [int(k[1]) for k in self.entries if k[0] == "D"],
                          "counts": self.D_rows["counts"][:n].copy()}
        return state


def _pattern_sizes(model: GenerativeModel, kind: str, i: int, u: int = 0):
    """(values per agent, rows, cols, indptr or None) of one learned matrix's pattern."""
    spec = model._A_specs[i] if kind == "A" else model._B_specs[i][u]
    return spec.val.size, spec.rows, spec.cols, spec.indptr


def check_learned_state(learned, model: GenerativeModel, n: int, mods, facs,
                        what: str) -> None:
    """Refuse learned counts (``LearnedParams.state`` form) a kernel could not run on:
    wrong keys, shapes or dtypes, counts negative or not finite, or a learning agent
    with a column of zero counts (its distribution would be undefined)."""
    from fa_core.restore_checks import fail
    if learned is None:
        return
    if type(learned) is not dict or set(learned) != {"own", "A", "B", "D"}:
        fail(what, "its learned counts are not a mapping of own, A, B and D")
    own = learned["own"]
    if type(own) is not np.ndarray or own.dtype != np.uint8 or own.shape != (n,) or \
            (own > 1).any():
        fail(what, f"learned own flags must be a uint8 0/1 array of shape ({n},)")
    mine = own.astype(bool)

    def counts_ok(name, c, shape):
        if type(c) is not np.ndarray or c.dtype != np.float64 or c.shape != shape:
            fail(what, f"learned {name} must be a float64 array of shape {shape}")
        if not np.isfinite(c).all() or (c < 0).any():
            fail(what, f"learned {name} must be finite and non-negative")

    def columns_ok(name, c, rows, cols, indptr):
        if not mine.any():
            return
        c = c[mine]
        sums = (np.add.reduceat(c, indptr[:-1], axis=1) if indptr is not None
                else c.reshape(len(c), rows, cols).sum(axis=1))
        if (sums <= 0).any():
            fail(what, f"learned {name} has a column of zero counts")

    for kind, table, allowed in (("A", learned["A"], mods), ("B", learned["B"], facs)):
        if type(table) is not dict:
            fail(what, f"learned {kind} counts are not a mapping")
        if table and not (model.has_pA if kind == "A" else model.has_pB):
            fail(what, f"it holds learned p{kind} but the model has no p{kind}")
        for key, c in table.items():
            try:
                idx = [int(x) for x in key.split(",")] if type(key) is str else None
            except ValueError:
                idx = None
            ok = idx is not None and len(idx) == (1 if kind == "A" else 2) and idx[0] in allowed
            if ok and kind == "B":
                ok = 0 <= idx[1] < model.num_controls[idx[0]]
            if not ok:
                fail(what, f"learned p{kind} key {key!r} names no learned matrix")
            size, rows, cols, indptr = _pattern_sizes(model, kind, *idx)
            name = f"p{kind}[{key}]"
            counts_ok(name, c, (n, size))
            columns_ok(name, c, rows, cols, indptr)
    D = learned["D"]
    if D is not None:
        if type(D) is not dict or set(D) != {"factors", "counts"} or model.pD is None:
            fail(what, "its learned pD is not factors and counts of a model with pD")
        fs = D["factors"]
        if type(fs) is not list or any(type(f) is not int or f not in facs for f in fs):
            fail(what, "learned pD factors must be factors_to_learn")
        S = sum(model.num_states)
        counts_ok("pD", D["counts"], (n, S))
        sums = np.add.reduceat(D["counts"][mine], [lo for lo, _ in model.state_bounds], axis=1)
        if (sums <= 0).any():
            fail(what, "learned pD has a factor of zero counts")
