"""spec.schema as pure functions: checking events, backward compatibility, rules against schemas."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from alertpipe.operator.decisions.validation import schema_change_errors, validate_rule, validate_rule_in
from alertpipe.workers.config import ChannelSpec, SchemaSpec
from alertpipe.workers.ingestor.body import build_batch
from alertpipe.workers.schemas import SchemaSet, compatibility_errors
from tests.unit.operator.test_decisions import pipeline_spec

pytestmark = pytest.mark.unit

TEMPERATURE: dict[str, Any] = {
    "type": "object",
    "required": ["value"],
    "properties": {
        "value": {"type": "number", "maximum": 200},
        "unit": {"enum": ["C", "F"]},
        "site": {"type": "object", "properties": {"rack": {"type": "string"}}},
    },
}


def spec(schema: dict[str, Any] = TEMPERATURE, version: int = 1) -> SchemaSpec:
    return SchemaSpec.model_validate(
        {"types": [{"type": "temperature", "version": version, "jsonSchema": schema}]}
    )


def event(**fields: Any) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "deviceId": "d1",
        "seq": 1,
        "ts": 1_767_323_000_000,
        "type": "temperature",
        **fields,
    }


def test_events_are_checked_with_the_path_of_what_fails() -> None:
    s = SchemaSet(spec(version=3))
    assert s and s.check(event(value=21.5, unit="C")) is None
    assert s.check(event(value="hot")) == "$.value: 'hot' is not of type 'number' (schema temperature v3)"
    assert (
        s.check(event(value=1, site={"rack": 7}))
        == "$.site.rack: 7 is not of type 'string' (schema temperature v3)"
    )
    assert s.check(event()) == "$: 'value' is a required property (schema temperature v3)"
    assert s.check({**event(), "type": "humidity"}) is None  # a type without a schema is not checked
    assert not SchemaSet(None)


def test_an_invalid_schema_is_refused_at_the_model() -> None:
    with pytest.raises(ValidationError, match=r"not a JSON Schema: \.properties\.value\.type"):
        spec({"type": "object", "properties": {"value": {"type": "numbr"}}})
    with pytest.raises(ValidationError, match="one schema per event type"):
        SchemaSpec.model_validate({"types": [{"type": "t", "version": 1, "jsonSchema": {}}] * 2})


def test_the_ingest_batch_rejects_events_against_their_schema() -> None:
    items = [event(value=1), event(seq=2, value="x")]
    batch = build_batch(items, None, "acme", 1_767_323_000_500, check=SchemaSet(spec()).check)
    assert len(batch.records) == 1 and batch.indexes == [0]
    assert [(r.index, r.reason) for r in batch.rejects] == [
        (1, "schema: $.value: 'x' is not of type 'number' (schema temperature v1)")
    ]


def changed(fn: Any) -> dict[str, Any]:
    new = copy.deepcopy(TEMPERATURE)
    fn(new)
    return new


@pytest.mark.parametrize(
    ("change", "errors"),
    [
        (lambda s: s["properties"].update(humidity={"type": "number"}), []),  # a new optional field
        (lambda s: s["properties"]["value"].update(type=["number", "string"]), []),  # widened
        (lambda s: s["properties"]["value"].update(maximum=500), []),
        (lambda s: s["required"].append("unit"), [".required", "'unit' is newly required"]),
        (lambda s: s["properties"]["value"].update(type="integer"), [".properties.value.type", "narrowed"]),
        (
            lambda s: s["properties"]["value"].update(maximum=100),
            [".properties.value.maximum", "lowered to 100"],
        ),
        (
            lambda s: s["properties"]["unit"].update(enum=["C"]),
            [".properties.unit.enum", "no longer accepts"],
        ),
        (lambda s: s.update(additionalProperties=False), [".additionalProperties", "now false"]),
        (
            lambda s: s["properties"]["site"]["properties"]["rack"].update(minLength=3),
            [".properties.site.properties.rack.minLength", "raised to 3"],
        ),
    ],
)
def test_backward_compatibility(change: Any, errors: list[str]) -> None:
    got = compatibility_errors(spec(), spec(changed(change), version=2))
    if not errors:
        assert got == []
        return
    (path, reason), *_ = got
    assert path == "spec.schema.types[0].jsonSchema" + errors[0] and errors[1] in reason
    assert reason.endswith("(breaks temperature v1 events)")


def test_versions_must_move_up_with_a_change() -> None:
    loosened = changed(lambda s: s["properties"].update(extra={"type": "string"}))
    assert compatibility_errors(spec(), spec(loosened, version=1)) == [
        ("spec.schema.types[0].version", "the schema of 'temperature' changed: raise the version")
    ]
    assert compatibility_errors(spec(version=2), spec(version=1))[0][1] == "went down from 2 to 1"
    assert compatibility_errors(None, spec()) == [] and compatibility_errors(spec(), spec()) == []


def test_admission_of_a_pipeline_update() -> None:
    def raw(schema: dict[str, Any], version: int) -> dict[str, Any]:
        body = pipeline_spec().model_dump(mode="json", by_alias=True, exclude_none=True)
        return {
            **body,
            "schema": {"types": [{"type": "temperature", "version": version, "jsonSchema": schema}]},
        }

    new = pipeline_spec(schema=raw(changed(lambda s: s["required"].append("unit")), 2)["schema"])
    errors = schema_change_errors(raw(TEMPERATURE, 1), new)
    assert errors and errors[0][0] == "spec.schema.types[0].jsonSchema.required"
    assert schema_change_errors(None, new) == []  # a create promises nothing yet


def test_rules_reading_undeclared_fields_are_refused() -> None:
    s = spec()
    good = {
        "select": {"types": ["temperature"]},
        "threshold": {"condition": "value > 80 && unit == 'C'"},
        "annotations": {"summary": "{{ value }} on {{ deviceId }}"},
    }
    assert validate_rule("r", good, None, s).valid
    bad = {
        "select": {"types": ["temperature"], "filter": "sensor == 'a'"},
        "by": ["deviceId", "rack"],
        "threshold": {"condition": "valu > 80"},
        "annotations": {"summary": "{{ humidity }}"},
    }
    verdict = validate_rule("r", bad, None, s)
    assert verdict.errors == [
        ("spec.select.filter", "field 'sensor' is not in the event schema (temperature v1)"),
        ("spec.threshold.condition", "field 'valu' is not in the event schema (temperature v1)"),
        ("spec.by[1]", "field 'rack' is not in the event schema (temperature v1)"),
        ("spec.annotations.summary", "field 'humidity' is not in the event schema (temperature v1)"),
    ]
    assert validate_rule("r", {**bad, "select": {}}, None, s).valid  # every type: nothing to check against
    channels: list[ChannelSpec] = []
    assert not validate_rule_in("r", bad, [("p", channels, s)]).valid
    assert validate_rule_in("r", bad, [("p", channels)]).valid
