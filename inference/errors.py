class EngineError(Exception):
    """A problem the operator or user can act on (bad setting, missing model, bad parameter)."""
