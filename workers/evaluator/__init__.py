"""The evaluator worker: events topic → rule engine → alerts topic, with state in Redis.

``alertpipe evaluator --config SOURCE`` runs it; ``alertpipe gaps --config SOURCE`` reports the
sequence gaps it recorded. ``Evaluator`` is the loop (worker.py); the engine is
``alertpipe.workers.rules``.
"""
