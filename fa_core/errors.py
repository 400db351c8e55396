"""Exceptions fa_core raises on its own account."""

from __future__ import annotations

__all__ = ["CorruptStateError"]


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
