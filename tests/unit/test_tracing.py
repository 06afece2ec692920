"""spec.tracing without I/O: the traceparent on the wire (parse, format, Kafka headers), the
collector's headers, the contract's TracingSpec, sampling (root by ratio, the rest by the parent), the
holder that follows config revisions, and each stage's spans on in-memory collaborators with the
SDK's in-memory exporter: the ingestor's records carry its span, the evaluator's alert record its
span under the event's, the deliverer's span is under the alert's with one event per attempt."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from alertpipe.operator.decisions.compile import compile_config
from alertpipe.operator.decisions.workloads import secret_refs
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config import PipelineConfig, SecretKeyRef, StaticConfigSource, TracingSpec
from alertpipe.workers.config.tracing import DEFAULT_SAMPLE_RATIO
from alertpipe.workers.deliverer.records import Parked
from alertpipe.workers.deliverer.settings import DelivererSettings
from alertpipe.workers.deliverer.worker import Deliverer
from alertpipe.workers.errors import ConfigError, DeliveryError
from alertpipe.workers.evaluator.traced import TracedEvents
from alertpipe.workers.ingestor.accept import publish
from alertpipe.workers.ingestor.metrics import IngestorMetrics
from alertpipe.workers.ingestor.producer import BatchResult
from alertpipe.workers.tracing import (
    OUTGOING_TRACEPARENT,
    TRACEPARENT,
    Tracing,
    TracingHolder,
    collector_headers,
    format_traceparent,
    parse_traceparent,
    traceparent_of,
)
from tests.unit.deliverer.memory import MemoryBackends, ScriptedSender

pytestmark = pytest.mark.unit

TID, SID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SPEC = TracingSpec(endpoint="http://collector:4318", sample_ratio=1.0)


def tracing(spec: TracingSpec = SPEC, role: str = "ingestor") -> tuple[Tracing, InMemorySpanExporter]:
    mem = InMemorySpanExporter()
    return Tracing.build(spec, role=role, tenant="acme", pipeline="p", exporter=mem), mem


def hexes(span: ReadableSpan) -> tuple[str, str, str | None]:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", parent


# --- the wire -------------------------------------------------------------------------------------


def test_traceparent_round_trips_and_invalid_values_are_none() -> None:
    ctx = parse_traceparent(f"00-{TID}-{SID}-01")
    assert ctx is not None and ctx.is_remote and ctx.trace_flags.sampled
    assert format_traceparent(ctx) == f"00-{TID}-{SID}-01"
    assert parse_traceparent(f"00-{TID}-{SID}-00".encode()).trace_flags.sampled is False  # type: ignore[union-attr]
    # a later version may add fields; version 00 may not
    assert parse_traceparent(f"01-{TID}-{SID}-01-extra") is not None
    for bad in (None, "", "garbage", f"ff-{TID}-{SID}-01", f"00-{'0' * 32}-{SID}-01",
                f"00-{TID}-{'0' * 16}-01", f"00-{TID.upper()}-{SID}-01", f"00-{TID}-{SID}-01-extra",
                b"\xff\xfe"):
        assert parse_traceparent(bad) is None, bad


def test_traceparent_of_kafka_headers() -> None:
    assert traceparent_of(None) is None
    assert traceparent_of([("alertpipe-kind", b"late")]) is None
    assert traceparent_of([(TRACEPARENT, "a"), ("x", None), (TRACEPARENT, b"b")]) == b"b"  # the last wins
    assert traceparent_of([(TRACEPARENT, None)]) is None


def test_collector_headers_parse_and_never_echo_a_value() -> None:
    assert collector_headers("Authorization=Bearer%20abc, x-scope=tenant-1\nx-empty=") == {
        "authorization": "Bearer abc", "x-scope": "tenant-1", "x-empty": ""}
    assert collector_headers("  \n") == {}
    with pytest.raises(ValueError, match="pair 2") as info:
        collector_headers("a=1,s3cr3t-without-equals")
    assert "s3cr3t" not in str(info.value)


# --- the contract ---------------------------------------------------------------------------------


def test_tracing_spec_defaults_url_and_validation() -> None:
    spec = TracingSpec(endpoint="http://collector.monitoring:4318")
    assert spec.sample_ratio == DEFAULT_SAMPLE_RATIO == 0.01
    assert spec.traces_url() == "http://collector.monitoring:4318/v1/traces"
    assert TracingSpec(endpoint="https://c:4318/").traces_url() == "https://c:4318/v1/traces"
    assert TracingSpec(endpoint="https://c/otlp/v1/traces").traces_url() == "https://c/otlp/v1/traces"
    for bad in ({"endpoint": "collector:4318"}, {"endpoint": "http://"},
                {"endpoint": "http://c", "sampleRatio": 1.5}, {"endpoint": "http://c", "sampleRatio": -0.1},
                {"endpoint": "http://c", "sampleRate": 1}):
        with pytest.raises(ValidationError):
            TracingSpec.model_validate(bad)


def test_the_operator_carries_spec_tracing_into_the_config_and_mounts_its_secret() -> None:
    spec = AlertPipelineSpec.model_validate({
        "kafka": {"bootstrapServers": "k:9092"}, "redis": {"url": "redis://r:6379/0"},
        "tracing": {"endpoint": "http://otel:4318", "sampleRatio": 0.25,
                    "headersSecretRef": {"name": "otel", "key": "headers"}},
    })
    from datetime import UTC, datetime

    cfg = compile_config("acme", "p", spec, [], datetime.now(UTC))
    assert cfg.tracing == spec.tracing
    doc = orjson.loads(cfg.to_json())
    assert doc["tracing"] == {"endpoint": "http://otel:4318", "sampleRatio": 0.25,
                              "headersSecretRef": {"name": "otel", "key": "headers"}, "timeout": 10.0}
    assert PipelineConfig.from_json(cfg.to_json()) == cfg
    ref = SecretKeyRef(name="otel", key="headers")
    assert all(ref in secret_refs(spec, role) for role in ("ingestor", "evaluator", "deliverer"))
    assert ref not in secret_refs(spec, "history")
    untraced = spec.model_copy(update={"tracing": None})
    assert compile_config("acme", "p", untraced, [], datetime.now(UTC)).tracing is None
    assert compile_config("acme", "p", untraced, [], datetime.now(UTC)).revision != cfg.revision


# --- sampling -------------------------------------------------------------------------------------


def test_only_a_root_starts_a_trace_and_later_stages_follow_the_parent() -> None:
    t, mem = tracing()
    root = t.start("alertpipe.ingest", root=True)
    assert root is not None
    child = t.start("alertpipe.evaluate", t.headers(root)[0][1])
    assert child is not None
    child.end()
    root.end()
    assert t.start("alertpipe.evaluate", None) is None  # no context: no trace of its own
    assert t.start("alertpipe.evaluate", f"00-{TID}-{SID}-00") is None  # the parent said no
    assert t.start("alertpipe.ingest", f"00-{TID}-{SID}-00", root=True) is None  # the client said no
    under_client = t.start("alertpipe.ingest", f"00-{TID}-{SID}-01", root=True)
    assert under_client is not None
    under_client.end()
    spans = {s.name + str(i): s for i, s in enumerate(mem.get_finished_spans())}
    (ev, ing, client) = spans["alertpipe.evaluate0"], spans["alertpipe.ingest1"], spans["alertpipe.ingest2"]
    assert hexes(ev)[0] == hexes(ing)[0] and hexes(ev)[2] == hexes(ing)[1] and hexes(ing)[2] is None
    assert hexes(client)[0] == TID and hexes(client)[2] == SID
    assert ing.resource.attributes["service.name"] == "alertpipe-ingestor"
    assert t.headers(root) == [(TRACEPARENT, Tracing.traceparent(root).encode())]


def test_ratio_zero_samples_no_root_and_off_starts_nothing() -> None:
    t, mem = tracing(TracingSpec(endpoint="http://c:4318", sample_ratio=0.0))
    assert all(t.start("alertpipe.ingest", root=True) is None for _ in range(100))
    # a client's sampled context still wins over the ratio
    assert t.start("alertpipe.ingest", f"00-{TID}-{SID}-01", root=True) is not None
    assert not Tracing.OFF.enabled and Tracing.OFF.start("x", f"00-{TID}-{SID}-01", root=True) is None


def test_holder_rebuilds_on_a_changed_spec_only_and_retries_an_unreadable_secret() -> None:
    secrets: dict[str, str] = {}

    def secret(ref: SecretKeyRef) -> str:
        if ref.name not in secrets:
            raise ConfigError("secretKeyRef", f"secret {ref.name!r} not found")
        return secrets[ref.name]

    h = TracingHolder("deliverer", secret, exporter=InMemorySpanExporter())
    assert h.update(None, "acme", "p") is Tracing.OFF
    on = h.update(SPEC, "acme", "p")
    assert on.enabled and h.update(SPEC, "acme", "p") is on
    changed = h.update(SPEC.model_copy(update={"sample_ratio": 0.5}), "acme", "p")
    assert changed is not on and changed.enabled
    with_secret = SPEC.model_copy(update={"headers_secret_ref": SecretKeyRef(name="otel", key="h")})
    assert h.update(with_secret, "acme", "p") is Tracing.OFF  # not mounted yet: off, retried later
    assert h.waiting and h.update(with_secret, "acme", "p") is Tracing.OFF  # not due yet
    secrets["otel"] = "authorization=x"
    h._retry_at = time.monotonic() - 1  # the retry time came
    assert h.update(with_secret, "acme", "p").enabled and not h.waiting
    assert h.update(None, "acme", "p") is Tracing.OFF
    h.shutdown()


# --- the stages -----------------------------------------------------------------------------------


class CapturingProducer:
    ready = True
    inflight = 0
    not_ready_reason = ""

    def __init__(self) -> None:
        self.sent: list[tuple[list[tuple[str, bytes]], Any]] = []

    async def send(self, records: list[tuple[str, bytes]], topic: str | None = None,
                   headers: Any = None) -> BatchResult:
        self.sent.append((records, headers))
        return BatchResult(len(records), 0, None, 0.001)


def ingest_config() -> PipelineConfig:
    return PipelineConfig.model_validate({
        "tenant": "acme", "pipeline": "p",
        "kafka": {"bootstrapServers": "k:1", "topics": {"events": "e", "alerts": "a", "late": "l",
                                                          "deadLetter": "d", "audit": "u"}},
        "redis": {"url": "redis://r:1/0", "keyPrefix": "x"},
    })


async def test_ingest_span_per_request_rides_in_every_record_header() -> None:
    t, mem = tracing()
    producer = CapturingProducer()
    events = [{"tenant": "acme", "deviceId": f"d{i}", "seq": i, "ts": 1_767_323_000_000, "type": "x"}
              for i in range(3)]
    cfg = ingest_config()
    answer = await publish(events + [{"bad": 1}], None, cfg, producer, IngestorMetrics(), 1_767_323_000_000,  # type: ignore[arg-type]
                           tracing=t, traceparent=f"00-{TID}-{SID}-01")
    assert answer.status == 202
    (span,) = mem.get_finished_spans()
    trace_id, span_id, parent = hexes(span)
    assert (trace_id, parent) == (TID, SID) and span.name == "alertpipe.ingest"
    assert span.attributes is not None
    a = span.attributes
    assert (a["alertpipe.events.accepted"], a["alertpipe.events.rejected"]) == (3, 1)
    records, headers = producer.sent[0]
    assert len(records) == 3 and headers == [(TRACEPARENT, f"00-{TID}-{span_id}-01".encode())]
    # off: no span, no header
    await publish(events, None, cfg, producer, IngestorMetrics(), 1_767_323_000_000)  # type: ignore[arg-type]
    assert producer.sent[1][1] is None and len(mem.get_finished_spans()) == 1


def test_traced_events_find_the_event_that_raised_an_alert_and_stay_bounded() -> None:
    traced = TracedEvents(limit=2)
    tp = f"00-{TID}-{SID}-01".encode()
    traced.remember(0, "d1", 1000, tp, 5, offset=7)
    alert = {"labels": {"deviceId": "d1"}, "eventTimeMs": 1000, "rule": "r", "id": "i", "status": "firing"}
    event = traced.of(0, alert)
    assert event is not None and event.offset == 7
    assert traced.of(1, alert) is None  # another partition
    assert traced.of(0, {**alert, "labels": {"site": "x"}}) is None  # no device: no single event
    t, mem = tracing(role="evaluator")
    span, headers = TracedEvents.span_headers(t, event, 0, alert, "alerts")
    assert span is not None and headers == [(TRACEPARENT, Tracing.traceparent(span).encode())]
    span.end()
    (done,) = mem.get_finished_spans()
    assert hexes(done)[2] == SID and done.start_time == 5 and done.attributes["messaging.kafka.offset"] == 7  # type: ignore[index]
    traced.remember(0, "d2", 1, tp, 1, offset=8)
    traced.remember(0, "d3", 1, tp, 1, offset=9)
    assert len(traced) == 2 and traced.of(0, alert) is None  # the oldest was forgotten
    traced.forget(0)
    assert len(traced) == 0


def test_evaluate_span_under_the_event_that_raised_the_alert_and_its_context_on_the_record() -> None:
    import threading

    from alertpipe.workers.evaluator.clients import EvaluatorClients
    from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions
    from tests.unit.evaluator.test_evaluator_seams import (
        ALERTS,
        EVENTS,
        Broker,
        MemoryConsumer,
        MemoryProducer,
        MemoryState,
        config,
    )

    broker = Broker()
    cfg = config().model_copy(update={"tracing": SPEC}).with_revision()
    ev = Evaluator(StaticConfigSource(cfg), options=EvaluatorOptions(checkpoint_interval=0.05),
                   clients=EvaluatorClients(MemoryConsumer(broker), MemoryProducer(broker), MemoryState()))
    mem = InMemorySpanExporter()
    ev.tracing = TracingHolder("evaluator", exporter=mem)
    ev.tracing.update(cfg.tracing, cfg.tenant, cfg.pipeline)
    t0 = int(time.time() * 1000) - 60_000

    def send(seq: int, ts: int, value: float, tp: str | None) -> None:
        event = {"tenant": "acme", "deviceId": "d1", "seq": seq, "ts": ts, "type": "cpu", "value": value}
        broker.append(EVENTS, b"d1", orjson.dumps(event), [(TRACEPARENT, tp.encode())] if tp else None)

    send(1, t0, 95, f"00-{TID}-{SID}-01")  # fires; waits for the watermark, moved by the next ones
    send(2, t0 + 3000, 10, None)  # resolves, untraced
    send(3, t0 + 9000, 10, None)
    stop = threading.Event()
    thread = threading.Thread(target=ev.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while len(broker.read(ALERTS)) < 2:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    stop.set()
    thread.join(20)
    firing, resolved = broker.read(ALERTS)
    assert orjson.loads(firing.value() or b"")["status"] == "firing"
    (span,) = mem.get_finished_spans()
    trace_id, span_id, parent = hexes(span)
    assert (span.name, trace_id, parent) == ("alertpipe.evaluate", TID, SID)
    assert span.attributes is not None and span.attributes["alertpipe.rule"] == "hot"
    assert firing.headers() == [(TRACEPARENT, f"00-{TID}-{span_id}-01".encode())]
    assert resolved.headers() is None


def test_a_parked_delivery_keeps_its_trace() -> None:
    tp = f"00-{TID}-{SID}-01".encode()
    parked = Parked("ops", 2, 1, 10, 1, 1, trace=tp)
    assert (TRACEPARENT, tp) in parked.headers()
    assert Parked.from_headers(parked.headers()).trace == tp  # type: ignore[arg-type]
    assert Parked.from_headers(Parked("ops", 2, 1, 10, 1, 1).headers()).trace is None  # type: ignore[arg-type]


class TraceSeeingSender(ScriptedSender):
    async def send(self, alert: Any, channel: Any, key: str, raw: bytes | None = None) -> Any:
        self.seen = [*getattr(self, "seen", []), OUTGOING_TRACEPARENT.get()]
        return await super().send(alert, channel, key, raw)


async def test_deliver_span_under_the_alert_with_an_event_per_attempt() -> None:
    from tests.unit.deliverer.test_deliverer import T, alert, config, hook, until

    mem = InMemorySpanExporter()
    sender = TraceSeeingSender()
    sender.script("ops", [DeliveryError("HTTP 503", retryable=True, status=503)])
    backends = MemoryBackends()
    cfg = config([hook("ops")], tracing={"endpoint": "http://c:4318", "sampleRatio": 0.0})
    d = Deliverer(StaticConfigSource(cfg), lambda ref: "s", DelivererSettings(group_id="g"), sender, backends)
    d.tracing = TracingHolder("deliverer", exporter=mem)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await until(lambda: d.ready.is_set(), "ready")
        traced, untraced = alert(1, ["ops"]), alert(2, ["ops"])
        backends.broker.produce(f"{T}.alerts", traced.id, traced.to_json(),
                                [(TRACEPARENT, f"00-{TID}-{SID}-01".encode())])
        await until(lambda: len(sender.sent) == 2 and len(mem.get_finished_spans()) == 1, "two sends, a span")
        backends.broker.produce(f"{T}.alerts", untraced.id, untraced.to_json())
        await until(lambda: len(sender.sent) == 3, "the untraced alert sent")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    (span,) = mem.get_finished_spans()
    trace_id, span_id, parent = hexes(span)
    assert (span.name, trace_id, parent) == ("alertpipe.deliver", TID, SID)
    assert span.attributes is not None and span.attributes["alertpipe.channel"] == "ops"
    assert span.attributes["alertpipe.delivery.outcome"] == "delivered"
    attempts = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert [(n, a["alertpipe.delivery.attempt"], a["alertpipe.delivery.outcome"],
             a.get("http.response.status_code")) for n, a in attempts] == [
        ("attempt", 1, "failed", 503), ("attempt", 2, "delivered", 200)]
    assert len(mem.get_finished_spans()) == 1  # the untraced alert made none
    # the sender saw the delivery span's context for the traced alert, nothing for the other
    assert sender.seen == [f"00-{TID}-{span_id}-01"] * 2 + [None]
