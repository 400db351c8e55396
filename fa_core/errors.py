"""Exceptions fa_core raises on its own account."""

from __future__ import annotations

__all__ = ["CorruptStateError", "LayoutMismatchError", "ModelMismatchError",
           "UnflushedStateError"]


class CorruptStateError(ValueError):
    """Bytes or restored state that fa_core refuses to wake.

    Raised by :func:`fa_core.lifecycle.wake`, :meth:`fa_core.Population.wake`,
    unpickling and checkpoint restores when a blob fails its integrity checks
    (magic, version, length, checksum) or holds a value outside what the model
    allows (an action index beyond ``num_controls``, beliefs of the wrong shape,
    a negative time step, ...). The message says "corrupt or truncated" and
    what failed. Nothing is built when it is raised.

    Examples
    --------
    >>> from fa_core import Agent, CorruptStateError, builtin_models
    >>> agent = Agent(**builtin_models.tmaze(), seed=0)
    >>> blob = bytearray(agent.hibernate())
    >>> blob[-1] ^= 1                             # one flipped bit
    >>> try:
    ...     Agent.wake(bytes(blob))
    ... except CorruptStateError as err:
    ...     print(str(err).split(":")[0], isinstance(err, ValueError))
    corrupt or truncated hibernated agent True
    """


class UnflushedStateError(CorruptStateError):
    """A population state file written after its last ``flush()`` and not flushed again.

    Its DIRTY flag is set (the process was killed mid-run, or ended without
    ``pop.flush()``): rows may mix two states and the last flushed state is no
    longer on disk, so :meth:`fa_core.Population.open` refuses it
    (:mod:`fa_core.storage`).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fa_core import GenerativeModel, Population, builtin_models
    >>> from fa_core.errors import UnflushedStateError
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> path = os.path.join(tempfile.mkdtemp(), "pop.fap")
    >>> pop = Population(gm, 4, seed=0, storage=path)
    >>> _ = pop.step(np.array([[0, 0, 1]] * 4))   # written, never flushed
    >>> pop.close()
    >>> try:
    ...     Population.open(path, gm)
    ... except UnflushedStateError as err:
    ...     print(isinstance(err, CorruptStateError))
    True
    """


class ModelMismatchError(ValueError):
    """A saved population opened with another model than the one it was written with
    (the content keys differ).

    Examples
    --------
    >>> import os, tempfile
    >>> from fa_core import GenerativeModel, Population, builtin_models
    >>> from fa_core.errors import ModelMismatchError
    >>> path = os.path.join(tempfile.mkdtemp(), "pop.fap")
    >>> Population(GenerativeModel(**builtin_models.tmaze()), 4).save(path)
    >>> other = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
    >>> try:
    ...     Population.load(path, other)
    ... except ModelMismatchError:
    ...     print("another model")
    another model
    """


class LayoutMismatchError(ValueError):
    """A population state file whose arrays (names, shapes, dtypes) differ from what the
    model and the file's options need: written by another fa_core version or engine.

    Examples
    --------
    >>> from fa_core.errors import LayoutMismatchError
    >>> issubclass(LayoutMismatchError, ValueError)   # caught as a ValueError too
    True
    """
