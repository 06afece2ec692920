"""Local receivers that speak the shapes of the real services, for tests, e2e runs, benchmarks and the demo.

- ``start_http_receiver()``: one aiohttp server with a generic webhook (``/webhook/<name>``, checks
  ``X-Alertpipe-Signature`` when given the secret), a Slack incoming webhook (``/slack/<token>``,
  answers like Slack: ``ok`` / ``invalid_payload`` / ``no_service``) and the PagerDuty Events API v2
  (``/pagerduty/v2/enqueue``, 202 ``{"status": "success", ...}`` / 400 ``invalid event``).
  Faults are scripted per path prefix: ``receiver.script("/webhook/a", [Reply(500), Reply(429,
  retry_after=1)])`` or ``receiver.set_default("/webhook/a", Reply(503))``; ``receiver.down()``
  closes the listener (connection refused).
- ``start_smtp_receiver()``: aiosmtpd on loopback, optional AUTH (LOGIN/PLAIN), records messages.
- ``Recorder``: every request/message seen, counts by Idempotency-Key, ``wait_until`` helper.
"""

from tests.receivers.http import HttpReceiver, Reply, start_http_receiver
from tests.receivers.recorder import Received, Recorder, wait_until
from tests.receivers.smtp import SmtpReceiver, start_smtp_receiver

__all__ = [
    "HttpReceiver",
    "Received",
    "Recorder",
    "Reply",
    "SmtpReceiver",
    "start_http_receiver",
    "start_smtp_receiver",
    "wait_until",
]
