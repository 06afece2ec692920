"""Integration tests of the deliverer (real Kafka/Redis, local receivers)."""
