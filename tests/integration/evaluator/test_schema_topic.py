"""spec.schema validated on the topic (validateAt: topic): the evaluator dead-letters an event that
breaks its type's schema, with the JSON path, and evaluates the others (real Kafka and Redis)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson
import pytest

from .conftest import EvaluatorProcess, Pipeline

pytestmark = pytest.mark.integration


def test_events_breaking_the_schema_are_dead_lettered_with_the_path(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    schema = {"type": "object", "required": ["value"], "properties": {"value": {"type": "number"}}}
    pipeline.rules = [
        {"name": "hot", "spec": {"select": {"types": ["temp"]}, "threshold": {"condition": "value > 5"}}}
    ]
    pipeline.extra = {
        "schema": {"validateAt": "topic", "types": [{"type": "temp", "version": 4, "jsonSchema": schema}]}
    }
    pipeline.write()
    now = int(time.time() * 1000)

    def ev(seq: int, value: object, after: int = 0) -> tuple[str, bytes]:
        return "d1", orjson.dumps(
            {
                "tenant": "acme",
                "deviceId": "d1",
                "seq": seq,
                "ts": now + seq + after,
                "type": "temp",
                "value": value,
            }
        )

    pipeline.produce([ev(0, 9), ev(1, "nine"), ev(2, 10, after=20_000)])
    evaluators.append(EvaluatorProcess(pipeline, tmp_path).start())
    dead = pipeline.read("deadLetter", min_count=1)
    assert [d["reason"] for d in dead] == ["schema: $.value: 'nine' is not of type 'number' (schema temp v4)"]
    assert orjson.loads(base64.b64decode(dead[0]["valueBase64"]))["seq"] == 1
    alerts = pipeline.read("alerts", min_count=1)
    assert [a["status"] for a in alerts] == ["firing"]  # the valid events were evaluated
