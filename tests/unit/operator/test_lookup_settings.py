"""spec.lookups on the operator's side: the config carries the TTL, size and tables; the lookup rows'
prefix is the pipeline's own and a canary track keeps it (its dedup/checkpoint prefix differs);
rules reading tables the pipeline does not declare are refused at admission, naming the pipeline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from alertpipe.operator.decisions.compile import compile_config
from alertpipe.operator.decisions.tracks import track_documents
from alertpipe.operator.decisions.validation import validate_rule_in
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.operator.rollout_models import CanaryStatus, RolloutSpec
from alertpipe.workers.config.models import RuleEntry, RuleSpec

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def spec(**extra: Any) -> AlertPipelineSpec:
    raw: dict[str, Any] = {
        "kafka": {"bootstrapServers": "127.0.0.1:9092", "topics": {"events": {"partitions": 4}}},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        **extra,
    }
    return AlertPipelineSpec.model_validate(raw)


def entry(cond: str) -> RuleEntry:
    return RuleEntry(name="r", spec=RuleSpec.model_validate({"threshold": {"condition": cond}}))


def test_the_config_carries_spec_lookups_and_the_pipelines_own_prefix() -> None:
    cfg = compile_config("team-a", "fleet", spec(lookups={"ttl": "5s", "maxEntries": 500,
                                                           "tables": ["thresholds"]}), [], NOW)
    assert (cfg.lookups.ttl, cfg.lookups.max_entries, cfg.lookups.tables) == ("5s", 500, ["thresholds"])
    assert cfg.redis.lookups_prefix == cfg.redis.key_prefix == "team-a:fleet:"
    other = compile_config("team-b", "fleet", spec(), [], NOW)
    assert other.redis.lookups_prefix == "team-b:fleet:"  # another tenant's rows live elsewhere
    assert (other.lookups.ttl, other.lookups.max_entries, other.lookups.tables) == ("30s", 100_000, [])
    with pytest.raises(ValidationError):
        spec(lookups={"tables": ["a:b"]})  # ':' would make table and key ambiguous


def test_a_canary_track_reads_the_stable_tracks_rows() -> None:
    old, new = [entry("value > lookup('thresholds', deviceId).max")], [entry("value > 2")]
    cfg = compile_config("t", "p", spec(), new, NOW)
    status = CanaryStatus.model_validate({
        "phase": "Progressing", "weight": 10, "candidateRevision": cfg.rules_revision(),
        "stableRevision": cfg.revision_of_rules(old)})
    rollout = RolloutSpec.model_validate({"steps": [{"weight": 10}, {"weight": 50}]})
    stable, cand = track_documents(cfg, old, status, rollout)
    assert cand is not None
    assert cand.redis.key_prefix != stable.redis.key_prefix  # its own dedup keys and checkpoints
    assert cand.redis.lookups_prefix == stable.redis.lookups_prefix == "t:p:"


def test_admission_refuses_tables_a_selecting_pipeline_does_not_declare() -> None:
    rule = {"threshold": {"condition": "value > lookup('limits', deviceId).max"}}
    verdict = validate_rule_in("r", rule, [("a", [], None, ["thresholds"]), ("b", [], None, [])])
    assert [(p, r.endswith("(AlertPipeline a)")) for p, r in verdict.errors] == [
        ("spec.threshold.condition", True)]
    assert "table 'limits' is not declared in the pipeline's spec.lookups.tables" in verdict.errors[0][1]
    assert validate_rule_in("r", rule, [("a", [], None, ["limits"]), ("b", [])]).valid
    bad = validate_rule_in("r", {"threshold": {"condition": "value > lookup(limits, deviceId).max"}}, [])
    assert bad.errors == [("spec.threshold.condition", "lookup() needs the table as a string literal,"
                           " e.g. lookup('thresholds', deviceId), at column 9")]
