"""examples/pipelines/*.yaml stay valid: every pipeline parses and every rule compiles against it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alertpipe.operator.decisions.validation import validate_pipeline_spec, validate_rule

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples" / "pipelines").glob("*.yaml")), ids=lambda p: p.name
)
def test_example_is_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    pipelines = [d for d in docs if d["kind"] == "AlertPipeline"]
    assert pipelines
    channels = []
    for p in pipelines:
        spec, errors = validate_pipeline_spec(p["spec"])
        assert spec is not None, errors
        channels += list(spec.channels)
    for rule in (d for d in docs if d["kind"] == "AlertRule"):
        verdict = validate_rule(rule["metadata"]["name"], rule["spec"], channels)
        assert verdict.valid, verdict.message
