"""The chart's Argo CD health scripts, in Argo CD's own test layout: each kind's health_test.yaml
lists testdata/*.yaml inputs (hand-written for every branch, and ``*-captured.yaml`` taken from real
reconciles by tests/integration/operator/test_gitops.py) with the status and message expected.
Run by a real Lua 5.1 (lupa), as Argo CD's gopher-lua runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.argocd_health import CUSTOMIZATIONS, load_yaml, run_health

pytestmark = pytest.mark.unit

KINDS = sorted(p.parent for p in CUSTOMIZATIONS.glob("*/*/health.lua"))


def cases() -> list[Any]:
    out = []
    for folder in KINDS:
        for t in yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]:
            out.append(pytest.param(folder, t, id=f"{folder.name}/{Path(t['inputPath']).stem}"))
    return out


def test_both_kinds_have_scripts() -> None:
    assert [f.name for f in KINDS] == ["AlertPipeline", "AlertRule"]


@pytest.mark.parametrize(("folder", "case"), cases())
def test_health(folder: Path, case: dict[str, Any]) -> None:
    got = run_health((folder / "health.lua").read_text(), load_yaml(folder / case["inputPath"]))
    want = case["healthStatus"]
    assert (got.status, got.message) == (want["status"], want["message"])


@pytest.mark.parametrize("folder", KINDS, ids=lambda f: f.name)
def test_every_testdata_file_is_a_case_and_real_reconciles_are_among_them(folder: Path) -> None:
    listed = {t["inputPath"] for t in yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]}
    present = {f"testdata/{p.name}" for p in (folder / "testdata").glob("*.yaml")}
    assert listed == present
    assert any(p.endswith("-captured.yaml") for p in present)


def test_pipeline_cases_cover_every_status_argo_cd_shows() -> None:
    folder = CUSTOMIZATIONS / "alertpipe.io" / "AlertPipeline"
    tests = yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]
    seen = {t["healthStatus"]["status"] for t in tests}
    assert seen == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_a_script_that_reaches_for_os_fails_as_in_argo_cd() -> None:
    with pytest.raises(Exception, match="os"):
        run_health("local t = os.time()\nreturn {status = 'Healthy', message = ''}", {})


def test_a_status_argo_cd_does_not_know_is_refused() -> None:
    with pytest.raises(AssertionError, match="Fine"):
        run_health("return {status = 'Fine', message = ''}", {})
