"""A dirty stream (duplicates, reordering, late events, gaps, malformed records) through the real
worker on real Kafka and Redis yields the alerts of the clean stream, and every record is accounted for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import EvaluatorProcess, Pipeline, wait_for
from .streams import RULES, comparable, dirty, expected_alerts, make_stream

pytestmark = pytest.mark.integration


def test_dirty_stream_gives_the_clean_streams_alerts(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    pipeline.rules = RULES
    cfg = pipeline.write()
    stream = make_stream(seed=7)
    records, counts = dirty(stream, seed=7)
    expected = expected_alerts(cfg, stream.clean)
    assert len(expected) > 50  # the stream exercises every rule
    assert {a["rule"] for a in expected} == {"hot", "avg-high", "p90", "quiet"}

    pipeline.produce(records)
    ev = EvaluatorProcess(pipeline, tmp_path).start()
    evaluators.append(ev)
    wait_for(
        lambda: ev.metric("alertpipe_evaluator_events_consumed_total") >= counts["events"],
        "every record consumed",
        120,
    )
    got = pipeline.read("alerts", min_count=len(expected))
    assert comparable(got) == comparable(expected)

    # every input record is accounted for
    assert ev.metric("alertpipe_evaluator_events_evaluated_total") == counts["clean"]
    assert ev.metric("alertpipe_evaluator_events_deduped_total") == counts["duplicates"]
    assert ev.metric("alertpipe_evaluator_events_late_total") == counts["late"]
    assert ev.metric("alertpipe_evaluator_events_malformed_total") == counts["malformed"]
    assert counts["clean"] + counts["duplicates"] + counts["late"] + counts["malformed"] == counts["events"]
    gaps = ev.metric("alertpipe_evaluator_gaps_total")
    missing = ev.metric("alertpipe_evaluator_gap_missing_events_total")
    assert gaps > 0

    late = pipeline.read("late", min_count=counts["late"])
    assert len(late) == counts["late"] and all(r["tenant"] == "acme" for r in late)
    dlq = pipeline.read("deadLetter", min_count=counts["malformed"])
    assert len(dlq) == counts["malformed"]
    reasons = sorted(d["reason"] for d in dlq)
    assert any("not JSON" in r for r in reasons) and any("globex" in r for r in reasons)
    assert all({"partition", "offset", "valueBase64", "topic"} <= set(d) for d in dlq)
    ev.stop()  # the final checkpoint writes the gap records found since the last one

    # the reconciliation report lists exactly the gaps the metrics counted
    out = subprocess.run(
        [sys.executable, "-m", "alertpipe", "gaps", "--config", f"file:{pipeline.path}", "--json"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    gap_records: list[dict[str, Any]] = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert len(gap_records) == gaps and sum(rec["missing"] for rec in gap_records) == missing
    skipped = {(g["deviceId"], g["seq"]) for g in stream.gaps}
    for rec in gap_records:
        seqs = range(rec["firstMissingSeq"], rec["lastMissingSeq"] + 1)
        assert all((rec["deviceId"], q) in skipped for q in seqs)
    assert "Traceback" not in ev.log_text()
