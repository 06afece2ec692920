"""The snapshot format's shared parts: each rule's saved groups and firing episodes, the
episodes of rules that changed while no process ran, and the merge of incremental deltas. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from alertpipe.workers.alerts import alert_id
from alertpipe.workers.rules.state import _NEG, EngineSettings, RuleState

__all__ = ["ENDS_VERSION", "SNAPSHOT_VERSION", "load_rules", "retired_alerts", "rules_snapshot"]

SNAPSHOT_VERSION = 1
# How the saved next window ends were scheduled: 2 counts the end where the oldest pane leaves
# (snapshots without it are mended on restore, ``AggregateState._mend``).
ENDS_VERSION = 2


def load_rules(
    states: Mapping[str, RuleState], saved: Mapping[str, Any], wm: int
) -> list[tuple[str, list[Any]]]:
    """Load each rule's saved groups where its fingerprint is unchanged (``rules_snapshot``'s
    format); return (rule, firing rows) of the saved rules that changed, went away or are now
    forwarded: their episodes are to be retired."""
    for name, st in states.items():
        st.groups.clear()
        st.due_groups.clear()
        rule = saved.get(name)
        if rule is not None and rule["fp"] == st.rule.fingerprint:
            st.load(rule["groups"], wm, mend=rule.get("ends") != ENDS_VERSION)
    retire = []
    for name, rule in saved.items():
        current = states.get(name)
        if current is None or rule["fp"] != current.rule.fingerprint or current.kind == "forward":
            retire.append((name, rule.get("firing", [])))
    return retire


def rules_snapshot(states: Mapping[str, RuleState]) -> dict[str, Any]:
    """Each rule's part of a full snapshot: its fingerprint, groups and firing episodes."""
    return {n: {"fp": st.rule.fingerprint, "groups": st.dump(), "firing": st.firing_summary(),
                "ends": ENDS_VERSION} for n, st in states.items()}


def retired_alerts(
    s: EngineSettings, clock: Callable[[], float], wm: int, rule: str, firing: list[Any]
) -> list[dict[str, Any]]:
    """The `resolved` alerts of a rule that changed or went away while no process ran, for the
    episodes a snapshot says it fired (``firing_summary`` rows), ended at the watermark."""
    at = wm if wm > _NEG else 0
    out = []
    for group, start, severity, labels, channels in firing:
        end = max(at, start)
        out.append({
            "id": alert_id(s.tenant, s.pipeline, rule, group, start), "status": "resolved",
            "tenant": s.tenant, "pipeline": s.pipeline, "rule": rule, "severity": severity,
            "groupKey": group, "labels": labels, "annotations": {},
            "values": {"reason": "rule changed or removed"}, "channels": channels,
            "startsAtMs": start, "endsAtMs": end, "eventTimeMs": end, "ingestTimeMs": None,
            "processedAtMs": int(clock() * 1000), "revision": s.revision,
        })
    return out


_MIN_DELTA_BUDGET = 1 << 20  # deltas may add up to this much even when the full snapshot is smaller


def _dump_device(dev: str, s: Any) -> list[Any]:
    if s.__class__ is int:
        return [dev, s, None, None]
    return [dev, s[0], [[q, t, i, d] for q, (t, i, d) in s[1].items()] if s[1] else None, s[2]]


def _dump_devices(devices: dict[str, Any]) -> list[Any]:
    return [_dump_device(dev, s) for dev, s in devices.items()]


def _group_key(k: Any) -> Any:
    return tuple(k) if k.__class__ is list else k


def _merge_deltas(body: dict[str, Any], deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """A snapshot body with its deltas applied in order (the body of the state they describe)."""
    gens: list[dict[str, list[Any]]] = [
        {row[0]: row for row in body["devices"]},
        {row[0]: row for row in body.get("oldDevices", [])},
    ]
    groups = {n: {_group_key(k): v for k, v in r["groups"]} for n, r in body["rules"].items()}
    for delta in deltas:
        for row in delta["devices"]:
            gen, dev = row[0], row[1]  # [generation (-1: forgotten), device, next seq, pending, gaps]
            gens[0].pop(dev, None)
            gens[1].pop(dev, None)
            if gen >= 0:
                gens[gen][dev] = row[1:]
        for name, r in delta["rules"].items():
            g = groups.get(name)
            if g is None:
                continue  # the rule set of a delta chain is its snapshot's
            for k, v in r["groups"]:
                if v is None:
                    g.pop(_group_key(k), None)
                else:
                    g[_group_key(k)] = v
            body["rules"][name]["firing"] = r["firing"]
        for field in ("maxTs", "wm", "rotateAt", "counts"):
            body[field] = delta[field]
        body.update({k: v for k, v in delta.items() if k not in ("delta", "devices", "rules")})
    body["devices"] = list(gens[0].values())
    body["oldDevices"] = list(gens[1].values())
    for name, g in groups.items():
        body["rules"][name]["groups"] = [[k, v] for k, v in g.items()]
    return body
