"""Moved to ``alertpipe.workers.config.loaders.cli``; this name stays for callers not yet switched
(the evaluator's CLIs). Not part of the contract: nothing in the contract imports it."""

from alertpipe.workers.config.loaders.cli import add_config_argument, parse_config_arg

__all__ = ["add_config_argument", "parse_config_arg"]
