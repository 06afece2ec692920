"""Bad records written straight onto the events topic (past the ingestor): each goes to the dead-letter
topic with its reason, the evaluator never stops, and the good events around them still alert."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import orjson
import pytest

from .conftest import EvaluatorProcess, Pipeline, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RULE = {"name": "hot", "spec": {"threshold": {"condition": "value > 90.0"},
                                "annotations": {"summary": "{{ value }} on {{ deviceId }}"}}}


def test_bad_records_are_dead_lettered_and_the_evaluator_goes_on(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    pipeline.rules = [RULE]
    pipeline.write()
    now = time.time_ns() // 1_000_000 - 60_000

    def ev(seq: int, **kw: object) -> dict[str, object]:
        return {"tenant": "acme", "deviceId": "good", "seq": seq, "ts": now + seq, "type": "cpu",
                "value": 95} | kw

    nested: object = 1
    for _ in range(300):
        nested = [nested]
    huge = b'{"tenant": "acme", "blob": "' + b"a" * 900_000  # not JSON, and too big to copy whole
    bad: list[tuple[bytes, str]] = [
        (b"not json", "not JSON"),
        (b'{"tenant": "acme", "deviceId": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"tenant": "acme", "value": NaN}', "not JSON"),
        (b'{"tenant": "acme", "value": 1e400}', "infinity"),
        (b"[" * 3000 + b"]" * 3000, "depth limit exceeded"),
        (b"", "not JSON"),
        (orjson.dumps({k: v for k, v in ev(1).items() if k != "deviceId"}), "deviceId is required"),
        (orjson.dumps({k: v for k, v in ev(1).items() if k != "seq"}), "seq is required"),
        (orjson.dumps(ev(1) | {"seq": "1"}), "seq is required"),
        (orjson.dumps(ev(1, ts=now + 86_400_000)), "ahead of the evaluator's clock"),
        (orjson.dumps(ev(1, ts="2999-01-01T00:00:00Z")), "between 2000 and 2200"),
        (orjson.dumps(ev(1, deviceId="d" * 300)), "1..256 characters"),
        (huge, "not JSON"),
        # valid, but nested past what orjson re-encodes: it would fail every checkpoint after it
        (json.dumps(ev(1, v=nested)).encode(), "nested more than 254 levels deep"),
    ]
    records = [("good", orjson.dumps(ev(0)))]
    records += [(f"bad-{i}", raw) for i, (raw, _) in enumerate(bad)]
    # then more good ones: not late (the future one did not move the watermark), and alerting
    records += [("good", orjson.dumps(ev(2))), ("good", orjson.dumps(ev(3, value=10)))]
    records += [("good", orjson.dumps(ev(4)))]
    records += [("good", orjson.dumps(ev(5, ts=now + 20_000, value=0)))]  # moves the watermark past them
    pipeline.produce(records)

    proc = EvaluatorProcess(pipeline, tmp_path).start()
    evaluators.append(proc)
    wait_for(lambda: proc.metric("alertpipe_evaluator_events_consumed_total") >= len(records),
             "every record consumed", 120)
    dlq = pipeline.read("deadLetter", min_count=len(bad))
    assert len(dlq) == len(bad)
    by_key = {d["key"]: d for d in dlq}
    for i, (raw, reason) in enumerate(bad):
        d = by_key[f"bad-{i}"]
        assert reason in d["reason"], (i, d["reason"])
        assert "\n" not in d["reason"] and d["stage"] == "evaluator" and d["kind"] == "malformed-event"
        if raw is huge:
            assert d["truncated"] is True and d["valueBytes"] == len(huge)
            assert len(base64.b64decode(d["valueBase64"])) == 256 * 1024
        else:
            assert base64.b64decode(d["valueBase64"]) == raw
    assert proc.metric("alertpipe_evaluator_events_malformed_total") == len(bad)
    assert proc.metric("alertpipe_evaluator_events_late_total") == 0
    assert proc.metric("alertpipe_evaluator_events_evaluated_total") == 5
    alerts = pipeline.read("alerts", min_count=4)
    transitions = [(a["status"], a["eventTimeMs"] - now) for a in alerts]
    assert transitions == [("firing", 0), ("resolved", 3), ("firing", 4), ("resolved", 20_000)]
    assert proc.running()
    assert proc.stop() == 0  # the final checkpoint too
    assert "Traceback" not in proc.log_text()
