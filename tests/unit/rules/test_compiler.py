"""compile_rule: every error with its path, the compiled shape the engine relies on."""

from __future__ import annotations

from typing import Any

import pytest

from alertpipe.workers.config import ChannelSpec, RuleSpec
from alertpipe.workers.errors import RuleCompileError
from alertpipe.workers.rules import compile_rule, rule_from_manifest

pytestmark = pytest.mark.unit


def spec(**kw: Any) -> RuleSpec:
    return RuleSpec.model_validate(kw)


def errors_of(s: RuleSpec, channels: Any = None) -> list[tuple[str, str]]:
    with pytest.raises(RuleCompileError) as info:
        compile_rule("r", s, channels=channels)
    return info.value.errors


def test_threshold_compiles() -> None:
    s = spec(
        select={"types": ["cpu"]},
        threshold={"condition": "value > 80"},
        channels=["pager"],
        annotations={"summary": "{{ value }} on {{ deviceId }}"},
    )
    r = compile_rule("hot", s, channels=["pager"])
    assert r.kind == "threshold" and r.types == ("cpu",) and r.by == (("deviceId",),)
    assert r.condition is not None and r.condition({"value": 81}) is True
    assert r.annotations["summary"].render({"value": 81.0, "deviceId": "d"}) == "81 on d"


def test_errors_carry_paths_and_all_are_reported() -> None:
    s = spec(
        select={"types": ["cpu", "cpu"], "filter": "region.startsWith(1)"},
        by=["deviceId", "9bad"],
        threshold={"condition": "avgg(value) > 1"},
        labels={"team-x": "a"},
        annotations={"summary": "{{ value "},
        channels=["pager", "pagr"],
    )
    errs = errors_of(s, channels=["pager", "slack"])
    assert ("spec.threshold.condition", "unknown function 'avgg' at column 1") in errs
    reason = "channel 'pagr' is not defined by the pipeline (defined: pager, slack)"
    assert ("spec.channels[1]", reason) in errs
    paths = [p for p, _ in errs]
    for p in (
        "spec.select.types",
        "spec.select.filter",
        "spec.by[1]",
        "spec.labels.team-x",
        "spec.annotations.summary",
    ):
        assert p in paths, (p, errs)


def test_channels_may_be_channel_specs_or_unchecked() -> None:
    s = spec(threshold={"condition": "true"}, channels=["pager"])
    pager = ChannelSpec.model_validate({"name": "pager", "webhook": {"url": "http://x"}})
    compile_rule("r", s, channels=[pager])
    compile_rule("r", s)  # None: not checked
    assert errors_of(s, channels=[]) == [
        ("spec.channels[0]", "channel 'pager' is not defined by the pipeline (defined: none)")
    ]


def test_aggregate_checks() -> None:
    errs = errors_of(spec(aggregate={"fn": "p95", "window": "1m", "every": "7s", "condition": "val > 1"}))
    assert [p for p, _ in errs] == [
        "spec.aggregate.field",
        "spec.aggregate.every",
        "spec.aggregate.condition",
    ]
    errs = errors_of(
        spec(aggregate={"fn": "count", "window": "10s", "every": "1m", "condition": "value > 1"})
    )
    assert errs == [("spec.aggregate.every", "1m is longer than the window 10s")]
    errs = errors_of(spec(aggregate={"fn": "count", "window": "0s", "condition": "value > 1"}))
    assert errs[0][0] == "spec.aggregate.window"
    r = compile_rule(
        "r",
        spec(
            aggregate={
                "fn": "avg",
                "field": "m.v",
                "window": "1m",
                "every": "10s",
                "condition": "value > 75",
            },
            **{"for": "30s"},
        ),
    )
    assert (r.window_ms, r.every_ms, r.panes, r.for_ms, r.field) == (60_000, 10_000, 6, 30_000, ("m", "v"))
    tumbling = compile_rule("r", spec(aggregate={"fn": "count", "window": "1m", "condition": "value > 3"}))
    assert tumbling.every_ms == tumbling.window_ms == 60_000


def test_aggregate_templates_know_their_names() -> None:
    errs = errors_of(
        spec(
            aggregate={"fn": "count", "window": "1m", "condition": "value > 3"},
            annotations={"summary": "{{ temperature }}"},
        )
    )
    assert errs[0][0] == "spec.annotations.summary" and "unknown name 'temperature'" in errs[0][1]


def test_absence_rejects_spec_for() -> None:
    errs = errors_of(spec(absence={"for": "2m"}, **{"for": "1m"}))
    assert errs == [("spec.for", "absence rules use spec.absence.for; remove spec.for")]
    r = compile_rule("r", spec(select={"types": ["heartbeat"]}, absence={"for": "2m"}))
    assert r.absence_ms == 120_000 and r.kind == "absence"


def test_tests_are_checked() -> None:
    errs = errors_of(
        spec(
            threshold={"condition": "true"},
            tests=[{"name": "t", "events": [{"deviceId": "d"}], "expect": [{"status": "on", "bogus": 1}]}],
        )
    )
    assert ("spec.tests[0].events[0]", "needs ts") in errs
    assert ("spec.tests[0].expect[0].status", "must be firing or resolved") in errs
    assert any(p == "spec.tests[0].expect[0]" and "bogus" in r for p, r in errs)


def test_fingerprint_changes_with_the_spec_but_not_the_tests() -> None:
    a = compile_rule("r", spec(threshold={"condition": "value > 1"}))
    b = compile_rule("r", spec(threshold={"condition": "value > 1"}, tests=[{"name": "t", "events": []}]))
    c = compile_rule("r", spec(threshold={"condition": "value > 2"}))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_rule_from_manifest_paths() -> None:
    name, s = rule_from_manifest(
        {"kind": "AlertRule", "metadata": {"name": "x"}, "spec": {"threshold": {"condition": "true"}}}
    )
    assert name == "x" and s.kind == "threshold"
    with pytest.raises(RuleCompileError) as info:
        rule_from_manifest(
            {"metadata": {"name": "x"}, "spec": {"threshold": {"condition": "true"}, "severty": "x"}}
        )
    assert info.value.errors == [("spec.severty", "unknown field (check the spelling)")]
    with pytest.raises(RuleCompileError) as info:
        rule_from_manifest(
            {"metadata": {}, "spec": {"aggregate": {"fn": "avgx", "window": "1m", "condition": "true"}}}
        )
    assert [p for p, _ in info.value.errors][:2] == ["metadata.name", "spec.aggregate.fn"]
