import logging


class TurnDefaults(logging.Filter):
    """Give every record a `turn` field (the turn id that follows a reply from the socket through
    the queue to the worker and back), so one log format serves records with and without one."""

    def filter(self, record):
        if not hasattr(record, "turn"):
            record.turn = "-"
        return True
