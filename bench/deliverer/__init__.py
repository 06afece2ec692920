"""Deliverer benchmarks (webhooks/s, latency, isolation with one failing receiver)."""
