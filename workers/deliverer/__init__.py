"""The deliverer worker: alerts topic → webhook, Slack, PagerDuty, email; never lost, never doubled.

``Deliverer(source, secret, settings)`` runs it (``await deliverer.run(stop)``); ``alertpipe
deliverer --config SOURCE`` is its command, ``alertpipe dlq`` and ``alertpipe explain`` read what it
wrote. Its Kafka and Redis come through ``backends.Backends`` (in-memory ones in unit tests).
"""

from alertpipe.workers.deliverer.settings import DelivererSettings
from alertpipe.workers.deliverer.worker import Deliverer

__all__ = ["Deliverer", "DelivererSettings"]
