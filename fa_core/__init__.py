"""fa_core: compiled float32 active-inference agents, a drop-in for pymdp's numpy Agent."""

from fa_core.agent import Agent
from fa_core.model import GenerativeModel
from fa_core.population import Population

__version__ = "0.1.0"

__all__ = ["Agent", "GenerativeModel", "Population", "__version__"]
