"""Agent lifecycle: pickling, hibernation to compact bytes, and a pool under a memory budget.

Three ways to put an :class:`~fa_core.agent.Agent` away:

* ``pickle``: self-contained and exact. The agent's model is pickled by
  reference, so a pickle of many agents sharing one model stores it once, and
  unpickling it where an equal model is alive reuses that model (see
  :meth:`GenerativeModel.content_key <fa_core.model.GenerativeModel.content_key>`).
  :func:`dumps` / :func:`loads` go further and leave models out of the pickle.
  Unpickled agents are checked (:func:`fa_core.restore_checks.check_agent`),
  but as with any pickle, unpickling untrusted data can run arbitrary code.
* :func:`hibernate` / :func:`wake`: a compact blob holding only what the agent
  owns (beliefs, policy posterior, expected free energies, action, action
  history, time step, options that differ from the defaults, RNG state) and
  the model's content key. Exact by default; opt-in lossy compression of beliefs.
  The blob is checked (length, version, CRC-32) and pickle-free (see
  :mod:`fa_core.blobformat`): waking bytes from elsewhere never runs code and
  raises :class:`~fa_core.errors.CorruptStateError` for anything malformed.
* :class:`~fa_core.pool.AgentPool` (in :mod:`fa_core.pool`, re-exported here):
  agents by id with at most a budget of them awake; the least recently used
  are hibernated (in RAM or spilled to a file) and woken again on access.
"""

from __future__ import annotations

# an agent's own state (pickling, hibernate / wake) lives in fa_core.agent_state,
# which fa_core.agent imports; re-exported here, where it has always been
from fa_core.agent_state import (FLOAT16_ABS_ERROR, FLOAT16_REL_ERROR, _FIXED,  # noqa: F401
                                 _check_hibernatable, _decode_floats, _lossy_check,
                                 agent_getstate, agent_setstate, blob_model_key, dumps,
                                 hibernate, loads, wake)
from fa_core.pool import AgentPool

__all__ = ["hibernate", "wake", "blob_model_key", "dumps", "loads", "AgentPool",
           "FLOAT16_REL_ERROR", "FLOAT16_ABS_ERROR"]

