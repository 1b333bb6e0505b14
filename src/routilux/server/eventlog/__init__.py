"""Every job's events, for replay and history: recorded off the hot path, held, and read back.

- :mod:`.recorder`: the bus subscriber that writes events and job records to the store.
- :mod:`.history`: the newest events of each job, in memory (bounded).
- :mod:`.reader`: :class:`EventLog`, the ONE reader of "a job's events after seq N" that REST
  (``/events``, ``/trace``, ``/logs``), WebSocket replay and the replay of another server's job
  all use.
"""

from routilux.server.eventlog.history import EventHistory
from routilux.server.eventlog.reader import EventLog, EventRange
from routilux.server.eventlog.recorder import Recorder

__all__ = ["EventHistory", "EventLog", "EventRange", "Recorder"]
