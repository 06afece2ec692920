"""The shadow comparison: alert transitions of the stable track (alerts topic) against those of the
candidate (shadow topic), tallied by rule. Pure: operator/shadow_reader.py reads the topics.

A transition is (alert id, status); ids are deterministic (tenant, pipeline, rule, group key,
episode start), so the same verdict from both tracks is the same transition. Only episodes that
start at or after ``since`` count (the candidate starts fresh: episodes open before its warm-up
ended are not comparable), and only transitions before ``until`` (newer ones may be on their way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from alertpipe.operator.rollout_models import RuleDiff, ShadowDiff

__all__ = ["MAX_EXAMPLES", "tally"]

MAX_EXAMPLES = 5


def _keyed(alerts: Iterable[Mapping[str, Any]], since: int, until: int) -> dict[tuple[str, str], str]:
    out = {}
    for a in alerts:
        at, start = a.get("eventTimeMs"), a.get("startsAtMs")
        if not isinstance(at, int) or not isinstance(start, int) or start < since or at >= until:
            continue
        out[(str(a.get("id")), str(a.get("status")))] = str(a.get("rule"))
    return out


def tally(
    stable: Iterable[Mapping[str, Any]], candidate: Iterable[Mapping[str, Any]], since: int, until: int
) -> ShadowDiff:
    s, c = _keyed(stable, since, until), _keyed(candidate, since, until)
    by_rule: dict[str, dict[str, int]] = {}
    examples: list[str] = []

    def bump(rule: str, what: str) -> None:
        counts = by_rule.setdefault(rule, {"both": 0, "only_stable": 0, "only_candidate": 0})
        counts[what] += 1

    for key in sorted(set(s) | set(c)):
        rule = s.get(key) or c.get(key) or ""
        what = "both" if key in s and key in c else ("only_stable" if key in s else "only_candidate")
        bump(rule, what)
        if what != "both" and len(examples) < MAX_EXAMPLES:
            examples.append(f"{what.replace('_', '-')} {rule} {key[0]} {key[1]}")
    rules = {r: RuleDiff(**v) for r, v in sorted(by_rule.items())}
    return ShadowDiff(
        both=sum(r.both for r in rules.values()),
        only_stable=sum(r.only_stable for r in rules.values()),
        only_candidate=sum(r.only_candidate for r in rules.values()),
        by_rule=rules, examples=examples, since_ms=since, until_ms=until,
    )
