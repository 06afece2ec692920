"""`alertpipe rules check|test` over examples/rules: the examples users copy can never rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from alertpipe.cli import main

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "rules"
CASES = Path(__file__).resolve().parent / "cases"


def test_every_example_rule_compiles_and_its_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("PASS") >= 6
    assert main(["rules", "check", str(EXAMPLES), "--channels", "pager,slack"]) == 0
    assert main(["rules", "check", str(EXAMPLES), "--tables", "thresholds,maintenance"]) == 0
    capsys.readouterr()
    assert main(["rules", "check", str(EXAMPLES / "cpu-over-own-threshold.yaml"), "--tables", "limits"]) == 1
    assert "table 'maintenance' is not declared in the pipeline's spec.lookups.tables (limits)" \
        in capsys.readouterr().out


def test_regression_cases_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """Rule files from bug reports (window ends where only a pane leaves, empty tumbling windows)."""
    assert main(["rules", "test", str(CASES)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("PASS") == 3


def test_failures_are_reported_with_paths_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: AlertRule\nmetadata: {name: r}\nspec:\n  threshold: {condition: 'avgg(value) > 1'}\n"
        "  channels: [pagr]\n---\n"
        "kind: AlertRule\nmetadata: {name: t}\nspec:\n  threshold: {condition: 'value > 1'}\n"
        "  tests:\n  - name: expects a firing that never comes\n"
        "    events: [{deviceId: d, ts: 1767225600000, value: 0}]\n"
        "    expect: [{status: firing}]\n"
    )
    assert main(["rules", "check", str(bad), "--channels", "pager"]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: r: spec.threshold.condition: unknown function 'avgg' at column 1" in out
    assert (
        f"{bad}: r: spec.channels[0]: channel 'pagr' is not defined by the pipeline (defined: pager)" in out
    )
    assert main(["rules", "test", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "expected 1 alert transition(s), got 0" in out
