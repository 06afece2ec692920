"""Parses the reconciler caches: a pipeline's validated spec per (uid, generation), a rule's verdict
per (uid, generation, the channel names it is checked against). Validation is pure, so a cached
verdict is the verdict; the caches only save the CPU of a resync over many objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alertpipe.operator.decisions.validation import RuleVerdict, validate_pipeline, validate_rule
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config.models import ChannelSpec

__all__ = ["Parsed"]


class Parsed:
    def __init__(self) -> None:
        self._verdicts: dict[tuple[Any, ...], RuleVerdict] = {}
        self._specs: dict[tuple[Any, Any], tuple[AlertPipelineSpec | None, list[tuple[str, str]]]] = {}

    def spec(self, body: Mapping[str, Any]) -> tuple[AlertPipelineSpec | None, list[tuple[str, str]]]:
        """The pipeline's parsed spec, cached per (uid, generation)."""
        meta = body["metadata"]
        key = (meta.get("uid"), meta.get("generation"))
        hit = self._specs.get(key)
        if hit is None:
            if len(self._specs) > 10_000:
                self._specs.clear()
            ns, name = meta.get("namespace") or "", meta.get("name") or ""
            hit = self._specs[key] = validate_pipeline(ns, name, body.get("spec"))
        return hit

    def verdict(self, rule: Mapping[str, Any], channels: list[ChannelSpec] | None,
                tables: Sequence[str] = ()) -> RuleVerdict:
        meta = rule["metadata"]
        ckey = (
            tuple(sorted(c.name for c in channels)) if channels is not None else None
        )  # names are what rules check
        key = (
            meta.get("uid"),
            meta.get("generation"),
            meta.get("resourceVersion") if not meta.get("generation") else 0,
            ckey,
            tuple(sorted(tables)),
        )
        hit = self._verdicts.get(key)
        if hit is None:
            hit = validate_rule(meta["name"], rule.get("spec"), channels, tables=tables)
            if len(self._verdicts) > 50_000:
                self._verdicts.clear()
            self._verdicts[key] = hit
        return hit
