"""JSON merge patches (RFC 7386) computed from two documents, so a status write removes what is gone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["merge_patch"]

JSON = dict[str, Any]


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> JSON:
    """A JSON merge patch turning ``old`` into ``new`` (keys gone from ``new`` become null)."""
    out: JSON = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                out[key] = sub
        elif value != before or key not in old:
            out[key] = value
    for key in old:
        if key not in new:
            out[key] = None
    return out
