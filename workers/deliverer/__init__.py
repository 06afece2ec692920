"""The deliverer worker: alerts topic → webhook, Slack, PagerDuty, email; never lost, never doubled."""
