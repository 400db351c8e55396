"""fa_core.jax: pymdp 1.0's JAX ``Agent`` API on fa_core's compiled kernels.

Needs the optional ``jax`` extra (``pip install "fa_core[jax]"``); ``import
fa_core`` never imports jax.
"""

from fa_core.jax.agent import SUPPORTED_ALGOS, Agent, NotDifferentiableError
from fa_core.jax.host import ModelEvictedError
from fa_core.jax.policies import Policies

__all__ = ["Agent", "ModelEvictedError", "NotDifferentiableError", "Policies", "SUPPORTED_ALGOS"]
