"""Editable, pymdp-typed views of an agent's model parameters (copy-on-write).

pymdp users edit parameters in place: ``agent.C[1][1] = 3.0``,
``agent.D[0] = np.array([1., 0., 0.])``, ``agent.C[1] += 1``,
``np.copyto(agent.A[0], new)``. An fa_core agent's parameters live in a
shared, immutable :class:`~fa_core.model.GenerativeModel`, so reading
``agent.A`` (``C``, ``D``, ``E``, ``pA``, ``pB``, ``pD``, ``B``) hands out float64 *copies*
(pymdp's dtype) as :class:`ParamArray`. Their data is read-only at rest; every
write form numpy routes through the array (item and slice assignment, ufuncs
with ``out=`` including augmented assignment, ``np.copyto`` / ``np.put`` /
``np.place`` / ``np.putmask`` / ``np.fill_diagonal`` / ``np.put_along_axis``,
``fill`` / ``sort`` / ``partition`` / ``put``) unlocks it for that one write and
tells the owning agent, which adopts the edited arrays as its own and derives
a private model from them before its next call. Any other write (through
``np.asarray(view)``, ``.flat``, a buffer) meets the read-only data and raises,
so no edit is silently lost. The shared model is never written.

Cost: a read copies the component (float32 -> float64, once while the user
holds the result; the last few read are kept alive so a loop reading
``agent.A[0]`` copies once); the first call after an edit re-derives the
agent's model (the edited component only, interned, so agents making equal
edits share one model).
"""

from __future__ import annotations

import collections
import copy
import weakref

import numpy as np

__all__ = ["ParamArray", "EDITABLE"]

#: the agent attributes handed out as ParamArray (object arrays of them, but E)
EDITABLE = ("A", "B", "C", "D", "E", "pA", "pB", "pD")

# recently read containers stay alive, so repeated reads do not copy again
_RECENT: collections.deque = collections.deque(maxlen=8)

# numpy functions that write into their first argument
_WRITERS = frozenset({np.copyto, np.put, np.place, np.putmask, np.fill_diagonal,
                      np.put_along_axis})


class ParamArray(np.ndarray):
    """A float64 parameter array of one agent: read-only data whose writes reach the agent.

    ``_owner`` is the plain array owning the data (read-only at rest), ``_note``
    a weak reference to the agent's edit callback target and the entry it
    belongs to (``(agent_ref, name, index, root)``), or ``None`` once detached.
    """


    def __array_finalize__(self, obj):
        note = getattr(obj, "_note", None)
        owner = getattr(obj, "_owner", None)
        # a view of the same data stays attached; a copy (flatten, ...) is detached
        if note is not None and _base_of(self) is owner:
            self._note, self._owner = note, owner
        else:
            self._note, self._owner = None, None

    # -- sanctioned writes ------------------------------------------------------------

    def _writable(self) -> np.ndarray:
        """A plain, writable view of this array's data (the owner unlocked)."""
        self._owner.flags.writeable = True
        w = self.view(np.ndarray)
        w.flags.writeable = True
        return w

    def _done(self) -> None:
        self._owner.flags.writeable = False
        _notify(self._note)

    def _write(self, fn):
        if self._note is None:  # detached copy: an ordinary array
            return fn(self.view(np.ndarray))
        try:
            return fn(self._writable())
        finally:
            self._done()

    def __setitem__(self, key, value):
        if self.dtype == object:  # a container: store entries as they are
            if self._note is not None:
                value = self._entry(key, value)
            self._write(lambda w: w.__setitem__(key, value))
        else:
            self._write(lambda w: w.__setitem__(key, _plain(value)))

    def _entry(self, key, value):
        """What a container stores for ``container[key] = value``: an attached float64 copy."""
        agent, name = self._note[0](), self._note[1]
        if not isinstance(key, (int, np.integer)) or agent is None:
            return value
        if isinstance(value, ParamArray) and value._note is not None and \
                value._note[0]() is agent and value._note[1:3] == (name, int(key)):
            return value  # ``agent.C[1] += 1`` stores the edited entry back
        return _attach(np.array(_plain(value), dtype=np.float64), agent, name, int(key))

    def fill(self, value):
        self._write(lambda w: w.fill(value))

    def sort(self, *args, **kwargs):
        self._write(lambda w: w.sort(*args, **kwargs))

    def partition(self, *args, **kwargs):
        self._write(lambda w: w.partition(*args, **kwargs))

    def put(self, *args, **kwargs):
        self._write(lambda w: w.put(*args, **kwargs))

    def resize(self, *args, **kwargs):
        raise ValueError("cannot resize a parameter array of an fa_core agent; assign a new "
                         "array to the attribute instead")

    # -- results are plain arrays ----------------------------------------------------

    def copy(self, order="C"):
        return self.view(np.ndarray).copy(order)

    def astype(self, *args, **kwargs):
        return self.view(np.ndarray).astype(*args, **kwargs)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        if self.dtype != object:
            return self.copy()
        out = np.empty(self.shape, dtype=object)  # plain, with plain copies of the entries
        for i, x in enumerate(self.view(np.ndarray).ravel()):
            out.reshape(-1)[i] = copy.deepcopy(x, memo)
        return out

    def __reduce__(self):
        return self.copy().__reduce__()

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        inputs = tuple(_plain(x) for x in inputs)
        if out is None:
            return getattr(ufunc, method)(*inputs, **kwargs)
        targets = [o for o in out if isinstance(o, ParamArray) and o._note is not None]
        outs = tuple(o._writable() if o in targets else _plain(o) for o in out)
        try:
            result = getattr(ufunc, method)(*inputs, out=outs, **kwargs)
        finally:
            for o in targets:
                o._done()
        # in-place operators return their target: give the user's array back
        if len(out) == 1 and method == "__call__":
            return out[0]
        return result

    def __array_function__(self, func, types, args, kwargs):
        target = None
        if func in _WRITERS and args and isinstance(args[0], ParamArray):
            target = args[0]
        elif isinstance(kwargs.get("out"), ParamArray):
            target = kwargs["out"]
        if target is not None and target._note is not None:
            try:
                w = target._writable()
                args = tuple(w if a is target else _plain(a) for a in args)
                kwargs = {k: (w if v is target else _plain(v)) for k, v in kwargs.items()}
                func(*args, **kwargs)
            finally:
                target._done()
            return target if kwargs.get("out") is target else None
        return func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()})


