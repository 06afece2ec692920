"""Unit tests of the deliverer (no I/O)."""
