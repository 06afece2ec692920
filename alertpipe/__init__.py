"""alertpipe: a Kubernetes operator that runs per-tenant real-time alert pipelines on Kafka and Redis."""

__version__ = "0.1.0"