def _base_of(a: np.ndarray):
    while isinstance(a, np.ndarray) and a.base is not None and isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _plain(x):
    """ParamArrays (also inside lists, tuples and object arrays) as plain ndarray views.

    An object array (pymdp's list of per-factor arrays) gets a new object array of plain
    elements: numpy functions given one iterate its elements, and ParamArray elements
    would dispatch back here with the same arguments, for ever.
    """
    if isinstance(x, np.ndarray) and x.dtype == object:
        out = np.empty(x.shape, dtype=object)
        for i, v in enumerate(x.flat):
            out.flat[i] = _plain(v)
        return out
    if isinstance(x, ParamArray):
        return x.view(np.ndarray)
    if type(x) in (list, tuple):
        return type(x)(_plain(v) for v in x)
    return x


def _notify(note) -> None:
    agent = note[0]()
    if agent is not None:
        agent._param_written(note[1], note[2], note[3])


def _attach(values: np.ndarray, agent, name: str, index) -> ParamArray:
    """``values`` (a new float64 array) as a read-only ParamArray reporting writes to ``agent``."""
    values.flags.writeable = False
    p = values.view(ParamArray)
    p._owner = values
    p._note = (weakref.ref(agent), name, index, p)
    return p


def param_view(agent, name: str, arrays):
    """A new editable float64 copy of ``arrays`` (one component of ``agent``'s model).

    Returns an object array of ParamArray (a single ParamArray for ``E``), or
    ``None`` when the model has no such component.
    """
    if arrays is None:
        return None
    if isinstance(arrays, np.ndarray) and arrays.dtype != object:  # E, q_pi, G
        out = _attach(np.array(arrays, dtype=np.float64), agent, name, None)
    else:
        items = np.empty(len(arrays), dtype=object)
        for i, a in enumerate(arrays):
            items[i] = _attach(np.array(a, dtype=np.float64), agent, name, i)
        out = _attach(items, agent, name, None)
    _RECENT.append(out)
    return out


def put_entry(container: ParamArray, index: int, entry: ParamArray) -> None:
    """``container[index] = entry`` without reporting it (the agent is adopting ``entry``)."""
    owner = container._owner
    owner.flags.writeable = True
    try:
        owner[index] = entry
    finally:
        owner.flags.writeable = False

def component_values(name: str, view) -> list[np.ndarray] | np.ndarray:
    """The plain arrays of an edited component, for building a model from them."""
    if name == "E":
        return _plain(view)
    if not isinstance(view, np.ndarray) or view.dtype != object:
        raise TypeError(f"agent.{name} must stay an object array of arrays; assign a new "
                        f"one to agent.{name} instead")
    return [np.asarray(_plain(v)) for v in view]
