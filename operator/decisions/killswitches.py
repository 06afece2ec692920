"""Kill switches over time: which are in force now, what they say, and when the next one expires."""

from __future__ import annotations

from datetime import UTC, datetime

from alertpipe.workers.config.models import KillSwitch, KillSwitches

__all__ = ["active_switches", "describe_active", "next_expiry"]


def _until(s: KillSwitch) -> datetime | None:
    # A time without a zone is read as UTC (comparing naive and aware datetimes raises).
    if s.until is None or s.until.tzinfo is not None:
        return s.until
    return s.until.replace(tzinfo=UTC)


def _active(s: KillSwitch | None, now: datetime) -> bool:
    if s is None:
        return False
    until = _until(s)
    return until is None or now < until


def active_switches(switches: KillSwitches, now: datetime) -> KillSwitches:
    """Only the switches in force at ``now``: expired ones drop out (and so out of the config)."""
    return KillSwitches(
        stop_evaluation=switches.stop_evaluation if _active(switches.stop_evaluation, now) else None,
        stop_delivery=switches.stop_delivery if _active(switches.stop_delivery, now) else None,
        disabled_rules=[s for s in switches.disabled_rules if _active(s, now)],
        muted_channels=[s for s in switches.muted_channels if _active(s, now)],
    )


def describe_active(switches: KillSwitches) -> list[str]:
    """One line per switch in ``switches`` (call on ``active_switches``), e.g. ``stopDelivery: <reason>``."""
    out = []
    if switches.stop_evaluation:
        out.append(f"stopEvaluation: {switches.stop_evaluation.reason}")
    if switches.stop_delivery:
        out.append(f"stopDelivery: {switches.stop_delivery.reason}")
    out += [f"disabledRules[{s.name}]: {s.reason}" for s in switches.disabled_rules]
    out += [f"mutedChannels[{s.name}]: {s.reason}" for s in switches.muted_channels]
    return out


def next_expiry(switches: KillSwitches, now: datetime) -> datetime | None:
    """The earliest future ``until`` among the switches, when a reconcile must clear it."""
    items = [
        switches.stop_evaluation,
        switches.stop_delivery,
        *switches.disabled_rules,
        *switches.muted_channels,
    ]
    untils = [_until(s) for s in items if s is not None]
    return min((u for u in untils if u is not None and u > now), default=None)
