"""Shared fixtures: the reference agent, the agent under test, and RNG hygiene.

Set ``FA_CORE_TEST_SUBJECT=pymdp`` to run the parity tests with pymdp's own
Agent as the subject. Every parity assertion must then hold trivially, which
checks the harness itself (observation feeding, tie handling, comparisons)
independently of fa_core.
"""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _restore_global_numpy_rng():
    """Tests seed the global ``np.random`` (pymdp's only RNG); undo it afterwards."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.fixture(scope="session")
def RefAgent():
    """pymdp's numpy Agent, the reference implementation."""
    agent_mod = pytest.importorskip("pymdp.legacy.agent")
    return agent_mod.Agent


@pytest.fixture(scope="session")
def FaAgent():
    """The agent under test: ``fa_core.Agent`` unless the harness self-check is requested."""
    if os.environ.get("FA_CORE_TEST_SUBJECT") == "pymdp":
        return pytest.importorskip("pymdp.legacy.agent").Agent
    import fa_core

    return fa_core.Agent

