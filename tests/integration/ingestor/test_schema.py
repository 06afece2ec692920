"""spec.schema at ingest against a real Kafka: an event that breaks its type's schema is refused with
the JSON path (HTTP 400 / 202 with it listed; gRPC INVALID_ARGUMENT with a field violation), the rest
is written."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from alertpipe.workers.config import SchemaSpec

from .conftest import events, make_config, read_topic, running_ingestor
from .test_grpc import AUTH, grpc_client, refused, request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCHEMA = SchemaSpec.model_validate(
    {
        "types": [
            {
                "type": "temperature",
                "version": 2,
                "jsonSchema": {
                    "type": "object",
                    "required": ["value"],
                    "properties": {"value": {"type": "number", "maximum": 1000}},
                },
            }
        ]
    }
)


async def test_events_breaking_their_schema_are_refused_with_the_path(
    kafka_bootstrap: str, topic: str
) -> None:
    cfg = make_config(kafka_bootstrap, topic).model_copy(update={"event_schema": SCHEMA}).with_revision()
    bad: dict[str, Any] = {**events(1)[0], "seq": 99, "value": "warm"}
    async with running_ingestor(cfg) as ing:
        status, body, _ = await ing.post([*events(3), bad])
        assert status == 202 and body["accepted"] == 3
        assert body["rejected"] == [
            {"index": 3, "reason": "schema: $.value: 'warm' is not of type 'number' (schema temperature v2)"}
        ]
        status, body, _ = await ing.post([bad])
        assert status == 400 and "$.value" in body["rejected"][0]["reason"]
        async with grpc_client(ing) as client:
            code, msg, st = await refused(client.publish(request([bad]), metadata=AUTH))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "events[0]: schema: $.value" in msg
    violations = error_details_pb2.BadRequest()
    assert st.details[0].Unpack(violations) and violations.field_violations[0].field == "events[0]"
    assert len(read_topic(kafka_bootstrap, topic, expect=3)) == 3
