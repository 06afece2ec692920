"""Kopf's diff base is built for AlertPipelines only (alertpipe.operator.diffbase)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from alertpipe.operator.diffbase import LeanDiffBaseStorage

pytestmark = pytest.mark.unit


def body(kind: str) -> kopf.Body:
    raw: Any = {
        "apiVersion": "x/v1",
        "kind": kind,
        "metadata": {"name": "p", "namespace": "n", "managedFields": [{"manager": "m"}]},
        "spec": {"replicas": 1},
        "status": {"availableReplicas": 1},
    }
    return kopf.Body(raw)


def test_other_kinds_get_an_empty_base_and_alertpipelines_kopfs_own() -> None:
    lean = LeanDiffBaseStorage(["AlertPipeline"])
    assert lean.build(body=body("Deployment")) == {}
    assert lean.fetch(body=body("Deployment")) == {}  # equal to build: no diff, no change cause
    ours = lean.build(body=body("AlertPipeline"))
    assert ours == kopf.AnnotationsDiffBaseStorage().build(body=body("AlertPipeline"))
    assert ours["spec"] == {"replicas": 1} and "status" not in ours
    assert lean.fetch(body=body("AlertPipeline")) is None  # nothing stored on it yet
