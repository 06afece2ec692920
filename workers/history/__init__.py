"""The notification history: the deliverer's decision log kept in PostgreSQL, and the questions it
answers ("why was — or wasn't — I paged for X"). See docs/history.md."""

from alertpipe.workers.history.sink import HistorySink, SinkSettings
from alertpipe.workers.history.store import Outcome, Source, alert_entries, outcomes, write

__all__ = ["HistorySink", "Outcome", "SinkSettings", "Source", "alert_entries", "outcomes", "write"]
