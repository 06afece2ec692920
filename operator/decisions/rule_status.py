"""An AlertRule's status: valid or not (against the channels of every pipeline that selects it,
each pipeline named in the message when there are several), which pipelines it feeds and at which
live revision. Pure: the verdicts come from ``validation.validate_rule`` (cached by the caller)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from alertpipe.operator.decisions.conditions import Want, merge_conditions
from alertpipe.operator.decisions.selector import matches
from alertpipe.operator.decisions.validation import RuleVerdict, errors_text
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config.models import ChannelSpec

__all__ = ["rule_status"]

JSON = dict[str, Any]
Verdict = Callable[[Mapping[str, Any], list[ChannelSpec] | None], RuleVerdict]


def rule_status(
    rule: Mapping[str, Any],
    pipelines: Sequence[tuple[str, AlertPipelineSpec]],
    verdict: Verdict,
    compiled: Mapping[str, tuple[str, frozenset[str]]],
    now: datetime,
) -> tuple[JSON, str | None]:
    """(the rule's new status, the rejection message when it is invalid).

    ``pipelines`` are the namespace's valid pipelines (name, spec); ``compiled`` maps a pipeline's
    name to (live revision, names of the rules in it).
    """
    meta = rule["metadata"]
    labels = meta.get("labels") or {}
    feeding = [(n, s) for n, s in pipelines if matches(s.rule_selector, labels)]
    errors: list[tuple[str, str]] = []
    if feeding:
        for pname, pspec in feeding:
            for path, reason in verdict(rule, list(pspec.channels)).errors:
                entry = (path, reason if len(feeding) == 1 else f"{reason} (pipeline {pname})")
                if entry not in errors:
                    errors.append(entry)
    else:
        errors = list(verdict(rule, None).errors)
    valid = not errors
    if valid:
        want = Want(
            "Valid",
            "True",
            "Compiled" if feeding else "CompiledNotSelected",
            "compiles" + ("" if feeding else "; no AlertPipeline in this namespace selects it"),
        )
    else:
        want = Want("Valid", "False", "InvalidRule", errors_text(errors))
    status = dict(rule.get("status") or {})
    conditions = merge_conditions(status.get("conditions") or [], [want], now, meta.get("generation"))
    live = []
    for pname, _ in feeding:
        c = compiled.get(pname)
        if c and meta["name"] in c[1]:
            live.append({"pipeline": pname, "revision": c[0]})
    new_status = {
        **status,
        "observedGeneration": meta.get("generation"),
        "conditions": conditions,
        "pipelines": [n for n, _ in feeding],
        "live": live,
    }
    return new_status, None if valid else want.message
