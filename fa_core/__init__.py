"""fa_core: compiled float32 active-inference agents, a drop-in for pymdp's numpy Agent."""

from fa_core.agent import Agent
from fa_core.errors import CorruptStateError
from fa_core.model import GenerativeModel
from fa_core.population import Population
from fa_core.pool import AgentPool
from fa_core.memory import MemoryReport, memory_report, memory_report_many

__version__ = "0.1.0"

__all__ = ["Agent", "AgentPool", "CorruptStateError", "GenerativeModel", "MemoryReport",
           "Population", "memory_report", "memory_report_many", "__version__"]
