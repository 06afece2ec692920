"""``alertpipe generate`` without a target: the rules it prints, and one-line errors."""

from __future__ import annotations

import pytest
import yaml

from alertpipe import cli
from alertpipe.workers.config import RuleSpec
from alertpipe.workers.rules import compile_rule

pytestmark = pytest.mark.unit


def test_print_rules_gives_applicable_alert_rules(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "--tenant", "acme", "--pipeline", "edge", "--silent-devices", "3",
            "--for-ms", "2000", "--sites", "4", "--print-rules", "--rule-label", "alertpipe.io/pipeline=edge",
            "--channel", "pager"]
    assert cli.main(argv) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in docs] == ["gen-hot", "gen-silent", "gen-site-down"]
    assert docs[2]["spec"]["by"] == ["site"] and docs[2]["spec"]["threshold"] == {"condition": "value < 8"}
    for d in docs:
        assert d["kind"] == "AlertRule" and d["metadata"]["labels"] == {"alertpipe.io/pipeline": "edge"}
        assert d["spec"]["channels"] == ["pager"]
        compile_rule(d["metadata"]["name"], RuleSpec.model_validate(d["spec"]))  # valid as printed
    assert docs[0]["spec"]["for"] == "2000ms"


@pytest.mark.parametrize(("extra", "message"), [
    (["--schedule", "warp:9", "--url", "http://127.0.0.1:9/v1/events"], "expected one of"),
    (["--skew-ms", "3000", "--url", "http://127.0.0.1:9/v1/events"], "allowed lateness"),
    (["--sites", "2", "--site-len", "30", "--url", "http://127.0.0.1:9/v1/events"], "site outages need"),
    ([], "give --url"),
])
def test_bad_arguments_exit_2_with_one_line(extra: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["generate", "--tenant", "acme", "--pipeline", "edge", "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err
