"""The ``--loop`` choice of the asyncio workers (ingestor, deliverer): asyncio, uvloop or auto."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

__all__ = ["LOOP_CHOICES", "loop_factory"]

LOOP_CHOICES = ("asyncio", "uvloop", "auto")


def loop_factory(choice: str, command: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event-loop factory for ``asyncio.Runner``: None for asyncio's own; uvloop's when asked for
    (a one-line exit naming ``command`` if the package is missing) or, with ``auto``, when installed."""
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(f"alertpipe {command}: --loop uvloop needs the uvloop package") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
