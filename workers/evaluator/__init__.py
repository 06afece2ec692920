"""The evaluator worker: events topic → rule engine → alerts topic, with state in Redis."""
