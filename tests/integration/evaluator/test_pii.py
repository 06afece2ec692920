"""spec.pii end to end on real Kafka and Redis: an evaluator and a deliverer process run a pipeline
whose events carry an email and a phone number, and every output of the run is searched for them.

Outputs searched: both processes' logs, the dead-letter topic (values and base64 payloads
decoded), the audit topic, and what the channels without ``includePii`` received (bodies and
headers). Internal topics that carry the input (events, late, alerts) are not outputs. The channel
that opts in must receive the raw values, so a policy that masked everything would fail too.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.receivers import Reply, start_http_receiver, wait_until

from .conftest import ROOT, EvaluatorProcess, Pipeline

pytestmark = pytest.mark.integration

EMAIL = "alice.pii@example.org"
PHONE = "+15550009999"
RAW = (EMAIL, PHONE)


NOW = int(time.time() * 1000)


def event(seq: int, value: float, after_ms: int = 0) -> tuple[str, bytes]:
    e = {
        "tenant": "acme",
        "deviceId": "dev-1",
        "seq": seq,
        "ts": NOW + seq + after_ms,
        "type": "temperature",
        "value": value,
        "email": EMAIL,
        "user": {"phone": PHONE},
    }
    return "dev-1", orjson.dumps(e)


def texts(records: list[Any]) -> str:
    """Every record as text, with base64 payloads decoded (a DLQ keeps the event as base64)."""
    out = []
    for r in records:
        out.append(orjson.dumps(r, default=str).decode())
        if isinstance(r, dict) and "valueBase64" in r:
            out.append(base64.b64decode(r["valueBase64"]).decode(errors="replace"))
    return "\n".join(out)


async def test_no_output_shows_a_pii_value(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    receiver = await start_http_receiver()
    # the opted-in channel fails once with an answer that echoes the address (a receiver may)
    receiver.script("/webhook/trusted", [Reply(500, body=f"upstream rejected {EMAIL}")])
    receiver.set_default("/webhook/broken", Reply(400, body=f"no such user {EMAIL} / {PHONE}"))
    fast = {"maxAttempts": 3, "maxAge": "30s", "initialBackoff": "50ms", "maxBackoff": "100ms"}

    def hook(name: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "webhook": {"url": receiver.url(f"/webhook/{name}")}, "retry": fast, **kw}

    pipeline.rules = [
        {
            "name": "hot",
            "spec": {
                "select": {"types": ["temperature"]},
                "by": ["deviceId", "email"],
                "threshold": {"condition": "value > 80"},
                "annotations": {
                    "summary": "{{ value }} for {{ email }} at {{ user.phone }} on {{ deviceId }}"
                },
                "channels": ["hook", "trusted", "broken"],
            },
        }
    ]
    pipeline.extra = {
        "channels": [hook("hook"), hook("trusted", includePii=True), hook("broken")],
        "delivery": {"allowPrivateNetworks": True},
        "pii": {"fields": ["email", "$.user.phone"], "mode": "hash"},
    }
    pipeline.write()
    log = (tmp_path / "deliverer.log").open("wb")
    deliverer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alertpipe",
            "--log-level=DEBUG",
            "deliverer",
            "--config",
            f"file:{pipeline.path}",
            "--secrets-dir",
            str(tmp_path),
            "--metrics-port",
            "0",
            "--group",
            f"{pipeline.name}-deliverer",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ev = EvaluatorProcess(pipeline, tmp_path).start()
        evaluators.append(ev)
        # fires, then resolves; one event is not valid (no seq) and is dead-lettered with its PII
        pipeline.produce(
            [
                event(1, 90.0),
                event(2, 95.0),
                event(3, 20.0),
                # a later one moves the watermark past the first three (a new device's are held)
                event(4, 20.0, after_ms=20_000),
                (
                    "dev-1",
                    orjson.dumps(
                        {
                            "tenant": "acme",
                            "deviceId": "dev-1",
                            "type": "temperature",
                            "ts": 1,
                            "email": EMAIL,
                        }
                    ),
                ),
            ]
        )
        await wait_until(
            lambda: (
                len(receiver.recorder.accepted("/webhook/hook")) == 2
                and len(receiver.recorder.accepted("/webhook/trusted")) == 2
                and len(receiver.recorder.on("/webhook/broken")) == 2
            ),
            90,
            "firing and resolved on every channel",
        )
        dead = pipeline.read("deadLetter", min_count=3)
        audit = pipeline.read("audit", min_count=7)  # 6 deliveries or dead letters, a retry
    finally:
        deliverer.terminate()
        deliverer.wait(30)
        log.close()
        ev.stop()
        await receiver.stop()

    trusted = receiver.recorder.accepted("/webhook/trusted")
    assert EMAIL in trusted[0].body.decode() and PHONE in trusted[0].body.decode()
    masked = [r for r in receiver.recorder.items if not r.path.startswith("/webhook/trusted")]
    alert = orjson.loads(masked[0].body)["alert"]
    token = alert["labels"]["email"]
    assert token.startswith("pii:") and alert["groupKey"] == f"deviceId=dev-1,email={token}"
    assert token in alert["annotations"]["summary"] and "pii" not in alert
    assert len([d for d in dead if d.get("kind") == "malformed-event"]) == 1
    assert sum(d.get("channel") == "broken" for d in dead) == 2

    outputs = {
        "evaluator log": ev.log_text(),
        "deliverer log": (tmp_path / "deliverer.log").read_text(errors="replace"),
        "dead-letter topic": texts(dead),
        "audit topic": texts(audit),
        "masked channels": "\n".join(r.body.decode(errors="replace") + str(r.headers) for r in masked),
    }
    assert "upstream rejected" in outputs["audit topic"]  # the echo is there, its address masked
    for where, text in outputs.items():
        for raw in RAW:
            assert raw not in text, f"{raw!r} found in the {where}"
