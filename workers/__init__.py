"""alertpipe's data plane: ingestor, evaluator, deliverer, and what they share.

Shared pieces: ``config`` (the contract with the operator), ``rules`` (the pure rule engine),
``events`` (event codec), ``alerts`` (alert message), ``errors`` (exception tree).
"""
