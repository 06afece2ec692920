"""HTTP ingest: POST /v1/events → the pipeline's events topic, answered 202 once Kafka acknowledged."""

from alertpipe.workers.ingestor.app import Ingestor, IngestorSettings, KeySource
from alertpipe.workers.ingestor.body import INGEST_TS_FIELD
from alertpipe.workers.ingestor.keys import KeyRing

__all__ = ["INGEST_TS_FIELD", "Ingestor", "IngestorSettings", "KeyRing", "KeySource"]
