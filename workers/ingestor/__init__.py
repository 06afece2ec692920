"""HTTP ingest: POST /v1/events → the pipeline's events topic."""
