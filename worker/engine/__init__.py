"""Our backpropagation engine: a pure library, arrays in and arrays out (no Flask, Celery or DB).

    from worker.engine import Network, validate_spec, SpecError, SpecLimits, task_for_loss
"""
from worker.engine.network import Network
from worker.engine.spec import SpecError, SpecLimits, task_for_loss, validate_spec
from worker.engine.training import History

__all__ = ["History", "Network", "SpecError", "SpecLimits", "task_for_loss", "validate_spec"]
