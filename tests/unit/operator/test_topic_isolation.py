"""Topic names keep tenants apart: a pipeline names (and so creates, adopts, deletes) topics only
under its own namespace, and no two namespaces can end up with the same topic, even as Kafka folds
'.' into '_'."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertpipe.operator.decisions.topics import PURPOSES, kafka_folded, topic_name_errors, topic_names
from alertpipe.operator.decisions.validation import validate_pipeline
from alertpipe.operator.models import AlertPipelineSpec, KafkaSpec

pytestmark = pytest.mark.unit


def kafka(**topics: Any) -> KafkaSpec:
    return KafkaSpec.model_validate({"bootstrapServers": "k:9092", "topics": topics})


def test_derived_names_are_namespaced() -> None:
    t = topic_names("team-a", "payments", kafka())
    assert t.events == "team-a.payments.events" and t.dead_letter == "team-a.payments.deadLetter"
    assert topic_name_errors("team-a", "payments", kafka()) == []


def test_an_explicit_name_in_another_namespace_is_refused_with_the_field() -> None:
    errors = topic_name_errors("team-a", "p", kafka(alerts={"name": "team-b.p.alerts"}))
    assert errors == [("spec.kafka.topics.alerts.name",
                       "must start with 'team-a.': a pipeline names topics only in its own namespace")]
    # a prefix that merely looks alike is another namespace too
    assert topic_name_errors("team-a", "p", kafka(events={"name": "team-ab.events"}))
    assert topic_name_errors("team-a", "p", kafka(events={"name": "team-a_p.events"}))
    assert topic_name_errors("team-a", "p", kafka(events={"name": "team-a.orders"})) == []


def test_two_purposes_cannot_share_a_topic_nor_one_kafka_folds_together() -> None:
    errors = topic_name_errors("ns", "p", kafka(alerts={"name": "ns.p.events"}))
    same = "is the same topic as spec.kafka.topics.events ('ns.p.events')"
    assert errors == [("spec.kafka.topics.alerts.name", same)]
    assert topic_name_errors("ns", "p", kafka(events={"name": "ns.a_b"}, alerts={"name": "ns.a.b"}))


def test_validate_pipeline_refuses_what_the_webhook_and_reconciler_must_refuse() -> None:
    raw = {"kafka": {"bootstrapServers": "k:9092", "topics": {"events": {"name": "other.x"}}},
           "redis": {"url": "redis://r:6379/0"}}
    spec, errors = validate_pipeline("mine", "p", raw)
    assert spec is None and errors[0][0] == "spec.kafka.topics.events.name"
    spec, errors = validate_pipeline("other", "p", raw)
    assert isinstance(spec, AlertPipelineSpec) and errors == []
    assert validate_pipeline("mine", "a.b", {**raw, "kafka": {"bootstrapServers": "k:9092"}})[1][0][0] == \
        "metadata.name"


# --- property: valid pipelines of different namespaces never share a topic ----------------------

labels = st.text(alphabet="ab-", min_size=1, max_size=3).filter(lambda s: s[0] != "-" and s[-1] != "-")
tails = st.text(alphabet="ab.-_", min_size=0, max_size=6)


@st.composite
def pipelines(draw: st.DrawFn, namespaces: list[str]) -> tuple[str, str, KafkaSpec]:
    ns = draw(st.sampled_from(namespaces))
    name = draw(labels)
    topics: dict[str, Any] = {}
    for purpose in draw(st.lists(st.sampled_from(list(PURPOSES)), unique=True, max_size=3)):
        # explicit names aimed at any namespace's prefix (or none), to provoke collisions
        target = draw(st.sampled_from([*namespaces, ""]))
        sep = draw(st.sampled_from([".", "_", ""]))
        tail = draw(tails)
        candidate = f"{target}{sep}{tail}" or "x"
        topics[purpose] = {"name": candidate}
    return ns, name, kafka(**topics)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), namespaces=st.lists(labels, min_size=2, max_size=3, unique=True))
def test_no_two_namespaces_share_a_topic(data: st.DataObject, namespaces: list[str]) -> None:
    a = data.draw(pipelines(namespaces))
    b = data.draw(pipelines(namespaces))
    valid = [p for p in (a, b) if not topic_name_errors(*p)]
    if len(valid) < 2 or a[0] == b[0]:
        return
    names = [{kafka_folded(n) for n in topic_names(*p).model_dump().values() if n} for p in valid]
    assert not names[0] & names[1], (a, b)
    for (ns, _, _), folded in zip(valid, names, strict=True):
        assert all(n.startswith(f"{ns}_") for n in folded)
